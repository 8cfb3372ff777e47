"""The end-to-end path through the app factory: a signed real-shaped body is stored."""

from tests.helpers import WEBHOOK_PATH, payload, signed_headers


async def test_signed_training_snapshot_is_recorded_and_readable(daemon_client, secret):
    client = await daemon_client()
    body = payload("training_succeeded.json")
    response = await client.post(
        WEBHOOK_PATH, data=body, headers=signed_headers(secret, body)
    )
    assert response.status == 200, await response.text()
    job = await (await client.get("/api/jobs/k7m3x9q2v5rgc0cm4z1b8n6w2t")).json()
    assert job["status"] == "succeeded"
    assert [item["kind"] for item in job["history"]] == ["completed"]


async def test_daemon_process_serves_on_loopback(daemon_process):
    proc = daemon_process()
    assert proc.port > 0
    assert proc.stop() == 0
    assert "stopped after" in proc.log_text()
