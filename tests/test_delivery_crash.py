"""A download cut short by SIGKILL is finished by the next start, whole and once.

The real daemon process fetches a succeeded job's weights from the loopback HTTPS
output server (tests.fakes.outputs), which stalls or trickles the body so that the
process can be killed mid-download. A restart on the same data directory takes the
task up again once the dead process's lease has run out (or at once after a clean
SIGTERM, which gives the task back) and ends with exactly one final file with the
right sha256 and no `.part` file left.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.outputs import OutputServer
from tests.helpers import WEBHOOK_PATH, DaemonProcess, payload_json, signed_headers

JOB = "crashdl0000000000000000001"
MIB = 1024 * 1024
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


def blob(size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"crash:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def request(
    proc: DaemonProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, json.loads(data) if data else None


def post_success(proc: DaemonProcess, secret: str, url: str) -> None:
    body = payload_json("training_succeeded.json")
    body["id"] = JOB
    body["output"] = {"version": "acme/flux-lora-demo:abc123", "weights": url}
    raw = json.dumps(body).encode()
    status, reply = request(
        proc, "POST", WEBHOOK_PATH, raw, signed_headers(secret, raw)
    )
    assert status == 200, reply


def local_task(proc: DaemonProcess) -> dict[str, Any]:
    status, page = request(proc, "GET", f"/api/deliveries?job_id={JOB}")
    assert status == 200, page
    [task] = page["deliveries"]
    result: dict[str, Any] = task
    return result


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def part_size(outputs: Path) -> int:
    parts = list(outputs.rglob("*.part"))
    return sum(p.stat().st_size for p in parts)


class Setup:
    def __init__(
        self,
        start: Callable[..., DaemonProcess],
        server: OutputServer,
        tmp_path: Path,
        secret: str,
        lease_s: float,
    ) -> None:
        self.start_daemon, self.server, self.secret = start, server, secret
        self.outputs = tmp_path / "outputs"
        self.config = tmp_path / "delivery.toml"
        self.config.write_text(
            f'[server]\noutputs_dir = "{self.outputs}"\n'
            f"[delivery]\nlease_s = {lease_s}\nbackoff_base_s = 0.05\n"
        )

    def start(self) -> DaemonProcess:
        return self.start_daemon(
            extra_env=self.server.env(), extra_args=["--config", str(self.config)]
        )

    def settled(self, proc: DaemonProcess, timeout: float = 15) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            task = local_task(proc)
            return task if task["state"] not in ("queued", "running") else None

        task: dict[str, Any] = wait_for(final, timeout, "the delivery to finish")
        return task

    def assert_one_whole_file(self, task: dict[str, Any], data: bytes) -> None:
        assert task["state"] == "succeeded", task
        digest = hashlib.sha256(data).hexdigest()
        assert task["result"]["files"] == [
            {"name": "trained_model.tar", "size": len(data), "sha256": digest}
        ]
        job_dir = self.outputs / JOB
        assert [p.name for p in job_dir.iterdir()] == ["trained_model.tar"]
        final = job_dir / "trained_model.tar"
        assert hashlib.sha256(final.read_bytes()).hexdigest() == digest
        assert list(self.outputs.rglob("*.part")) == []
        assert sorted(p.name for p in self.outputs.iterdir()) == [JOB]


@pytest.fixture
def setup(
    output_server: OutputServer,
    daemon_process: Callable[..., DaemonProcess],
    tmp_path: Path,
    secret: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[float], Setup]:
    for name in PROXY_VARIABLES:  # the daemon must talk to loopback directly
        monkeypatch.delenv(name, raising=False)
    return lambda lease_s: Setup(
        daemon_process, output_server, tmp_path, secret, lease_s
    )


def test_sigkill_mid_download_resumes_after_the_lease_and_ends_whole(setup):
    s = setup(2)
    data = blob(6 * MIB + 321)
    url = s.server.add(data)
    with s.server.edit(url) as script:
        script.stalls.append(2 * MIB)
    first = s.start()
    post_success(first, s.secret, url)
    wait_for(lambda: part_size(s.outputs) >= 2 * MIB, 15, "a part file of 2 MiB")
    assert local_task(first)["state"] == "running"

    killed_at = time.monotonic()
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    # The stalled response stays stalled: released now, the fake could push the
    # rest into the dead socket's buffer and count it as sent.
    assert part_size(s.outputs) == 2 * MIB

    second = s.start()
    task = s.settled(second)
    s.assert_one_whole_file(task, data)
    assert task["attempts"] == 2  # the killed attempt counts
    requests = s.server.requests(url)
    assert len(requests) == 2
    assert requests[0].range is None
    assert requests[1].range == f"bytes={2 * MIB}-"
    assert requests[1].at - killed_at >= 1.0  # only once the lease had run out
    assert s.server.sent(url) == len(data)  # no byte was fetched twice


def test_sigkill_mid_download_from_a_server_without_range_starts_over(setup):
    s = setup(2)
    data = blob(4 * MIB + 5)
    url = s.server.add(data)
    with s.server.edit(url) as script:
        script.honour_range = False
        script.chunk_bytes = 64 * 1024
        script.delay_s = 0.02  # about 3 MiB/s: slow enough to be caught mid-way
    first = s.start()
    post_success(first, s.secret, url)
    wait_for(lambda: part_size(s.outputs) >= MIB, 15, "a part file of 1 MiB")
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert 0 < part_size(s.outputs) < len(data)
    with s.server.edit(url) as script:
        script.delay_s = 0.0

    second = s.start()
    task = s.settled(second)
    s.assert_one_whole_file(task, data)
    requests = s.server.requests(url)
    assert len(requests) == 2
    assert requests[1].range is not None  # asked to resume, got the whole file


def test_sigterm_mid_download_gives_the_task_back_for_the_next_start(setup):
    s = setup(60)  # a lease this long would outlast the test: no waiting on it
    data = blob(3 * MIB)
    url = s.server.add(data)
    with s.server.edit(url) as script:
        script.stalls.append(MIB)
    first = s.start()
    post_success(first, s.secret, url)
    wait_for(lambda: part_size(s.outputs) >= MIB, 15, "a part file of 1 MiB")
    assert first.stop(signal.SIGTERM) == 0
    s.server.release()
    log = first.log_text()
    assert "delivery workers stopped (1 tasks were running)" in log
    assert f"job {JOB}): queued again after" in log

    second = s.start()
    task = s.settled(second, timeout=10)
    s.assert_one_whole_file(task, data)
    assert task["attempts"] == 1  # the interrupted attempt was given back
    requests = s.server.requests(url)
    assert [r.range for r in requests] == [None, f"bytes={MIB}-"]


def test_sigkill_mid_s3_upload_ends_with_one_whole_object(
    setup, moto_s3_process, tmp_path
):
    import boto3

    s = setup(2)
    bucket = "crash-bucket"
    s3 = boto3.client("s3", endpoint_url=moto_s3_process, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    with s.config.open("a") as config:
        config.write(
            f'[s3]\nbucket = "{bucket}"\nendpoint_url = "{moto_s3_process}"\n'
            "part_size_bytes = 5242880\n"
        )
    data = blob(96 * MIB + 7)
    url = s.server.add(data)
    first = s.start()
    post_success(first, s.secret, url)

    def s3_running() -> bool:
        _, page = request(first, "GET", f"/api/deliveries?job_id={JOB}")
        states = {t["destination"]: t["state"] for t in page["deliveries"]}
        return states.get("s3") == "running"

    wait_for(s3_running, 60, "the S3 upload to start")
    time.sleep(0.3)  # some parts are on their way
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    second = s.start()

    def all_settled() -> dict[str, Any] | None:
        _, page = request(second, "GET", f"/api/deliveries?job_id={JOB}")
        tasks = {t["destination"]: t for t in page["deliveries"]}
        done = all(t["state"] not in ("queued", "running") for t in tasks.values())
        return tasks if done else None

    tasks = wait_for(all_settled, 90, "both deliveries to finish")
    assert tasks["s3"]["state"] == "succeeded", tasks["s3"]
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert [item["Key"] for item in listed] == [f"{JOB}/trained_model.tar"]
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == []  # the killed attempt's parts were aborted, not left billed
    stored = s3.get_object(Bucket=bucket, Key=f"{JOB}/trained_model.tar")["Body"]
    assert hashlib.sha256(stored.read()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert list(s.outputs.rglob("*.part")) == []


def test_full_disk_ends_the_download_failed_with_a_clear_reason(setup):
    import resource

    s = setup(30)
    data = blob(8 * MIB)
    url = s.server.add(data)
    proc = s.start()
    assert proc.process is not None
    # Files the daemon writes may not grow past 3 MiB: writes then fail as on a
    # full disk (EFBIG), which root cannot bypass. The database stays far below.
    resource.prlimit(proc.process.pid, resource.RLIMIT_FSIZE, (3 * MIB, 3 * MIB))
    post_success(proc, s.secret, url)
    task = s.settled(proc)
    assert task["state"] == "failed", task
    assert task["reason"] == "disk_full"
    assert "cannot write the output" in task["message"]
    assert task["attempts"] == 1  # permanent: not retried
    assert list(s.outputs.rglob("*.part")) == []
