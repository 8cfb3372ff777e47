"""The ngrok and cloudflared settings of deploy/README.md, loaded into the daemon.

No tunnel runs here. Its agent relays every request from loopback with the
client's address in a header, which is what the aiohttp test client does from
127.0.0.1 when it sends that header.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.deploy_support import readme_toml
from tests.helpers import WEBHOOK_PATH, signed_headers

REPLICATE_SENDER = "34.82.17.5"  # inside a published range
OUTSIDER = "203.0.113.9"

TUNNELS = {"ngrok": "### ngrok", "cloudflared": "### cloudflared"}


def relayed(tunnel: str, client: str, spoofed: str | None = None) -> dict[str, str]:
    """The header the tunnel's agent adds for `client`, after a client's own."""
    if tunnel == "cloudflared":
        return {"CF-Connecting-IP": client}  # overwritten by Cloudflare, never appended
    return {"X-Forwarded-For": f"{spoofed}, {client}" if spoofed else client}


async def start(daemon_client: Any, tunnel: str) -> Any:
    return await daemon_client(toml=readme_toml(TUNNELS[tunnel]))


async def post(client: Any, secret: str, job_id: str, headers: dict[str, str]) -> Any:
    body = json.dumps({"id": job_id, "status": "starting"}).encode()
    return await client.post(
        WEBHOOK_PATH, data=body, headers={**signed_headers(secret, body), **headers}
    )


@pytest.mark.parametrize("tunnel", sorted(TUNNELS))
async def test_tunnel_settings_accept_a_webhook_from_replicate_and_record_its_address(
    daemon_client: Any, secret: str, tunnel: str
) -> None:
    client = await start(daemon_client, tunnel)
    headers = relayed(tunnel, REPLICATE_SENDER, spoofed=OUTSIDER)
    answer = await post(client, secret, f"{tunnel}tunnel0001", headers)
    assert answer.status == 200, await answer.text()
    job = await (await client.get(f"/api/jobs/{tunnel}tunnel0001")).json()
    assert [item["client_address"] for item in job["history"]] == [REPLICATE_SENDER]


@pytest.mark.parametrize("tunnel", sorted(TUNNELS))
async def test_tunnel_settings_refuse_a_webhook_from_outside_replicates_ranges(
    daemon_client: Any, secret: str, tunnel: str
) -> None:
    client = await start(daemon_client, tunnel)
    headers = relayed(tunnel, OUTSIDER, spoofed=REPLICATE_SENDER)
    answer = await post(client, secret, f"{tunnel}tunnel0002", headers)
    assert answer.status == 403, await answer.text()
    assert (await answer.json())["error"]["code"] == "forbidden_ip"


@pytest.mark.parametrize("tunnel", sorted(TUNNELS))
async def test_tunnel_settings_refuse_the_admin_api_to_internet_visitors(
    daemon_client: Any, tunnel: str
) -> None:
    client = await start(daemon_client, tunnel)
    answer = await client.get("/api/jobs", headers=relayed(tunnel, OUTSIDER))
    assert answer.status == 403, await answer.text()
    local = await client.get("/api/jobs")  # curl on the daemon's own host
    assert local.status == 200, await local.text()
