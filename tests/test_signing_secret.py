"""Without REPLICATE_WEBHOOK_SECRET, the daemon fetches Replicate's signing secret
with REPLICATE_API_TOKEN, keeps it Fernet-encrypted in SQLite, refetches it when a
delivery fails verification (at most once a minute, however many ask) and refuses
every delivery while it has no secret at all."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from daemon.receive.signature import decode_secret
from daemon.replicate.signing import KEY_FILE_NAME
from tests.fakes.replicate import training
from tests.helpers import WEBHOOK_PATH, cli_env, new_secret, run_cli, signed_headers

SECRET_PATH = "/webhooks/default/secret"
KEY_ENV = "REPLICATE_WEBHOOKD_SECRET_KEY"


def fetching_env(fake: Any, **extra: str) -> dict[str, str]:
    """The fake's token and base, and no REPLICATE_WEBHOOK_SECRET."""
    return {**fake.env(), "REPLICATE_WEBHOOK_SECRET": "", **extra}


def body_of(job_id: str) -> bytes:
    return json.dumps(training(job_id, "processing")).encode()


async def post(client: Any, secret: str, job_id: str = "job0sign0a") -> Any:
    raw = body_of(job_id)
    return await client.post(
        WEBHOOK_PATH, data=raw, headers=signed_headers(secret, raw)
    )


def secret_material(whsec: str) -> list[bytes]:
    key = decode_secret(whsec)
    return [
        whsec.encode(),
        whsec.removeprefix("whsec_").encode(),
        base64.b64encode(key),
        key.hex().encode(),
    ]


def database_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("webhookd.sqlite3*")))


def cached_token(data_dir: Path) -> str:
    conn = sqlite3.connect(data_dir / "webhookd.sqlite3")
    try:
        row = conn.execute(
            "SELECT value FROM daemon_state WHERE key = 'webhook_secret'"
        ).fetchone()
    finally:
        conn.close()
    assert row is not None, "no cached secret"
    return str(row[0])


async def test_secret_fetched_at_start_up_verifies_deliveries(
    daemon_client, fake_replicate
):
    client = await daemon_client(env=fetching_env(fake_replicate))

    answer = await post(client, fake_replicate.webhook_key)

    assert answer.status == 200, await answer.text()
    assert len(fake_replicate.calls(SECRET_PATH)) == 1


async def test_fetched_secret_never_reaches_the_database_file_or_logs(
    daemon_client, fake_replicate, tmp_path, caplog
):
    caplog.set_level("DEBUG")
    client = await daemon_client(env=fetching_env(fake_replicate))
    assert (await post(client, fake_replicate.webhook_key)).status == 200
    await client.close()

    data_dir = tmp_path / "data"
    stored = database_bytes(data_dir)
    fernet = Fernet((data_dir / KEY_FILE_NAME).read_bytes().strip())
    cached = fernet.decrypt(cached_token(data_dir).encode()).decode()
    assert cached == fake_replicate.webhook_key  # cached, but only encrypted
    logged = caplog.text.encode()
    for material in secret_material(fake_replicate.webhook_key):
        assert material not in stored
        assert material not in logged
    assert "signing secret: fetched from Replicate (sha256 " in caplog.text


async def test_generated_key_file_is_mode_0600(daemon_client, fake_replicate, tmp_path):
    await daemon_client(env=fetching_env(fake_replicate))

    key_file = tmp_path / "data" / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    Fernet(key_file.read_bytes().strip())  # a usable Fernet key


async def test_rotated_secret_is_accepted_after_one_refetch(
    daemon_client, fake_replicate
):
    client = await daemon_client(env=fetching_env(fake_replicate))
    fake_replicate.webhook_key = new_secret()

    answer = await post(client, fake_replicate.webhook_key)

    assert answer.status == 200, await answer.text()
    assert len(fake_replicate.calls(SECRET_PATH)) == 2


async def test_slow_refetch_never_holds_a_delivery_past_a_second(
    daemon_client, fake_replicate
):
    client = await daemon_client(env=fetching_env(fake_replicate))
    fake_replicate.webhook_key = new_secret()  # rotated at Replicate
    fake_replicate.secret_delay_s = 2.0

    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await post(client, fake_replicate.webhook_key, "job0slowfetch1")
    assert loop.time() - started < 1.0
    assert answer.status == 503
    assert (await answer.json())["error"]["code"] == "secret_refreshing"
    assert answer.headers["Retry-After"] == "5"

    await asyncio.sleep(2.5)  # the refetch finished in the background
    again = await post(client, fake_replicate.webhook_key, "job0slowfetch1")
    assert again.status == 200, await again.text()
    assert len(fake_replicate.calls(SECRET_PATH)) == 2


async def test_burst_of_forged_deliveries_causes_exactly_one_refetch(
    daemon_client, fake_replicate
):
    client = await daemon_client(env=fetching_env(fake_replicate))
    forger = new_secret()

    answers = await asyncio.gather(
        *(post(client, forger, f"job0forged{n:02d}") for n in range(20))
    )

    assert [a.status for a in answers] == [401] * 20
    assert len(fake_replicate.calls(SECRET_PATH)) == 2  # start-up, then one refetch
    assert (await post(client, forger)).status == 401
    assert len(fake_replicate.calls(SECRET_PATH)) == 2


async def test_failed_start_up_fetch_uses_the_cached_secret(
    daemon_client, make_settings, fake_replicate
):
    settings = make_settings(env=fetching_env(fake_replicate))
    first = await daemon_client(settings)
    await first.close()
    fake_replicate.fail("webhook_secret", 403)

    client = await daemon_client(settings)
    answer = await post(client, fake_replicate.webhook_key)

    assert answer.status == 200, await answer.text()
    assert len(fake_replicate.calls(SECRET_PATH)) == 2


async def test_no_secret_fetched_or_cached_refuses_deliveries_with_503(
    daemon_client, fake_replicate
):
    fake_replicate.fail("webhook_secret", 403)
    client = await daemon_client(env=fetching_env(fake_replicate))

    answer = await post(client, fake_replicate.webhook_key)

    assert answer.status == 503
    assert (await answer.json())["error"]["code"] == "secret_unavailable"
    assert answer.headers["Retry-After"].isdigit()
    assert len(fake_replicate.calls(SECRET_PATH)) == 1  # no refetch per request


async def test_configured_secret_wins_and_is_never_fetched(
    daemon_client, fake_replicate, secret
):
    env = {**fake_replicate.env(), "REPLICATE_WEBHOOK_SECRET": secret}
    client = await daemon_client(env=env)

    assert (await post(client, secret)).status == 200
    assert (await post(client, fake_replicate.webhook_key)).status == 401
    assert fake_replicate.calls(SECRET_PATH) == []


async def test_cache_encrypted_with_the_env_key_needs_no_key_file(
    daemon_client, fake_replicate, tmp_path
):
    key = Fernet.generate_key().decode()
    client = await daemon_client(env=fetching_env(fake_replicate, **{KEY_ENV: key}))

    assert (await post(client, fake_replicate.webhook_key)).status == 200
    assert not (tmp_path / "data" / KEY_FILE_NAME).exists()


def test_serve_without_secret_or_token_exits_2_naming_both(tmp_path):
    done = run_cli(
        "serve", "--data-dir", str(tmp_path / "data"), "--port", "0", env=cli_env()
    )

    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert "REPLICATE_WEBHOOK_SECRET=whsec_" in line
    assert "REPLICATE_API_TOKEN" in line


def test_serve_with_invalid_fernet_key_exits_2_without_its_value(tmp_path):
    value = "not-a-fernet-key-" + os.urandom(4).hex()
    env = cli_env(REPLICATE_WEBHOOK_SECRET=new_secret(), **{KEY_ENV: value})

    done = run_cli(
        "serve", "--data-dir", str(tmp_path / "data"), "--port", "0", env=env
    )

    assert done.returncode == 2
    assert KEY_ENV in done.stderr
    assert value not in done.stderr


async def test_serve_refuses_a_key_file_readable_by_others(fake_replicate, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    key_file = data_dir / KEY_FILE_NAME
    key_file.write_bytes(Fernet.generate_key())
    key_file.chmod(0o644)
    env = cli_env(**fake_replicate.env())

    done = await asyncio.to_thread(
        run_cli, "serve", "--data-dir", str(data_dir), "--port", "0", env=env
    )

    assert done.returncode == 2, done.stderr
    assert "readable by group or others" in done.stderr
    assert fake_replicate.calls(SECRET_PATH) == []
