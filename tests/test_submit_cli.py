"""The whole loop through the real entry points: `replicate-webhookd submit` asks a
running daemon (a separate process) to start a training at the fake Replicate API;
the daemon follows it to its end by signed webhooks, and again, with every webhook
lost, by reconciliation alone; either way the outputs are delivered."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tests.helpers import DaemonProcess, run_cli
from tests.test_submit import CONFIG, DATALOADER, DESTINATION, MODEL


def write_inputs(folder: Path) -> list[str]:
    config, dataloader = folder / "config.json", folder / "dataloader.json"
    config.write_text(json.dumps(CONFIG))
    dataloader.write_text(json.dumps(DATALOADER))
    images = folder / "images"
    images.mkdir()
    (images / "1.png").write_bytes(os.urandom(1000))
    return [
        "--training-config",
        str(config),
        "--dataloader",
        str(dataloader),
        "--dataset",
        str(images),
        "--destination",
        DESTINATION,
    ]


async def start_daemon(
    daemon_process: Any, fake: Any, output_server: Any, tmp_path: Path
) -> DaemonProcess:
    fake.add_versions(MODEL, 2)
    toml = tmp_path / "daemon.toml"
    toml.write_text(
        "[replicate]\nreconcile_interval_s = 0.2\n"
        f'[server]\noutputs_dir = "{tmp_path / "outputs"}"\n'
    )
    env = {**fake.env(), **output_server.env()}
    return await asyncio.to_thread(
        daemon_process, secret="", extra_env=env, extra_args=["--config", str(toml)]
    )


async def submit(proc: DaemonProcess, args: list[str]) -> str:
    done = await asyncio.to_thread(
        run_cli, "submit", *args, "--url", proc.url, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("job ")
    return done.stdout.split()[1]


async def wait_for_delivery(proc: DaemonProcess, job_id: str) -> dict[str, Any]:
    for _ in range(300):
        answer = await asyncio.to_thread(
            proc.request, "GET", f"/api/deliveries?job_id={job_id}"
        )
        tasks = answer.json()["deliveries"]
        if tasks and tasks[0]["state"] == "succeeded":
            return tasks[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"not delivered:\n{proc.log_text()}")


async def run_training(fake: Any, job_id: str, weights_url: str) -> None:
    await fake.advance(job_id, "start", status="processing")
    await fake.advance(job_id, "logs", logs="step 1/10\n")
    output = {"version": f"{DESTINATION}:{'c' * 64}", "weights": weights_url}
    await fake.advance(
        job_id, "completed", status="succeeded", output=output, logs="step 1/10\nok\n"
    )


async def test_cli_submit_is_followed_by_webhooks_to_delivered_outputs(
    daemon_process, fake_replicate, output_server, tmp_path
):
    weights = os.urandom(32 * 1024)
    url = output_server.add(weights)
    proc = await start_daemon(daemon_process, fake_replicate, output_server, tmp_path)
    change = json.dumps({"public_url": proc.url}).encode()
    answer = await asyncio.to_thread(
        proc.request, "PUT", "/api/cloud/providers/replicate", change
    )
    assert answer.status == 200

    job_id = await submit(proc, write_inputs(tmp_path))
    await run_training(fake_replicate, job_id, url)

    assert [event for event, _ in fake_replicate.sent] == ["start", "logs", "completed"]
    assert all(status == 200 for _, status in fake_replicate.sent)
    task = await wait_for_delivery(proc, job_id)
    assert task["destination"] == "local"
    (saved,) = (tmp_path / "outputs" / job_id).iterdir()
    assert (
        hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(weights).digest()
    )
    # The daemon fetched its signing secret from the (fake) API and never logged it.
    assert fake_replicate.webhook_key not in proc.log_text()
    assert fake_replicate.token not in proc.log_text()


async def test_cli_submit_with_every_webhook_lost_ends_by_reconciliation_alone(
    daemon_process, fake_replicate, output_server, tmp_path
):
    weights = os.urandom(32 * 1024)
    url = output_server.add(weights)
    fake_replicate.drop_webhooks = True
    proc = await start_daemon(daemon_process, fake_replicate, output_server, tmp_path)
    job_id = await submit(proc, write_inputs(tmp_path))
    await run_training(fake_replicate, job_id, url)

    await wait_for_delivery(proc, job_id)
    job = (await asyncio.to_thread(proc.request, "GET", f"/api/jobs/{job_id}")).json()
    assert job["status"] == "succeeded"
    assert fake_replicate.sent == []


async def test_cli_submit_reports_a_refusal_with_exit_1(
    daemon_process, fake_replicate, output_server, tmp_path
):
    proc = await start_daemon(daemon_process, fake_replicate, output_server, tmp_path)
    args = write_inputs(tmp_path)
    args[args.index("--destination") + 1] = "not-a-model"
    done = await asyncio.to_thread(
        run_cli, "submit", *args, "--url", proc.url, timeout=60
    )
    assert done.returncode == 1
    assert "refused (422): destination: not an owner/name model" in done.stderr


def test_cli_submit_with_an_unreadable_config_file_exits_2(tmp_path):
    done = run_cli(
        "submit",
        "--training-config",
        str(tmp_path / "missing.json"),
        "--dataloader",
        str(tmp_path / "missing.json"),
        "--data-dir",
        str(tmp_path),
    )
    assert done.returncode == 2
    assert "--training-config" in done.stderr
