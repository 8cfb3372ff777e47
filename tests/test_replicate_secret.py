"""`replicate-webhookd secret`: Replicate's signing secret is shown only as a
fingerprint, and `--check` says which REPLICATE_WEBHOOK_SECRET entry matches it;
no secret material ever reaches stdout or stderr."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

from daemon.receive.signature import decode_secret
from tests.helpers import cli_env, new_secret, run_cli


def fingerprint(whsec: str) -> str:
    key = decode_secret(whsec)
    return f"sha256 {hashlib.sha256(key).hexdigest()[:12]}, {len(key)} bytes"


def assert_no_secret_material(done: Any, *secrets_: str) -> None:
    shown = done.stdout + done.stderr
    for whsec in secrets_:
        key = decode_secret(whsec)
        for material in (
            whsec,
            whsec.removeprefix("whsec_"),
            key.hex(),
            base64.b64encode(key).decode(),
        ):
            assert material not in shown


async def secret_cli(tmp_path: Any, env: dict[str, str], *args: str) -> Any:
    return await asyncio.to_thread(
        run_cli, "secret", *args, "--data-dir", str(tmp_path), env=env
    )


async def test_cli_secret_prints_a_fingerprint_and_no_secret_material(
    fake_replicate, tmp_path
):
    done = await secret_cli(tmp_path, cli_env(**fake_replicate.env()))

    assert done.returncode == 0, done.stderr
    expected = fingerprint(fake_replicate.webhook_key)
    assert done.stdout.strip() == f"Replicate signing secret: {expected}"
    assert_no_secret_material(done, fake_replicate.webhook_key)
    assert fake_replicate.token not in done.stdout + done.stderr


async def test_cli_secret_check_names_the_matching_entry(fake_replicate, tmp_path):
    other = new_secret()
    env = cli_env(
        **fake_replicate.env(),
        REPLICATE_WEBHOOK_SECRET=f"{other} {fake_replicate.webhook_key}",
    )

    done = await secret_cli(tmp_path, env, "--check")

    assert done.returncode == 0, done.stderr
    assert "matches REPLICATE_WEBHOOK_SECRET entry 2 of 2" in done.stdout
    assert_no_secret_material(done, fake_replicate.webhook_key, other)


async def test_cli_secret_check_without_a_match_exits_1_with_fingerprints(
    fake_replicate, tmp_path
):
    other = new_secret()
    env = cli_env(**fake_replicate.env(), REPLICATE_WEBHOOK_SECRET=other)

    done = await secret_cli(tmp_path, env, "--check")

    assert done.returncode == 1
    assert "matches no entry of REPLICATE_WEBHOOK_SECRET (1 set)" in done.stdout
    assert f"entry 1: {fingerprint(other)}" in done.stdout
    assert_no_secret_material(done, fake_replicate.webhook_key, other)


async def test_cli_secret_with_refused_token_exits_1_with_invalid_token(
    fake_replicate, tmp_path
):
    env = cli_env(**{**fake_replicate.env(), "REPLICATE_API_TOKEN": "r8_wrong"})

    done = await secret_cli(tmp_path, env)

    assert done.returncode == 1
    assert "Invalid token" in done.stderr
    assert_no_secret_material(done, fake_replicate.webhook_key)
