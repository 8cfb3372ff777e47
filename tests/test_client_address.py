"""Who the client is: the allowlist, trusted proxies, and the admin API's access rule.

The aiohttp test client always connects from 127.0.0.1, so "a client behind a
proxy" is 127.0.0.1 configured as a trusted proxy plus a forwarding header.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from multidict import CIMultiDict

from daemon.receive.client_ip import ClientAddressError, parse_network, resolve_client
from tests.helpers import WEBHOOK_PATH, signed_headers

PROXY = "127.0.0.1/32"
CLIENT = "203.0.113.9"
OTHER = "198.51.100.7"
ADMIN_TOKEN = "admin-token-for-tests-0123456789"

_job_counter = iter(range(1, 1 << 30))


def job_body() -> bytes:
    job_id = f"addrjob{next(_job_counter):04d}"
    return json.dumps({"id": job_id, "status": "starting"}).encode()


async def refused(response: Any, status: int, code: str) -> str:
    text = await response.text()
    assert response.status == status, text
    document = json.loads(text)
    assert set(document) == {"error"}, text
    assert set(document["error"]) == {"code", "message"}, text
    assert document["error"]["code"] == code, text
    message: str = document["error"]["message"]
    return message


async def accepted(response: Any) -> None:
    text = await response.text()
    assert response.status == 200, text
    assert json.loads(text)["ok"] is True


async def post(
    client: Any, secret: str, forwarded: list[tuple[str, str]] | None = None
) -> Any:
    body = job_body()
    headers = CIMultiDict(signed_headers(secret, body))
    for name, value in forwarded or []:
        headers.add(name, value)
    return await client.post(WEBHOOK_PATH, data=body, headers=headers)


async def job_total(client: Any) -> int:
    response = await client.get("/api/jobs")
    assert response.status == 200, await response.text()
    total: int = (await response.json())["total"]
    return total


def xff(*lines: str) -> list[tuple[str, str]]:
    return [("X-Forwarded-For", line) for line in lines]


# The allowlist with the TCP peer --------------------------------------------------


@pytest.mark.parametrize("allowed", ["10.0.0.0/8", "127.0.0.2", "::1", "0.0.0.0/32"])
async def test_webhook_refuses_peer_outside_allowed_ips(daemon_client, secret, allowed):
    client = await daemon_client(webhook__allowed_ips=allowed)
    message = await refused(await post(client, secret), 403, "forbidden_ip")
    assert "127.0.0.1" in message
    assert await job_total(client) == 0


@pytest.mark.parametrize(
    "allowed",
    [
        "127.0.0.1",
        "127.0.0.0/8",
        "10.0.0.0/8, 127.0.0.1/32",
        ["192.0.2.1", "127.0.0.1"],
    ],
)
async def test_webhook_accepts_peer_inside_allowed_ips(daemon_client, secret, allowed):
    client = await daemon_client(webhook__allowed_ips=allowed)
    await accepted(await post(client, secret))
    assert await job_total(client) == 1


async def test_webhook_allowed_ips_matches_ipv4_peer_against_ipv4_mapped_range(
    daemon_client, secret
):
    client = await daemon_client(webhook__allowed_ips="::ffff:127.0.0.0/104")
    await accepted(await post(client, secret))


# Trusted proxies and X-Forwarded-For ----------------------------------------------


@pytest.mark.parametrize(
    ("lines", "client_ip"),
    [
        ((CLIENT,), CLIENT),
        ((f"{OTHER}, {CLIENT}",), CLIENT),  # spoofed left entry ignored
        ((f"{CLIENT}, {OTHER}",), OTHER),  # the right-most one is the client
        ((f"{CLIENT}, 127.0.0.1",), CLIENT),  # trusted hops are skipped
        ((f"{CLIENT},127.0.0.1,127.0.0.1",), CLIENT),
        ((OTHER, CLIENT), CLIENT),  # several lines are joined in order
        ((CLIENT, OTHER), OTHER),
        ((f"{OTHER}, {CLIENT}", "127.0.0.1"), CLIENT),
        ((f"{CLIENT}:51234",), CLIENT),  # a proxy that appends the port
    ],
    ids=[
        "single",
        "spoofed-left",
        "rightmost-wins",
        "trusted-hop-skipped",
        "two-trusted-hops",
        "two-lines",
        "two-lines-reversed",
        "line-then-trusted-line",
        "with-port",
    ],
)
async def test_webhook_client_is_rightmost_untrusted_forwarded_for_entry(
    daemon_client, secret, lines, client_ip
):
    client = await daemon_client(
        webhook__trusted_proxies=PROXY, webhook__allowed_ips=CLIENT
    )
    response = await post(client, secret, xff(*lines))
    if client_ip == CLIENT:
        await accepted(response)
        assert await job_total(client) == 1
    else:
        message = await refused(response, 403, "forbidden_ip")
        assert client_ip in message
        assert await job_total(client) == 0


async def test_delivery_history_records_the_forwarded_client_not_the_proxy(
    daemon_client, secret
):
    client = await daemon_client(webhook__trusted_proxies=PROXY)
    body = job_body()
    headers = CIMultiDict(signed_headers(secret, body))
    headers.add("X-Forwarded-For", f"{OTHER}, {CLIENT}")
    await accepted(await client.post(WEBHOOK_PATH, data=body, headers=headers))
    job = await client.get(f"/api/jobs/{json.loads(body)['id']}")
    history = (await job.json())["history"]
    assert [item["client_address"] for item in history] == [CLIENT]


async def test_webhook_without_forwarding_header_judges_the_proxy_itself(
    daemon_client, secret
):
    client = await daemon_client(
        webhook__trusted_proxies=PROXY, webhook__allowed_ips=CLIENT
    )
    message = await refused(await post(client, secret), 403, "forbidden_ip")
    assert "127.0.0.1" in message


async def test_webhook_ignores_forwarded_for_when_peer_is_not_a_trusted_proxy(
    daemon_client, secret
):
    client = await daemon_client(
        webhook__trusted_proxies="10.0.0.1", webhook__allowed_ips=CLIENT
    )
    message = await refused(
        await post(client, secret, xff(CLIENT)), 403, "forbidden_ip"
    )
    assert "127.0.0.1" in message
    assert CLIENT not in message


async def test_webhook_does_not_parse_forwarded_for_from_an_untrusted_peer(
    daemon_client, secret
):
    client = await daemon_client(webhook__allowed_ips="127.0.0.1")
    await accepted(await post(client, secret, xff("garbage, not-an-ip")))


GARBAGE = {
    "word": "unknown",
    "garbage-right": f"{CLIENT}, garbage",
    "garbage-left": f"garbage, {CLIENT}",
    "empty": "",
    "comma-only": ",",
    "empty-entry": f"{CLIENT},,",
    "octet-overflow": "203.0.113.256",
    "semicolon": f"{CLIENT};evil",
    "bad-ipv6": "2001:db8::zz",
    "forwarded-syntax": f"for={CLIENT}",
    "cidr": "203.0.113.0/24",
    "obfuscated": "_hidden",
}


@pytest.mark.parametrize("allowed", ["", "127.0.0.1"], ids=["no-allowlist", "peer-ok"])
@pytest.mark.parametrize("value", GARBAGE.values(), ids=GARBAGE.keys())
async def test_webhook_refuses_garbage_forwarded_for_from_trusted_proxy(
    daemon_client, secret, value, allowed
):
    # Falling back to the peer (127.0.0.1, which "peer-ok" allows) would be a pass.
    client = await daemon_client(
        webhook__trusted_proxies=PROXY, webhook__allowed_ips=allowed
    )
    response = await post(client, secret, xff(value))
    await refused(response, 403, "invalid_client_address")
    assert await job_total(client) == 0


@pytest.mark.parametrize(
    "entry", ["::ffff:203.0.113.9", "::FFFF:cb00:7109", "[::ffff:203.0.113.9]:443"]
)
async def test_webhook_ipv4_mapped_forwarded_for_matches_ipv4_allow_range(
    daemon_client, secret, entry
):
    client = await daemon_client(
        webhook__trusted_proxies=PROXY, webhook__allowed_ips="203.0.113.0/24"
    )
    await accepted(await post(client, secret, xff(entry)))


async def test_webhook_bare_address_in_allowed_ips_means_one_host(
    daemon_client, secret
):
    client = await daemon_client(
        webhook__trusted_proxies=PROXY, webhook__allowed_ips=CLIENT
    )
    await accepted(await post(client, secret, xff(CLIENT)))
    for neighbour in ("203.0.113.8", "203.0.113.10", "203.0.113.0"):
        response = await post(client, secret, xff(neighbour))
        await refused(response, 403, "forbidden_ip")
    assert await job_total(client) == 1


def test_bare_address_parses_to_a_single_host_network():
    assert parse_network(CLIENT) == ipaddress.ip_network(f"{CLIENT}/32")
    assert parse_network("2001:db8::1").num_addresses == 1
    assert parse_network("::ffff:203.0.113.9") == ipaddress.ip_network(f"{CLIENT}/32")


async def test_webhook_bare_address_as_trusted_proxy_means_one_host(
    daemon_client, secret
):
    # 127.0.0.2 is not the peer, so the header is not believed.
    client = await daemon_client(
        webhook__trusted_proxies="127.0.0.2", webhook__allowed_ips=CLIENT
    )
    await refused(await post(client, secret, xff(CLIENT)), 403, "forbidden_ip")


# X-Real-IP: a single-valued header ------------------------------------------------


async def _real_ip_client(daemon_client: Any) -> Any:
    return await daemon_client(
        webhook__trusted_proxies=PROXY,
        webhook__allowed_ips=CLIENT,
        webhook__client_ip_header="X-Real-IP",
    )


async def test_webhook_reads_client_from_x_real_ip(daemon_client, secret):
    client = await _real_ip_client(daemon_client)
    await accepted(await post(client, secret, [("X-Real-IP", CLIENT)]))
    message = await refused(
        await post(client, secret, [("X-Real-IP", OTHER)]), 403, "forbidden_ip"
    )
    assert OTHER in message


@pytest.mark.parametrize("second", [CLIENT, OTHER], ids=["same", "different"])
async def test_webhook_refuses_x_real_ip_sent_twice(daemon_client, secret, second):
    client = await _real_ip_client(daemon_client)
    lines = [("X-Real-IP", CLIENT), ("X-Real-IP", second)]
    await refused(await post(client, secret, lines), 403, "invalid_client_address")
    assert await job_total(client) == 0


@pytest.mark.parametrize("value", [f"{OTHER}, {CLIENT}", "garbage", ""])
async def test_webhook_refuses_x_real_ip_that_is_not_one_address(
    daemon_client, secret, value
):
    client = await _real_ip_client(daemon_client)
    lines = [("X-Real-IP", value)]
    await refused(await post(client, secret, lines), 403, "invalid_client_address")


async def test_webhook_ignores_forwarded_for_when_x_real_ip_is_configured(
    daemon_client, secret
):
    client = await _real_ip_client(daemon_client)
    response = await post(client, secret, xff(CLIENT))
    message = await refused(response, 403, "forbidden_ip")
    assert "127.0.0.1" in message


# resolve_client edge cases --------------------------------------------------------

TRUSTED = (parse_network("127.0.0.1/32"), parse_network("2001:db8:ffff::/48"))


def resolve(peer: str | None, *lines: str, header: str = "X-Forwarded-For") -> str:
    found = resolve_client(peer, {header.lower(): list(lines)}, TRUSTED, header)
    return str(found)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("[fe80::1%eth0]:8080", "fe80::1"),
        ("203.0.113.9:51234", CLIENT),
        ("  203.0.113.9  ", CLIENT),
        ("::ffff:203.0.113.9", CLIENT),
        ("[::ffff:203.0.113.9]:80", CLIENT),
    ],
)
def test_resolve_client_parses_forwarded_entry_forms(entry, expected):
    assert resolve("127.0.0.1", entry) == expected
    assert resolve("127.0.0.1", entry, header="X-Real-IP") == expected


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "unknown",
        "2001:db8::1]:443",
        "[2001:db8::zz]:443",
        "%eth0",
        "203.0.113",
        "1.2.3.4.5",
        "[203.0.113.9",
    ],
)
def test_resolve_client_rejects_unparseable_entries(entry):
    with pytest.raises(ClientAddressError):
        resolve("127.0.0.1", entry)
    with pytest.raises(ClientAddressError):
        resolve("127.0.0.1", entry, header="X-Real-IP")


def test_resolve_client_believes_an_untrusted_peer_and_ignores_its_headers():
    assert resolve("198.51.100.7", "garbage") == OTHER
    assert resolve("2001:db8::5", CLIENT) == "2001:db8::5"
    assert resolve("::ffff:198.51.100.7", CLIENT) == OTHER


def test_resolve_client_trusts_an_ipv4_mapped_peer_in_an_ipv4_proxy_range():
    assert resolve("::ffff:127.0.0.1", CLIENT) == CLIENT


def test_resolve_client_trusts_an_ipv6_proxy_range():
    assert resolve("2001:db8:ffff::10", f"{CLIENT}, 2001:db8:ffff::20") == CLIENT


def test_resolve_client_returns_first_hop_when_every_hop_is_trusted():
    assert resolve("127.0.0.1", "2001:db8:ffff::1, 127.0.0.1") == "2001:db8:ffff::1"


def test_resolve_client_without_header_is_the_proxy():
    assert resolve("127.0.0.1") == "127.0.0.1"


@pytest.mark.parametrize("peer", [None, "", "unix-socket"])
def test_resolve_client_rejects_a_missing_or_unusable_peer(peer):
    with pytest.raises(ClientAddressError):
        resolve(peer, CLIENT)


def test_resolve_client_x_real_ip_twice_is_an_error_even_with_one_value():
    with pytest.raises(ClientAddressError):
        resolve("127.0.0.1", CLIENT, CLIENT, header="X-Real-IP")


# The admin API --------------------------------------------------------------------


async def test_admin_api_without_token_answers_loopback_client(daemon_client):
    client = await daemon_client()
    response = await client.get("/api/jobs")
    assert response.status == 200, await response.text()


@pytest.mark.parametrize("path", ["/api/jobs", "/api/jobs/x", "/api/jobs/x/logs"])
async def test_admin_api_without_token_forbids_non_loopback_client(daemon_client, path):
    client = await daemon_client(webhook__trusted_proxies=PROXY)
    response = await client.get(path, headers={"X-Forwarded-For": CLIENT})
    message = await refused(response, 403, "forbidden")
    assert "REPLICATE_WEBHOOKD_ADMIN_TOKEN" in message


async def test_admin_api_refuses_garbage_forwarded_for_from_trusted_proxy(
    daemon_client,
):
    client = await daemon_client(webhook__trusted_proxies=PROXY)
    response = await client.get("/api/jobs", headers={"X-Forwarded-For": "garbage"})
    await refused(response, 403, "invalid_client_address")


async def _token_client(daemon_client: Any, make_settings: Any) -> Any:
    settings = make_settings(
        env={"REPLICATE_WEBHOOKD_ADMIN_TOKEN": ADMIN_TOKEN},
        webhook__trusted_proxies=PROXY,
    )
    return await daemon_client(settings)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong-token",
        f"Bearer {ADMIN_TOKEN}x",
        f"Bearer {ADMIN_TOKEN[:-1]}",
        f"Basic {ADMIN_TOKEN}",
        f"Token {ADMIN_TOKEN}",
        ADMIN_TOKEN,
        "Bearer é",
    ],
    ids=[
        "missing",
        "empty",
        "scheme-only",
        "scheme-space",
        "wrong",
        "longer",
        "prefix",
        "basic-scheme",
        "token-scheme",
        "no-scheme",
        "non-ascii",
    ],
)
async def test_admin_api_with_token_refuses_missing_or_wrong_bearer(
    daemon_client, make_settings, authorization
):
    client = await _token_client(daemon_client, make_settings)
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await client.get("/api/jobs", headers=headers)
    message = await refused(response, 401, "unauthorized")
    assert response.headers.get("WWW-Authenticate") == "Bearer"
    assert ADMIN_TOKEN not in message


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
@pytest.mark.parametrize("forwarded", [None, CLIENT], ids=["loopback", "remote"])
async def test_admin_api_with_token_accepts_the_right_bearer_from_any_client(
    daemon_client, make_settings, scheme, forwarded
):
    client = await _token_client(daemon_client, make_settings)
    headers = {"Authorization": f"{scheme} {ADMIN_TOKEN}"}
    if forwarded:
        headers["X-Forwarded-For"] = forwarded
    response = await client.get("/api/jobs", headers=headers)
    assert response.status == 200, await response.text()
    assert (await response.json())["total"] == 0


async def test_admin_token_does_not_guard_the_webhook_or_health_checks(
    daemon_client, make_settings, secret
):
    client = await _token_client(daemon_client, make_settings)
    await accepted(await post(client, secret, xff(CLIENT)))
    assert (await client.get("/healthz")).status == 200
