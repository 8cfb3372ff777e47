"""Job cost, calendar cost periods and the billing report, on a real database."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from daemon.cost import job_cost, period_bounds, period_spend
from daemon.read.queries import open_reader
from tests.helpers import WEBHOOK_PATH, cli_env, run_cli, signed_headers
from tests.test_config import refused_line, serve

L40S_PER_S = 3.50 / 3600
A100_PER_S = 5.00 / 3600
LA = ZoneInfo("America/Los_Angeles")
TOKYO = ZoneInfo("Asia/Tokyo")


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def utc_text(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


async def deliver(client: Any, secret: str, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    answer = await client.post(
        WEBHOOK_PATH, data=raw, headers=signed_headers(secret, raw)
    )
    assert answer.status == 200, await answer.text()


def finished(job_id: str, started: float, predict_s: float, **extra: Any) -> dict:
    return {
        "id": job_id,
        "status": "succeeded",
        "created_at": utc_text(started - 60),
        "started_at": utc_text(started),
        "completed_at": utc_text(started + predict_s),
        "metrics": {"predict_time": predict_s},
        **extra,
    }


def test_finished_job_costs_predict_time_at_its_hardware_price(make_settings):
    cost = make_settings().cost
    a100 = {
        "status": "succeeded",
        "predict_time_s": 1800,
        "input": {"hardware": "A100 (80GB)"},
    }
    l40s = {"status": "failed", "predict_time_s": 3600, "input": {"hardware": "L40S"}}
    assert job_cost(a100, cost, now=0) == pytest.approx(2.50)
    assert job_cost(l40s, cost, now=0) == pytest.approx(3.50)


def test_unknown_or_missing_hardware_is_priced_as_the_default_hardware(
    make_settings,
):
    unknown = {
        "status": "succeeded",
        "predict_time_s": 3600,
        "input": {"hardware": "H9"},
    }
    missing = {"status": "succeeded", "predict_time_s": 3600, "input": None}
    assert job_cost(unknown, make_settings().cost, now=0) == pytest.approx(3.50)
    assert job_cost(missing, make_settings().cost, now=0) == pytest.approx(3.50)
    a100 = make_settings(toml='[cost]\ndefault_hardware = "A100 (80GB)"\n').cost
    assert job_cost(unknown, a100, now=0) == pytest.approx(5.00)


def test_configured_prices_add_to_and_override_the_default_table(make_settings):
    cost = make_settings(
        toml='[cost.prices_per_hour]\n"H100" = 6.0\n"L40S" = 4.0\n'
    ).cost
    h100 = {
        "status": "succeeded",
        "predict_time_s": 3600,
        "input": {"hardware": "H100"},
    }
    assert job_cost(h100, cost, now=0) == pytest.approx(6.0)
    assert cost.price_per_hour("L40S") == 4.0
    assert cost.price_per_hour("A100 (80GB)") == 5.0


def test_finished_job_without_predict_time_costs_nothing(make_settings):
    job = {"status": "canceled", "predict_time_s": None, "started_at": "2026-01-01"}
    assert job_cost(job, make_settings().cost, now=at("2026-01-02T00:00Z")) == 0.0


def test_running_job_counts_the_time_elapsed_since_it_started(make_settings):
    cost = make_settings().cost
    started = "2026-01-01T00:00:00.123456789Z"
    running = {"status": "processing", "started_at": started, "input": {}}
    now = at("2026-01-01T00:15:00.123456Z")
    assert job_cost(running, cost, now) == pytest.approx(900 * L40S_PER_S)
    later = at("2026-01-01T01:00:00.123456Z")
    assert job_cost(running, cost, later) == pytest.approx(3.50)
    queued = {"status": "starting", "started_at": None, "input": {}}
    assert job_cost(queued, cost, now) == 0.0


@pytest.mark.parametrize(
    ("period", "zone", "now", "start", "end"),
    [
        # 23:30 in Los Angeles is already the next day in UTC.
        ("daily", LA, "2026-01-15T23:30-08:00", "2026-01-15", "2026-01-16"),
        ("daily", TOKYO, "2026-01-16T00:00+09:00", "2026-01-16", "2026-01-17"),
        # Monday 00:30 in Tokyo is still Sunday in UTC.
        ("weekly", TOKYO, "2026-01-05T00:30+09:00", "2026-01-05", "2026-01-12"),
        ("weekly", TOKYO, "2026-01-04T23:59+09:00", "2025-12-29", "2026-01-05"),
        ("monthly", LA, "2026-01-31T23:30-08:00", "2026-01-01", "2026-02-01"),
        ("monthly", TOKYO, "2026-02-01T00:00+09:00", "2026-02-01", "2026-03-01"),
        ("monthly", LA, "2024-02-29T12:00-08:00", "2024-02-01", "2024-03-01"),
    ],
)
def test_period_is_the_calendar_day_week_or_month_in_the_configured_zone(
    period, zone, now, start, end
):
    first, following = period_bounds(period, at(now), zone)
    assert first == datetime.fromisoformat(start).replace(tzinfo=zone)
    assert following == datetime.fromisoformat(end).replace(tzinfo=zone)
    assert first.timestamp() <= at(now) < following.timestamp()


def test_week_across_a_daylight_saving_change_is_167_hours():
    first, following = period_bounds("weekly", at("2026-03-10T12:00-07:00"), LA)
    assert first == datetime(2026, 3, 9, tzinfo=LA)
    first, following = period_bounds("weekly", at("2026-03-08T12:00-07:00"), LA)
    assert first == datetime(2026, 3, 2, tzinfo=LA)
    assert following.timestamp() - first.timestamp() == 167 * 3600


# (zone, period, now, [(job start in UTC, counted in the period)])
BOUNDARY_CASES = [
    (
        "America/Los_Angeles",
        "daily",
        "2026-01-15T12:00-08:00",
        [
            ("2026-01-15T07:59:59Z", False),  # 23:59:59 the day before, LA
            ("2026-01-15T08:00:00Z", True),  # LA midnight
            ("2026-01-16T07:59:59Z", True),
            ("2026-01-16T08:00:00Z", False),  # the next LA midnight
        ],
    ),
    (
        "Asia/Tokyo",
        "weekly",
        "2026-01-07T12:00+09:00",
        [
            ("2026-01-04T14:59:59Z", False),  # Sunday 23:59:59 in Tokyo
            ("2026-01-04T15:00:00Z", True),  # Monday 00:00 in Tokyo
            ("2026-01-11T14:59:59Z", True),
            ("2026-01-11T15:00:00Z", False),
        ],
    ),
    (
        "America/Los_Angeles",
        "monthly",
        "2026-01-20T12:00-08:00",
        [
            ("2026-01-01T07:59:59Z", False),  # New Year's Eve in LA
            ("2026-01-01T08:00:00Z", True),
            ("2026-02-01T07:59:59Z", True),
            ("2026-02-01T08:00:00Z", False),
        ],
    ),
    (
        "Asia/Tokyo",
        "monthly",
        "2026-01-20T12:00+09:00",
        [
            ("2025-12-31T14:59:59Z", False),
            ("2025-12-31T15:00:00Z", True),  # 1 January 00:00 in Tokyo
            ("2026-01-31T14:59:59Z", True),
            ("2026-01-31T15:00:00Z", False),
        ],
    ),
]


@pytest.mark.parametrize(("zone", "period", "now", "jobs"), BOUNDARY_CASES)
async def test_jobs_count_in_the_period_holding_their_start_in_the_zone(
    daemon_client, make_settings, secret, zone, period, now, jobs
):
    toml = f'[cost]\ntime_zone = "{zone}"\nlimit_period = "{period}"\n'
    settings = make_settings(toml=toml)
    client = await daemon_client(settings)
    expected = 0.0
    for number, (started, counted) in enumerate(jobs, start=1):
        predict_s = 60.0 * number  # a distinct cost per job
        await deliver(client, secret, finished(f"job{number}", at(started), predict_s))
        expected += predict_s * L40S_PER_S if counted else 0.0
    reader = await open_reader(settings.database_path)
    try:
        spend = await period_spend(reader, settings.cost, at(now))
    finally:
        await reader.close()
    assert spend.total == pytest.approx(expected, abs=1e-4)
    assert sum(spend.by_day.values()) == pytest.approx(expected, abs=1e-4)
    local = ZoneInfo(zone)
    for started, counted in jobs:
        day = datetime.fromtimestamp(at(started), local).date()
        assert (day in spend.by_day) == counted


def current_instants(zone: str, period: str) -> tuple[float, float, float]:
    """The period holding real now, and an instant inside it before now."""
    now = time.time()
    first, _ = period_bounds(period, now, ZoneInfo(zone))
    return first.timestamp(), first.timestamp() + (now - first.timestamp()) / 2, now


async def billed_client(daemon_client, make_settings, secret, toml: str) -> Any:
    """A daemon holding three finished jobs: L40S 600 s and A100 720 s inside the
    current Tokyo month, and one started a second before the month began."""
    client = await daemon_client(make_settings(toml=toml))
    start, inside, _ = current_instants("Asia/Tokyo", "monthly")
    hardware = {"input": {"hardware": "A100 (80GB)"}}
    await deliver(client, secret, finished("in-l40s", inside, 600))
    await deliver(client, secret, finished("in-a100", inside, 720, **hardware))
    await deliver(client, secret, finished("before", start - 1, 3600))
    return client


SPENT = 600 * L40S_PER_S + 720 * A100_PER_S  # 0.5833 + 1.0


@pytest.mark.parametrize(
    ("amount", "action", "over", "remaining"),
    [
        (1.0, "block", True, 0.0),
        (1.0, "warn", True, 0.0),
        (2.0, "warn", False, 2.0 - SPENT),
        (2.0, "block", False, 2.0 - SPENT),
    ],
)
async def test_billing_reports_spend_against_the_limit_without_an_api_token(
    daemon_client, make_settings, secret, amount, action, over, remaining
):
    toml = (
        f'[cost]\ntime_zone = "Asia/Tokyo"\nlimit_period = "monthly"\n'
        f'limit_amount = {amount}\nlimit_action = "{action}"\n'
    )
    client = await billed_client(daemon_client, make_settings, secret, toml)
    answer = await client.get("/api/cloud/replicate/billing")
    assert answer.status == 200, await answer.text()
    report = await answer.json()
    assert report["balance"] is None
    assert report["balance_reason"] == "Replicate has no public balance API"
    start, _, _ = current_instants("Asia/Tokyo", "monthly")
    assert report["period"]["name"] == "monthly"
    assert report["period"]["time_zone"] == "Asia/Tokyo"
    assert datetime.fromisoformat(report["period"]["start"]).timestamp() == start
    assert report["period"]["start"].endswith("+09:00")
    assert report["spend"] == pytest.approx(SPENT, abs=1e-4)
    assert report["limit"] == {"amount": amount, "action": action}
    assert report["over_limit"] is over
    assert report["remaining"] == pytest.approx(remaining, abs=1e-4)
    days = report["by_day"]
    assert days[0]["date"] == datetime.fromtimestamp(start, TOKYO).date().isoformat()
    assert sum(day["spend"] for day in days) == pytest.approx(SPENT, abs=1e-3)
    assert report["last_insufficient_credit"] is None


async def test_billing_without_a_limit_reports_no_limit_and_never_over(
    daemon_client, make_settings, secret
):
    toml = '[cost]\ntime_zone = "Asia/Tokyo"\n'
    client = await billed_client(daemon_client, make_settings, secret, toml)
    report = await (await client.get("/api/cloud/replicate/billing")).json()
    assert report["spend"] == pytest.approx(SPENT, abs=1e-4)
    assert report["limit"] is None
    assert report["remaining"] is None
    assert report["over_limit"] is False
    _, following = period_bounds("monthly", time.time(), TOKYO)
    assert datetime.fromisoformat(report["period"]["end"]) == following


async def test_billing_reports_the_last_402_seen_by_the_client(
    daemon_client, fake_replicate
):
    client = await daemon_client(env=fake_replicate.env())
    fake_replicate.fail("account", 402)
    assert (await client.get("/api/cloud/replicate/validate")).status == 502
    report = await (await client.get("/api/cloud/replicate/billing")).json()
    notice = report["last_insufficient_credit"]
    assert notice["detail"] == "fake: no credit left"
    seen = datetime.fromisoformat(notice["at"]).timestamp()
    assert abs(seen - time.time()) < 60


async def test_jobs_list_shows_each_cost_and_the_period_spend(
    daemon_client, make_settings, secret
):
    toml = '[cost]\ntime_zone = "Asia/Tokyo"\n'
    client = await billed_client(daemon_client, make_settings, secret, toml)
    page = await (await client.get("/api/jobs")).json()
    costs = {job["id"]: job["cost"] for job in page["jobs"]}
    assert costs["in-l40s"] == pytest.approx(600 * L40S_PER_S, abs=1e-4)
    assert costs["in-a100"] == pytest.approx(720 * A100_PER_S, abs=1e-4)
    assert costs["before"] == pytest.approx(3.50, abs=1e-4)  # outside the period
    assert page["period_spend"] == pytest.approx(SPENT, abs=1e-4)


async def test_running_job_in_the_billing_grows_with_elapsed_time(
    daemon_client, make_settings, secret
):
    client = await daemon_client(make_settings(toml='[cost]\nlimit_period = "daily"\n'))
    _, started, _ = current_instants("UTC", "daily")
    body = {"id": "running", "status": "processing", "started_at": utc_text(started)}
    await deliver(client, secret, body)
    before = (time.time() - started) * L40S_PER_S
    report = await (await client.get("/api/cloud/replicate/billing")).json()
    after = (time.time() - started) * L40S_PER_S
    assert before > 0
    assert before - 1e-4 <= report["spend"] <= after + 1e-4


async def test_billing_command_prints_the_report_as_json_and_as_text(
    daemon_client, make_settings, secret, tmp_path
):
    toml = '[cost]\ntime_zone = "Asia/Tokyo"\nlimit_amount = 1.0\n'
    await billed_client(daemon_client, make_settings, secret, toml)
    config = tmp_path / "config.toml"  # written by make_settings
    base = ("billing", "--config", str(config), "--data-dir", str(tmp_path / "data"))
    result = run_cli(*base, "--json", env=cli_env())
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["spend"] == pytest.approx(SPENT, abs=1e-4)
    assert report["over_limit"] is True
    assert report["last_insufficient_credit"] is None
    text = run_cli(*base, env=cli_env())
    assert text.returncode == 0, text.stderr
    assert f"spend: ${SPENT:.2f}" in text.stdout
    assert "limit: $1.00 (warn); remaining $0.00; OVER LIMIT" in text.stdout


def test_billing_command_without_a_database_fails_with_exit_1(tmp_path):
    result = run_cli("billing", "--data-dir", str(tmp_path / "none"), env=cli_env())
    assert result.returncode == 1
    assert "no database" in result.stderr


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[cost]\ntime_zone = "Mars/Olympus"\n', "cost.time_zone"),
        ('[cost]\ntime_zone = "../etc/passwd"\n', "cost.time_zone"),
        ('[cost.prices_per_hour]\n"L40S" = -1.0\n', "cost.prices_per_hour.L40S"),
        ('[cost.prices_per_hour]\n"H100" = "cheap"\n', "cost.prices_per_hour.H100"),
        ('[cost.prices_per_hour]\n" " = 1.0\n', "cost.prices_per_hour"),
        ("[cost]\nprices_per_hour = 3\n", "cost.prices_per_hour"),
        ('[cost]\nlimit_period = "yearly"\n', "cost.limit_period"),
        ('[cost]\nlimit_action = "stop"\n', "cost.limit_action"),
        ("[cost]\nlimit_amount = -5\n", "cost.limit_amount"),
        ('[cost]\ndefault_hardware = "H100"\n', "cost.default_hardware"),
    ],
)
def test_invalid_cost_setting_stops_serve_with_exit_2_naming_the_key(
    tmp_path, toml, key
):
    line = refused_line(serve(tmp_path, toml=toml))
    assert key in line


def test_cost_defaults_are_utc_monthly_warn_with_no_limit(make_settings):
    cost = make_settings().cost
    assert cost.time_zone == "UTC"
    assert cost.limit_amount == 0
    assert (cost.limit_period, cost.limit_action) == ("monthly", "warn")
    assert cost.default_hardware == "L40S"
    assert dict(cost.prices_per_hour) == {"L40S": 3.50, "A100 (80GB)": 5.00}


def test_period_bounds_refuses_an_unknown_period():
    with pytest.raises(ValueError, match="yearly"):
        period_bounds("yearly", 0, ZoneInfo("UTC"))
