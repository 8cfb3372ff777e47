"""The Replicate client against the fake API on loopback: the token rules, retries
by error type, paging, the endpoints through the daemon and the CLI commands."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from daemon.replicate.client import ReplicateClient
from daemon.replicate.errors import InvalidToken, ReplicateError, TokenMissing
from daemon.settings import ConfigError, Settings
from tests.fakes.replicate import training
from tests.helpers import cli_env, run_cli

MODEL = "simpletuner/advanced-trainer"


@pytest.fixture
async def make_client(
    make_settings: Callable[..., Settings], fake_replicate: Any
) -> AsyncIterator[Callable[..., ReplicateClient]]:
    made: list[ReplicateClient] = []

    def build(token: str | None = None, **kwargs: Any) -> ReplicateClient:
        env = fake_replicate.env()
        if token is not None:
            env["REPLICATE_API_TOKEN"] = token
        kwargs.setdefault("backoff_base_s", 0.01)
        client = ReplicateClient(make_settings(env=env).replicate, **kwargs)
        made.append(client)
        return client

    yield build
    for client in made:
        await client.close()


async def test_missing_token_is_refused_before_any_request(
    make_settings, fake_replicate
):
    settings = make_settings(env={"REPLICATE_API_BASE": fake_replicate.url})
    client = ReplicateClient(settings.replicate)
    with pytest.raises(TokenMissing) as caught:
        await client.account()
    await client.close()
    assert str(caught.value) == "REPLICATE_API_TOKEN not set"
    assert fake_replicate.requests == []


async def test_refused_token_with_surrounding_whitespace_says_so(make_client):
    client = make_client(token=" r8_wrongToken\n")
    with pytest.raises(InvalidToken) as caught:
        await client.account()
    message = str(caught.value)
    assert message.startswith("Invalid token")
    assert "white space or a newline" in message
    assert "r8_" not in message.partition("newline")[2]  # no prefix hint


async def test_refused_token_without_r8_prefix_hints_that_older_tokens_may_lack_it(
    make_client,
):
    client = make_client(token="abc0123456789")
    with pytest.raises(InvalidToken) as caught:
        await client.account()
    message = str(caught.value)
    assert message.startswith("Invalid token: ")
    assert "r8_" in message
    assert "older tokens" in message
    assert "white space" not in message


async def test_token_is_sent_stripped_as_a_bearer_token(make_client, fake_replicate):
    client = make_client(token=f"\n{fake_replicate.token} \n")
    account = await client.account()
    assert account["username"] == "acme"
    assert fake_replicate.requests[0].authorization == f"Bearer {fake_replicate.token}"


async def test_throttled_get_waits_for_retry_after_then_succeeds(
    make_client, fake_replicate
):
    fake_replicate.fail("account", 429, retry_after="1")
    client = make_client()
    started = time.monotonic()
    account = await client.account()
    assert time.monotonic() - started >= 0.9
    assert account["type"] == "organization"
    assert len(fake_replicate.calls("/account")) == 2


async def test_get_is_retried_after_a_server_error(make_client, fake_replicate):
    fake_replicate.trainings["t1"] = training("t1", "processing")
    fake_replicate.fail("trainings", 503, times=2)
    body = await make_client().get_training("t1")
    assert body["status"] == "processing"
    assert len(fake_replicate.calls("/trainings/t1")) == 3


async def test_post_is_not_retried_after_a_server_error(make_client, fake_replicate):
    fake_replicate.trainings["t1"] = training("t1", "processing")
    fake_replicate.fail("trainings_cancel", 500)
    with pytest.raises(ReplicateError) as caught:
        await make_client().cancel("t1")
    assert caught.value.status == 500
    assert str(caught.value) == "fake: status 500"
    assert len(fake_replicate.calls("/cancel")) == 1
    assert fake_replicate.trainings["t1"]["status"] == "processing"


async def test_post_is_retried_after_429(make_client, fake_replicate):
    fake_replicate.trainings["t1"] = training("t1", "starting")
    fake_replicate.fail("trainings_cancel", 429, retry_after="0")
    body = await make_client().cancel("t1")
    assert body["status"] == "canceled"
    assert len(fake_replicate.calls("/cancel")) == 2


async def test_retries_stop_at_the_attempt_limit(make_client, fake_replicate):
    fake_replicate.fail("account", 503, times=10)
    with pytest.raises(ReplicateError) as caught:
        await make_client(max_attempts=3).account()
    assert caught.value.status == 503
    assert len(fake_replicate.calls("/account")) == 3


async def test_problem_json_detail_is_the_error_message(make_client):
    with pytest.raises(ReplicateError) as caught:
        await make_client().get_training("unknown")
    assert caught.value.status == 404
    assert str(caught.value) == "fake: not found"


async def test_insufficient_credit_is_remembered_with_its_detail(
    make_client, fake_replicate
):
    client = make_client()
    assert client.last_insufficient_credit is None
    fake_replicate.fail("account", 402)
    before = time.time()
    with pytest.raises(ReplicateError) as caught:
        await client.account()
    assert caught.value.status == 402
    notice = client.last_insufficient_credit
    assert notice is not None
    assert notice.detail == "fake: no credit left"
    assert notice.at >= before
    assert len(fake_replicate.calls("/account")) == 1  # 402 is not retried


async def test_versions_follow_every_next_page_newest_first(
    make_client, fake_replicate
):
    made = fake_replicate.add_versions(MODEL, 5)
    found = await make_client().model_versions(MODEL)
    assert [v["id"] for v in found] == [v["id"] for v in made]
    assert found[0]["created_at"] > found[-1]["created_at"]
    pages = fake_replicate.calls(f"/models/{MODEL}/versions")
    assert [p.query for p in pages] == ["", "cursor=2", "cursor=4"]


async def test_next_link_outside_the_api_base_is_not_followed(
    make_client, fake_replicate
):
    fake_replicate.add_versions(MODEL, 3)
    real_url = fake_replicate.url
    fake_replicate.url = real_url.replace("127.0.0.1", "localhost")
    client = make_client()
    client.base = real_url
    with pytest.raises(ReplicateError, match="outside the API base"):
        await client.model_versions(MODEL)
    assert len(fake_replicate.requests) == 1


async def test_default_webhook_secret_is_returned_masked(make_client, fake_replicate):
    secret = await make_client().default_webhook_secret()
    assert secret.reveal() == fake_replicate.webhook_key
    assert fake_replicate.webhook_key not in repr(secret)
    assert fake_replicate.webhook_key not in f"{secret}"


async def test_token_never_appears_in_reprs_errors_or_logs(
    make_client, fake_replicate, caplog
):
    caplog.set_level("DEBUG")
    client = make_client()
    fake_replicate.fail("account", 429, retry_after="0")
    await client.account()
    fake_replicate.fail("account", 402)
    with pytest.raises(ReplicateError) as caught:
        await client.account()
    bad = make_client(token="r8_" + "f" * 37)
    with pytest.raises(InvalidToken) as refused:
        await bad.account()
    texts = [repr(client), str(caught.value), str(refused.value), caplog.text]
    assert "429" in caplog.text  # the retry was logged
    for text in texts:
        assert fake_replicate.token not in text
        assert "f" * 37 not in text


# The endpoints, through the production app.


async def test_validate_endpoint_returns_the_account(daemon_client, fake_replicate):
    client = await daemon_client(env=fake_replicate.env())
    answer = await client.get("/api/cloud/replicate/validate")
    assert answer.status == 200
    assert await answer.json() == {
        "type": "organization",
        "username": "acme",
        "name": "Acme Corp, Inc.",
    }


async def test_validate_endpoint_without_token_answers_503_token_not_set(
    daemon_client, fake_replicate
):
    client = await daemon_client(env={"REPLICATE_API_BASE": fake_replicate.url})
    answer = await client.get("/api/cloud/replicate/validate")
    assert answer.status == 503
    error = (await answer.json())["error"]
    assert error == {
        "code": "replicate_token_missing",
        "message": "REPLICATE_API_TOKEN not set",
    }
    assert fake_replicate.requests == []


async def test_validate_endpoint_with_refused_token_answers_401_with_hints(
    daemon_client, fake_replicate
):
    env = {**fake_replicate.env(), "REPLICATE_API_TOKEN": "oldtoken\n"}
    client = await daemon_client(env=env)
    answer = await client.get("/api/cloud/replicate/validate")
    assert answer.status == 401
    error = (await answer.json())["error"]
    assert error["code"] == "replicate_invalid_token"
    assert error["message"].startswith("Invalid token: ")
    assert "newline" in error["message"]
    assert "r8_" in error["message"]
    assert "oldtoken" not in error["message"]


async def test_validate_endpoint_on_insufficient_credit_answers_502_with_detail(
    daemon_client, fake_replicate
):
    client = await daemon_client(env=fake_replicate.env())
    fake_replicate.fail("account", 402)
    answer = await client.get("/api/cloud/replicate/validate")
    assert answer.status == 502
    error = (await answer.json())["error"]
    assert error["code"] == "replicate_insufficient_credit"
    assert error["message"] == "fake: no credit left"


async def test_versions_endpoint_lists_every_page_of_the_trainer_model(
    daemon_client, fake_replicate
):
    made = fake_replicate.add_versions(MODEL, 5)
    client = await daemon_client(env=fake_replicate.env())
    answer = await client.get("/api/cloud/replicate/versions")
    assert answer.status == 200
    body = await answer.json()
    assert body["model"] == MODEL
    assert [v["id"] for v in body["versions"]] == [v["id"] for v in made]


async def test_replicate_endpoints_need_the_admin_token_when_one_is_set(
    daemon_client, fake_replicate
):
    env = {**fake_replicate.env(), "REPLICATE_WEBHOOKD_ADMIN_TOKEN": "a" * 32}
    client = await daemon_client(env=env)
    answer = await client.get("/api/cloud/replicate/validate")
    assert answer.status == 401
    assert (await answer.json())["error"]["code"] == "unauthorized"
    assert fake_replicate.requests == []


# The CLI, as a real process against the fake.


async def test_cli_validate_prints_the_account_and_never_the_token(
    fake_replicate, tmp_path
):
    env = cli_env(**fake_replicate.env())
    done = await _cli(env, "validate", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "token valid: acme (organization), Acme Corp, Inc."
    assert fake_replicate.token not in done.stdout + done.stderr


async def test_cli_validate_without_token_exits_1_with_the_message(
    fake_replicate, tmp_path
):
    env = cli_env(REPLICATE_API_BASE=fake_replicate.url)
    done = await _cli(env, "validate", "--data-dir", str(tmp_path))
    assert done.returncode == 1
    assert "REPLICATE_API_TOKEN not set" in done.stderr


async def test_cli_versions_lists_every_page(fake_replicate, tmp_path):
    made = fake_replicate.add_versions(MODEL, 3)
    env = cli_env(**fake_replicate.env())
    done = await _cli(env, "versions", "--json", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert [v["id"] for v in json.loads(done.stdout)] == [v["id"] for v in made]


async def _cli(env: dict[str, str], *args: str) -> Any:
    # The fake runs on this test's event loop: the CLI runs in a thread meanwhile.
    return await asyncio.to_thread(run_cli, *args, env=env)


# Settings.


def test_api_token_is_never_read_from_the_config_file(make_settings):
    with pytest.raises(ConfigError, match=r"^replicate\.token: unknown key$"):
        make_settings(toml='[replicate]\ntoken = "r8_fromAFile"\n')


def test_api_base_must_be_an_http_url(make_settings):
    with pytest.raises(ConfigError, match=r"^replicate\.api_base: not an http"):
        make_settings(env={"REPLICATE_API_BASE": "file:///etc/passwd"})


def test_replicate_defaults_need_no_token_and_keep_reconciliation_off(make_settings):
    settings = make_settings().replicate
    assert settings.token is None
    assert settings.api_base == "https://api.replicate.com/v1"
    assert settings.trainer_model == MODEL
    assert settings.reconcile_interval_s == 60.0
