"""The admin API against other sites' pages: a cross-site request or a change whose
Origin is another host is refused, and without an admin token a request addressed
to a foreign host name (DNS rebinding) is refused; tools without those headers and
the dashboard's own same-origin requests pass."""

from __future__ import annotations

from typing import Any

PROVIDER = "/api/cloud/providers/replicate"
CHANGE = {"destination": "evil/model"}


async def destination(client: Any) -> Any:
    body = await (await client.get(PROVIDER)).json()
    return body["settings"]["destination"]


async def test_change_with_a_foreign_origin_is_refused_and_nothing_changes(
    daemon_client,
):
    client = await daemon_client()
    for origin in ("http://127.0.0.2:18098", "https://evil.example", "null"):
        answer = await client.put(PROVIDER, json=CHANGE, headers={"Origin": origin})
        assert answer.status == 403, origin
        assert (await answer.json())["error"]["code"] == "cross_origin"
    assert await destination(client) is None


async def test_cancel_from_a_cross_site_page_is_refused(daemon_client):
    client = await daemon_client()
    answer = await client.post(
        "/api/jobs/anyjob000000000000000000a/cancel",
        headers={"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"},
    )
    assert answer.status == 403
    assert (await answer.json())["error"]["code"] == "cross_origin"


async def test_same_site_other_port_reads_are_refused_too(daemon_client):
    client = await daemon_client()
    answer = await client.get("/api/jobs", headers={"Sec-Fetch-Site": "same-site"})
    assert answer.status == 403


async def test_the_dashboards_own_same_origin_change_passes(daemon_client):
    client = await daemon_client()
    own = f"http://{client.host}:{client.port}"
    headers = {"Origin": own, "Sec-Fetch-Site": "same-origin"}
    answer = await client.put(PROVIDER, json=CHANGE, headers=headers)
    assert answer.status == 200, await answer.text()
    assert await destination(client) == "evil/model"


async def test_without_a_token_a_foreign_host_name_is_refused(daemon_client):
    client = await daemon_client()
    rebound = {"Host": "attacker.example:8080"}
    answer = await client.get("/api/jobs", headers=rebound)
    assert answer.status == 403
    assert (await answer.json())["error"]["code"] == "forbidden_host"
    answer = await client.put(PROVIDER, json=CHANGE, headers=rebound)
    assert answer.status == 403
    assert await destination(client) is None
    assert (await client.get("/healthz", headers=rebound)).status == 200
    assert (await client.get("/api/jobs", headers={"Host": "localhost"})).status == 200


async def test_the_public_url_host_is_this_daemons_own_name(daemon_client):
    client = await daemon_client(server__public_url="https://hooks.example.test")
    answer = await client.get("/api/jobs", headers={"Host": "hooks.example.test"})
    assert answer.status == 200, await answer.text()


async def test_with_a_token_the_host_name_does_not_matter(daemon_client):
    client = await daemon_client(
        env={"REPLICATE_WEBHOOKD_ADMIN_TOKEN": "t0ken-abc-123"}
    )
    headers = {"Host": "attacker.example", "Authorization": "Bearer t0ken-abc-123"}
    assert (await client.get("/api/jobs", headers=headers)).status == 200
