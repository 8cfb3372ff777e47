"""The cost limit at submit time: block refuses with 402 naming spend, limit and
period; warn lets the training through with a warning; spend counts by calendar
period in the configured time zone, so a job started just before local midnight
belongs to the day before."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from daemon.cost import period_bounds
from tests.helpers import WEBHOOK_PATH, payload_json, signed_headers
from tests.test_submit import FAST, MODEL, SUBMIT, request_body

ZONE = "Pacific/Kiritimati"  # UTC+14: its midnight is far from UTC's


def today_starts() -> datetime:
    start, _ = period_bounds("daily", time.time(), ZoneInfo(ZONE))
    return start


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def record_finished_job(
    client: Any, secret: str, job_id: str, after_midnight_s: float, hours: float
) -> None:
    """A succeeded job of `hours` on L40S, started that long after local midnight."""
    started = today_starts() + timedelta(seconds=after_midnight_s)
    body = payload_json("training_succeeded.json")
    body.update(
        id=job_id,
        created_at=iso(started - timedelta(minutes=1)),
        started_at=iso(started),
        metrics={"predict_time": hours * 3600},
        output=None,
    )
    raw = json.dumps(body).encode()
    answer = await client.post(
        WEBHOOK_PATH, data=raw, headers=signed_headers(secret, raw)
    )
    assert answer.status == 200, await answer.text()


async def start(daemon_client, make_settings, fake, secret, action: str) -> Any:
    fake.add_versions(MODEL, 1)
    settings = make_settings(
        env={**fake.env(), "REPLICATE_WEBHOOK_SECRET": secret},
        cost__limit_amount=10,
        cost__limit_period="daily",
        cost__limit_action=action,
        cost__time_zone=ZONE,
        server__public_url="https://hooks.example.test",  # never called here
        **FAST,
    )
    return await daemon_client(settings)


async def test_block_counts_only_jobs_started_inside_the_local_day(
    daemon_client, make_settings, fake_replicate, secret
):
    client = await start(daemon_client, make_settings, fake_replicate, secret, "block")
    midnight = today_starts()
    # $35 the second before local midnight: yesterday's spend, not today's.
    await record_finished_job(client, secret, "costyesterday000000000000a", -1, 10)
    answer = await client.post(SUBMIT, json=request_body())
    assert answer.status == 201, await answer.text()
    assert (await answer.json())["warnings"] == []

    await record_finished_job(client, secret, "costtoday00000000000000000a", 1, 10)
    answer = await client.post(SUBMIT, json=request_body())
    assert answer.status == 402
    error = (await answer.json())["error"]
    assert error["code"] == "cost_limit_reached"
    assert error["message"] == (
        f"cost limit: $35.00 spent of the $10.00 daily limit "
        f"(period from {midnight.date()})"
    )
    assert len(fake_replicate.created) == 1  # the refused one never reached Replicate


async def test_warn_lets_the_submit_through_with_a_warning_in_body_and_log(
    daemon_client, make_settings, fake_replicate, secret, caplog
):
    client = await start(daemon_client, make_settings, fake_replicate, secret, "warn")
    await record_finished_job(client, secret, "costwarn0000000000000000a", 1, 10)
    answer = await client.post(SUBMIT, json=request_body())
    assert answer.status == 201
    (warning,) = (await answer.json())["warnings"]
    assert warning.startswith("over the cost limit: $35.00 spent of the $10.00 daily")
    assert "submit over the cost limit" in caplog.text
    assert len(fake_replicate.created) == 1


async def test_spend_near_the_limit_warns_even_when_the_action_is_block(
    daemon_client, make_settings, fake_replicate, secret
):
    client = await start(daemon_client, make_settings, fake_replicate, secret, "block")
    # 2.5 h of L40S = $8.75: 87.5 % of the $10 limit.
    await record_finished_job(client, secret, "costnear0000000000000000a", 1, 2.5)
    answer = await client.post(SUBMIT, json=request_body())
    assert answer.status == 201
    (warning,) = (await answer.json())["warnings"]
    assert warning.startswith("near the cost limit: $8.75 spent")
