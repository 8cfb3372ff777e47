"""A succeeded job's outputs end up whole in outputs_dir/<job id>/, or fail clearly.

The real app runs on loopback with its real SQLite database and delivery workers;
the outputs come from tests.fakes.outputs, an HTTPS server on 127.0.0.1 with a
throwaway CA that the daemon is told to trust. Only "localhost:<its port>" is an
allowed output host, so nothing is ever fetched from replicate.delivery.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from daemon import limits
from daemon.deliver import queue
from daemon.deliver.outputs import host_allowed, output_urls, plan_files, safe_name
from tests.helpers import WEBHOOK_PATH, payload_json, run_cli, signed_headers

JOB = "k7m3x9q2v5rgc0cm4z1b8n6w2t"
MIB = 1024 * 1024


def blob(size: int, seed: int = 1) -> bytes:
    """Bytes that differ at every offset, so a misplaced resume changes the hash."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def training(output: Any, job_id: str = JOB) -> bytes:
    body = payload_json("training_succeeded.json")
    body["id"] = job_id
    body["output"] = output
    return json.dumps(body).encode()


def weights(url: str) -> dict[str, str]:
    version = "acme/flux-lora-demo:9b1f3c0e7d2a4b6c8e0f1a2b3c4d5e6f708192a3b4c5d6e7"
    return {"version": version, "weights": url}


class Harness:
    """The app under test, its outputs dir, and the output server it fetches from."""

    def __init__(self, client: Any, secret: str, server: Any, outputs: Path) -> None:
        self.client, self.secret, self.server, self.outputs = (
            client,
            secret,
            server,
            outputs,
        )

    def job_dir(self, job_id: str = JOB) -> Path:
        return self.outputs / job_id

    async def post(self, raw: bytes, msg_id: str | None = None) -> dict[str, Any]:
        response = await self.client.post(
            WEBHOOK_PATH,
            data=raw,
            headers=signed_headers(self.secret, raw, msg_id=msg_id),
        )
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result

    async def get(self, path: str, status: int = 200) -> Any:
        response = await self.client.get(path)
        assert response.status == status, await response.text()
        return await response.json()

    async def tasks(self, job_id: str = JOB) -> list[dict[str, Any]]:
        page = await self.get(f"/api/deliveries?job_id={job_id}")
        tasks: list[dict[str, Any]] = page["deliveries"]
        return tasks

    async def task(self, job_id: str = JOB) -> dict[str, Any]:
        tasks = await self.tasks(job_id)
        assert len(tasks) == 1, tasks
        return tasks[0]

    async def settled(self, job_id: str = JOB, timeout: float = 20) -> dict[str, Any]:
        """Wait for the job's local task to reach a final state."""

        async def final() -> dict[str, Any] | None:
            task = await self.task(job_id)
            return task if task["state"] in queue.FINAL_STATES else None

        return await eventually(final, timeout, f"job {job_id} to settle")

    def files(self, job_id: str = JOB) -> dict[str, bytes]:
        folder = self.job_dir(job_id)
        return {
            p.name: p.read_bytes()
            for p in folder.iterdir()
            if p.is_file() and not p.is_symlink()
        }

    def parts(self) -> list[Path]:
        return [p for p in self.outputs.rglob("*") if p.name.endswith(".part")]


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 20, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def sent_at_least(server: Any, url: str, count: int) -> None:
    async def enough() -> bool:
        return bool(server.sent(url) >= count)

    await eventually(enough, 20, f"the server to send {count} bytes")


@pytest.fixture
def harness(
    output_server: Any,
    daemon_client: Any,
    make_settings: Any,
    secret: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Awaitable[Harness]]:
    # output_server first: it is then torn down after the app that talks to it.
    # Only loopback hosts appear in these URLs (other hosts are checked by the
    # pure host_allowed tests below), and no proxy may carry a request elsewhere.
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)

    async def start(*, env: dict[str, str] | None = None, **overrides: Any) -> Harness:
        outputs = tmp_path / "outputs"
        options: dict[str, Any] = {
            "server__outputs_dir": str(outputs),
            "delivery__backoff_base_s": 0.05,
            "delivery__lease_s": 3,
        }
        options.update(overrides)
        settings = make_settings(env={**output_server.env(), **(env or {})}, **options)
        client = await daemon_client(settings)
        return Harness(client, secret, output_server, outputs)

    return start


def closed_loopback_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- the happy path and the API --------------------------------------------------


async def test_succeeded_training_weights_are_saved_whole_under_the_job_dir(harness):
    h = await harness()
    data = blob(3 * MIB + 123)
    url = h.server.add(data)
    receipt = await h.post(training(weights(url)))
    assert receipt["status"] == "succeeded"

    task = await h.settled()
    assert task["state"] == "succeeded", task
    assert task["destination"] == "local"
    assert task["attempts"] == 1
    assert h.files() == {"trained_model.tar": data}
    assert task["result"]["files"] == [
        {"name": "trained_model.tar", "size": len(data), "sha256": sha(data)}
    ]
    assert task["bytes_done"] == len(data)
    assert not (h.job_dir() / ".partial").exists()
    assert h.parts() == []

    job = await h.get(f"/api/jobs/{JOB}")
    assert [d["id"] for d in job["deliveries"]] == [task["id"]]
    assert job["deliveries"][0]["state"] == "succeeded"
    [file] = job["files"]
    assert (file["name"], file["url"], file["size"], file["sha256"]) == (
        "trained_model.tar",
        url,
        len(data),
        sha(data),
    )
    assert file["completed_at"] is not None

    assert [t["id"] for t in (await h.get("/api/deliveries"))["deliveries"]] == [
        task["id"]
    ]
    listed = await h.get("/api/deliveries?state=succeeded")
    assert [t["id"] for t in listed["deliveries"]] == [task["id"]]
    assert (await h.get("/api/deliveries?state=failed"))["deliveries"] == []
    assert (await h.get("/api/deliveries?job_id=other"))["deliveries"] == []


async def test_every_url_in_a_list_or_nested_output_is_saved_in_order(harness):
    h = await harness()
    first, second, third = blob(1000, 1), blob(2000, 2), blob(3000, 3)
    urls = [
        h.server.add(first, "out-0.png"),
        h.server.add(second, "out-1.png"),
        h.server.add(third, "extra.safetensors"),
    ]
    output = [urls[0], urls[1], {"nested": {"file": urls[2], "note": "not a url"}}]
    await h.post(training(output))
    task = await h.settled()
    assert task["state"] == "succeeded", task
    assert h.files() == {
        "out-0.png": first,
        "out-1.png": second,
        "extra.safetensors": third,
    }
    job = await h.get(f"/api/jobs/{JOB}")
    assert [f["name"] for f in job["files"]] == [
        "out-0.png",
        "out-1.png",
        "extra.safetensors",
    ]


async def test_tasks_are_created_once_per_job_however_often_success_arrives(harness):
    h = await harness()
    data = blob(5000)
    url = h.server.add(data)
    raw = training(weights(url))
    first = await h.post(raw, msg_id="msg_first")
    await h.post(raw, msg_id="msg_first")  # the same delivery again
    for n in range(3):  # Replicate resending the terminal event with new ids
        await h.post(raw, msg_id=f"msg_resend_{n}")
    assert first["status"] == "succeeded"
    task = await h.settled()
    assert task["state"] == "succeeded"
    for n in range(2):  # and again after the delivery finished
        await h.post(raw, msg_id=f"msg_late_{n}")
    await asyncio.sleep(0.3)
    assert len(await h.tasks()) == 1
    assert len(h.server.requests(url)) == 1
    assert h.files() == {"trained_model.tar": data}


async def test_job_that_succeeds_after_processing_gets_one_task(harness):
    h = await harness()
    data = blob(100)
    url = h.server.add(data)
    processing = payload_json("training_succeeded.json")
    processing.update(id=JOB, status="processing", output=None)
    await h.post(json.dumps(processing).encode())
    assert await h.tasks() == []
    await h.post(training(weights(url)))
    assert (await h.settled())["state"] == "succeeded"
    assert len(await h.tasks()) == 1


# -- which URLs are fetched --------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "http://localhost:{port}/xezq/t/trained_model.tar",  # not https
        "https://127.0.0.1:{port}/xezq/t/trained_model.tar",  # not the allowed name
        "https://localhost:{other}/xezq/t/trained_model.tar",  # another port
        "https://localhost/xezq/t/trained_model.tar",  # default port
        "https://user:pw@localhost:{port}/xezq/t/trained_model.tar",  # credentials
        "https://[::1]:{port}/xezq/t/trained_model.tar",
        "ftp://localhost:{port}/xezq/t/trained_model.tar",
    ],
)
async def test_url_not_https_on_an_allowed_host_ends_blocked_host_unfetched(
    harness, template
):
    h = await harness()
    good = h.server.add(blob(10))
    bad = template.format(port=h.server.port, other=closed_loopback_port())
    await h.post(training([good, bad]))
    task = await h.settled()
    assert task["state"] == "blocked_host", task
    assert task["reason"] == "blocked_host"
    assert task["attempts"] == 1
    assert h.server.requests() == []  # not even the allowed URL beside it
    assert not h.job_dir().exists() or h.files() == {}


async def test_redirect_to_a_host_not_allowed_ends_blocked_host(harness):
    h = await harness()
    target = h.server.add(blob(10), "target.tar")
    elsewhere = target.replace("https://localhost:", "https://127.0.0.1:")
    url = h.server.add(blob(10))
    with h.server.edit(url) as script:
        script.redirect = elsewhere
    await h.post(training(weights(url)))
    task = await h.settled()
    assert task["state"] == "blocked_host", task
    assert "127.0.0.1" in task["message"]
    assert len(h.server.requests(url)) == 1
    assert h.server.requests(target) == []
    assert h.parts() == []


async def test_redirect_to_plain_http_on_the_allowed_host_is_blocked(harness):
    h = await harness()
    target = h.server.add(blob(10), "target.tar")
    url = h.server.add(blob(10))
    with h.server.edit(url) as script:
        script.redirect = target.replace("https://", "http://")
    await h.post(training(weights(url)))
    assert (await h.settled())["state"] == "blocked_host"
    assert h.server.requests(target) == []


async def test_redirect_loop_fails_after_a_bounded_number_of_hops(harness):
    h = await harness()
    url = h.server.add(blob(10))
    with h.server.edit(url) as script:
        script.redirect = url
    await h.post(training(weights(url)))
    task = await h.settled()
    assert (task["state"], task["reason"]) == ("failed", "too_many_redirects")
    assert 2 <= len(h.server.requests(url)) <= 10


async def test_redirect_to_an_allowed_url_is_followed(harness):
    h = await harness()
    data = blob(4321)
    target = h.server.add(data, "elsewhere.bin")
    url = h.server.add(b"not these bytes")
    with h.server.edit(url) as script:
        script.redirect = target
    await h.post(training(weights(url)))
    assert (await h.settled())["state"] == "succeeded"
    assert h.files() == {"trained_model.tar": data}  # named after the job's URL


# -- resuming and retrying -----------------------------------------------------------


async def test_cut_download_resumes_with_range_and_ends_whole(harness):
    h = await harness()
    data = blob(2 * MIB + 77)
    url = h.server.add(data)
    with h.server.edit(url) as script:
        script.cuts.append(MIB + 5)
    await h.post(training(weights(url)))
    task = await h.settled()
    assert task["state"] == "succeeded", task
    first, second = h.server.requests(url)
    assert first.range is None
    assert second.range is not None
    resumed_at = int(second.range.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= MIB + 5
    assert h.server.sent(url) < len(data) + MIB  # the cut part was not fetched again
    assert h.files() == {"trained_model.tar": data}
    assert task["result"]["files"][0]["sha256"] == sha(data)
    assert h.parts() == []


async def test_server_ignoring_range_makes_the_download_start_over(harness):
    h = await harness()
    data = blob(MIB + 999)
    url = h.server.add(data)
    with h.server.edit(url) as script:
        script.honour_range = False
        script.cuts.extend([300_000, 600_000])
    await h.post(training(weights(url)))
    task = await h.settled()
    assert task["state"] == "succeeded", task
    seen = h.server.requests(url)
    assert len(seen) == 3
    assert [s.range is not None for s in seen] == [False, True, True]
    assert h.files() == {"trained_model.tar": data}
    assert task["result"]["files"][0]["sha256"] == sha(data)
    assert h.parts() == []


async def test_resume_answered_at_the_wrong_offset_starts_over(harness):
    h = await harness(delivery__max_attempts=4)
    data = blob(MIB + 3)
    url = h.server.add(data)
    with h.server.edit(url) as script:
        script.cuts.append(400_000)
        script.misplaced_ranges = 10  # 206 from byte 0 whatever was asked
    await h.post(training(weights(url)))
    task = await h.settled()
    assert task["state"] == "succeeded", task
    assert h.files() == {"trained_model.tar": data}
    assert h.parts() == []


async def test_empty_output_file_is_saved_empty(harness):
    h = await harness()
    url = h.server.add(b"")
    await h.post(training(weights(url)))
    task = await h.settled()
    assert task["state"] == "succeeded", task
    assert h.files() == {"trained_model.tar": b""}
    assert task["result"]["files"][0]["sha256"] == sha(b"")


async def test_body_shorter_than_its_content_length_is_retried(harness):
    h = await harness()
    data = blob(200_000)
    url = h.server.add(data)
    with h.server.edit(url) as script:
        script.overstated.append(1000)  # promises 1000 bytes it never sends
    await h.post(training(weights(url)))
    task = await h.settled()
    assert task["state"] == "succeeded", task
    assert len(h.server.requests(url)) >= 2
    assert h.files() == {"trained_model.tar": data}
    assert h.parts() == []


async def test_retry_after_on_429_is_honoured(harness):
    h = await harness()
    data = blob(1000)
    url = h.server.add(data)
    h.server.fail(url, 1, 429, retry_after="2")
    await h.post(training(weights(url)))

    async def waiting() -> dict[str, Any] | None:
        task = await h.task()
        return task if task["reason"] == "http_429" else None

    queued = await eventually(waiting, 10, "the 429 to be recorded")
    assert queued["state"] in ("queued", "running")
    task = await h.settled()
    assert task["state"] == "succeeded", task
    first, second = h.server.requests(url)
    assert second.at - first.at >= 1.9
    assert h.files() == {"trained_model.tar": data}


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_server_errors_are_retried_until_the_download_succeeds(harness, status):
    h = await harness()
    data = blob(1000)
    url = h.server.add(data)
    h.server.fail(url, 2, status)
    await h.post(training(weights(url)))
    task = await h.settled()
    assert task["state"] == "succeeded", task
    assert task["attempts"] == 3
    assert len(h.server.requests(url)) == 3
    assert h.files() == {"trained_model.tar": data}


@pytest.mark.parametrize("status", [404, 410])
async def test_gone_output_ends_source_expired_after_a_few_attempts(harness, status):
    h = await harness()
    url = h.server.add(blob(10))
    with h.server.edit(url) as script:
        script.gone = status
    await h.post(training(weights(url)))
    task = await h.settled()
    assert task["state"] == "source_expired", task
    assert task["reason"] == "source_expired"
    assert task["attempts"] == limits.SOURCE_EXPIRED_ATTEMPTS
    assert len(h.server.requests(url)) == limits.SOURCE_EXPIRED_ATTEMPTS
    assert task["finished_at"] is not None
    assert h.files() == {}


async def test_output_back_after_a_404_glitch_is_delivered(harness):
    h = await harness()
    data = blob(1000)
    url = h.server.add(data)
    h.server.fail(url, 1, 404)
    await h.post(training(weights(url)))
    task = await h.settled()
    assert task["state"] == "succeeded", task
    assert h.files() == {"trained_model.tar": data}


async def test_retryable_error_ends_failed_with_its_reason_after_max_attempts(
    harness,
):
    h = await harness(delivery__max_attempts=3)
    url = h.server.add(blob(10))
    h.server.fail(url, 50, 503)
    await h.post(training(weights(url)))
    task = await h.settled()
    assert task["state"] == "failed", task
    assert task["reason"] == "http_503"
    assert "503" in task["message"]
    assert (task["attempts"], task["max_attempts"]) == (3, 3)
    assert len(h.server.requests(url)) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 451])
async def test_other_client_errors_fail_at_once(harness, status):
    h = await harness()
    url = h.server.add(blob(10))
    h.server.fail(url, 50, status)
    await h.post(training(weights(url)))
    task = await h.settled()
    assert (task["state"], task["reason"]) == ("failed", f"http_{status}")
    assert len(h.server.requests(url)) == 1


async def test_refused_connection_is_retried_as_a_network_error(harness):
    port = closed_loopback_port()
    hosts = f"localhost:{port}"
    h = await harness(
        env={"REPLICATE_WEBHOOKD_OUTPUT_HOSTS": hosts}, delivery__max_attempts=2
    )
    await h.post(training(weights(f"https://localhost:{port}/xezq/t/model.tar")))
    task = await h.settled()
    assert task["state"] == "failed", task
    assert task["reason"] == "connection_error", task
    assert task["attempts"] == 2


async def test_size_cap_from_content_length_fails_too_large(harness):
    h = await harness(delivery__max_file_bytes=100_000)
    url = h.server.add(blob(100_001))
    await h.post(training(weights(url)))
    task = await h.settled()
    assert (task["state"], task["reason"]) == ("failed", "too_large")
    assert "max_file_bytes" in task["message"]
    assert len(h.server.requests(url)) == 1
    assert h.files() == {}
    assert h.parts() == []


async def test_size_cap_while_streaming_fails_too_large_and_leaves_no_part(harness):
    h = await harness(delivery__max_file_bytes=300_000)
    url = h.server.add(blob(1_000_000))
    with h.server.edit(url) as script:
        script.chunked = True  # no Content-Length: only the stream shows the size
        script.chunk_bytes = 16 * 1024
    await h.post(training(weights(url)))
    task = await h.settled()
    assert (task["state"], task["reason"]) == ("failed", "too_large")
    assert len(h.server.requests(url)) == 1
    assert h.files() == {}
    assert h.parts() == []


async def test_size_cap_after_a_resumed_part_removes_the_part(harness):
    h = await harness(delivery__max_file_bytes=300_000)
    url = h.server.add(blob(1_000_000))
    with h.server.edit(url) as script:
        script.chunked = True
        script.chunk_bytes = 16 * 1024
        script.cuts.append(100_000)  # leaves a part, then the resume hits the cap
    await h.post(training(weights(url)))
    task = await h.settled()
    assert (task["state"], task["reason"]) == ("failed", "too_large")
    assert len(h.server.requests(url)) == 2
    assert h.parts() == []


# -- names and the job's directory ---------------------------------------------------


async def test_unsafe_names_stay_inside_the_job_dir(harness, tmp_path):
    h = await harness()
    long_name = "w" * 300 + ".safetensors"
    paths = {
        "..%2F..%2F..%2Fescape-slash.tar": "escape-slash.tar",
        "%2E%2E%5C%2E%2E%5Cescape-backslash.tar": "escape-backslash.tar",
        "%2Fetc%2Fpasswd": "passwd",
        "nul%00byte.tar": "nulbyte.tar",
        ".hidden": "hidden",
        "..": None,  # nothing usable: a fallback name
        "%2E%2E": None,
        long_name: None,
        "caf%C3%A9%20%E2%80%AE.tar": "caf_.tar",
    }
    urls, contents = [], {}
    for index, (raw, _) in enumerate(paths.items()):
        data = blob(100 + index, seed=index)
        if raw in ("..", "%2E%2E"):  # the client drops dot segments from the path
            url = h.server.add_with_query_token(data, f"/xezq/{index}/{raw}")
        else:
            url = h.server.add(data, raw)
        urls.append(url)
        contents[url] = data
    await h.post(training(urls))
    task = await h.settled()
    assert task["state"] == "succeeded", task

    job = await h.get(f"/api/jobs/{JOB}")
    by_url = {f["url"]: f for f in job["files"]}
    assert set(by_url) == set(urls)
    folder = h.job_dir()
    for url, (raw, expected) in zip(urls, paths.items(), strict=True):
        name = by_url[url]["name"]
        if expected is not None:
            assert name == expected, (raw, name)
        assert not set(name) & {"/", "\\", "\x00"}
        assert not name.startswith(".")
        assert len(name.encode()) <= limits.MAX_OUTPUT_NAME_BYTES
        path = folder / name
        assert path.resolve().parent == folder.resolve()
        assert path.read_bytes() == contents[url]
        assert by_url[url]["sha256"] == sha(contents[url])
    assert by_url[urls[7]]["name"].endswith(".safetensors")

    # Nothing was written anywhere but the job's folder and the database.
    outside = [
        p
        for p in tmp_path.rglob("*")
        if p.is_file()
        and folder not in p.parents
        and (tmp_path / "data") not in p.parents
        and (tmp_path / "output-server") not in p.parents
    ]
    assert outside == []
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f["name"] for f in job["files"]
    )


async def test_two_outputs_with_the_same_name_both_survive(harness):
    h = await harness()
    one, two, three = blob(100, 1), blob(200, 2), blob(300, 3)
    urls = [
        h.server.add(one),
        h.server.add(two),
        h.server.add(three, "TRAINED_MODEL.tar"),  # same name on a case-blind disk
    ]
    await h.post(training(urls))
    task = await h.settled()
    assert task["state"] == "succeeded", task
    assert h.files() == {
        "trained_model.tar": one,
        "trained_model-2.tar": two,
        "TRAINED_MODEL-3.tar": three,
    }


async def test_symlink_at_the_final_path_is_replaced_not_followed(harness, tmp_path):
    h = await harness()
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    victim = victim_dir / "precious.txt"
    victim.write_bytes(b"keep me")
    victim_part = victim_dir / "precious.part"
    victim_part.write_bytes(b"keep me too")
    folder = h.job_dir()
    (folder / ".partial").mkdir(parents=True)
    (folder / "trained_model.tar").symlink_to(victim)
    (folder / ".partial" / "trained_model.tar.part").symlink_to(victim_part)

    data = blob(MIB + 1)
    url = h.server.add(data)
    await h.post(training(weights(url)))
    task = await h.settled()
    assert task["state"] == "succeeded", task
    final = folder / "trained_model.tar"
    assert not final.is_symlink()
    assert final.read_bytes() == data
    assert victim.read_bytes() == b"keep me"
    assert victim_part.read_bytes() == b"keep me too"
    assert sorted(p.name for p in victim_dir.iterdir()) == [
        "precious.part",
        "precious.txt",
    ]


async def test_symlinked_partial_folder_is_not_followed(harness, tmp_path):
    h = await harness()
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    folder = h.job_dir()
    folder.mkdir(parents=True)
    (folder / ".partial").symlink_to(victim_dir, target_is_directory=True)

    data = blob(MIB)
    url = h.server.add(data)
    with h.server.edit(url) as script:
        script.stalls.append(200_000)
    await h.post(training(weights(url)))
    await sent_at_least(h.server, url, 200_000)
    await asyncio.sleep(0.2)
    assert list(victim_dir.iterdir()) == []  # the part is not written through it
    h.server.release()
    task = await h.settled()
    assert task["state"] == "succeeded", task
    assert (folder / "trained_model.tar").read_bytes() == data
    assert list(victim_dir.iterdir()) == []


async def test_job_dir_that_is_a_symlink_fails_without_a_request(harness, tmp_path):
    h = await harness()
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    h.outputs.mkdir(parents=True)
    h.job_dir().symlink_to(victim_dir, target_is_directory=True)
    url = h.server.add(blob(10))
    await h.post(training(weights(url)))
    task = await h.settled()
    assert (task["state"], task["reason"]) == ("failed", "unsafe_path")
    assert h.server.requests() == []
    assert list(victim_dir.iterdir()) == []


# -- retry, CLI, progress, concurrency -------------------------------------------


async def test_retry_api_queues_a_failed_task_again_and_refuses_others(harness):
    h = await harness(delivery__max_attempts=1)
    data = blob(5000)
    url = h.server.add(data)
    h.server.fail(url, 1, 503)
    await h.post(training(weights(url)))
    failed = await h.settled()
    assert (failed["state"], failed["reason"]) == ("failed", "http_503")

    response = await h.client.post(f"/api/deliveries/{failed['id']}/retry")
    assert response.status == 200, await response.text()
    queued = await response.json()
    assert queued["id"] == failed["id"]
    assert queued["state"] in ("queued", "running", "succeeded")
    assert queued["attempts"] <= 1
    task = await h.settled()
    assert task["state"] == "succeeded", task
    assert task["reason"] is None
    assert h.files() == {"trained_model.tar": data}

    again = await h.client.post(f"/api/deliveries/{task['id']}/retry")
    assert again.status == 409
    assert (await again.json())["error"]["code"] == "delivery_not_failed"
    for missing in ("999999", "abc", "-1"):
        gone = await h.client.post(f"/api/deliveries/{missing}/retry")
        assert gone.status == 404, missing


async def test_cli_lists_deliveries_and_retries_a_failed_one(harness, tmp_path):
    h = await harness(delivery__max_attempts=1)
    data = blob(5000)
    url = h.server.add(data)
    h.server.fail(url, 1, 503)
    await h.post(training(weights(url)))
    failed = await h.settled()
    assert failed["state"] == "failed"
    data_dir = ["--data-dir", str(tmp_path / "data")]

    listed = await asyncio.to_thread(
        run_cli, "deliveries", "--job", JOB, "--json", *data_dir
    )
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["id"], row["state"], row["reason"]) == (
        failed["id"],
        "failed",
        "http_503",
    )
    table = await asyncio.to_thread(
        run_cli, "deliveries", "--state", "failed", *data_dir
    )
    assert table.returncode == 0, table.stderr
    header, line = table.stdout.splitlines()
    assert header.split() == ["ID", "JOB", "DEST", "STATE", "TRIES", "BYTES", "REASON"]
    assert line.split() == [
        str(failed["id"]),
        JOB,
        "local",
        "failed",
        "1/1",
        "0/?",
        "http_503",
    ]

    retried = await asyncio.to_thread(run_cli, "retry", str(failed["id"]), *data_dir)
    assert retried.returncode == 0, retried.stderr
    assert f"delivery {failed['id']} queued again" in retried.stdout
    task = await h.settled()
    assert task["state"] == "succeeded", task
    assert h.files() == {"trained_model.tar": data}

    refused = await asyncio.to_thread(run_cli, "retry", str(task["id"]), *data_dir)
    assert refused.returncode == 1
    assert "succeeded" in refused.stderr
    unknown = await asyncio.to_thread(run_cli, "retry", "424242", *data_dir)
    assert unknown.returncode == 1
    assert "no delivery with id 424242" in unknown.stderr


async def test_progress_is_visible_in_the_api_during_a_download(harness):
    h = await harness(delivery__lease_s=1.5)
    data = blob(2 * MIB)
    url = h.server.add(data)
    with h.server.edit(url) as script:
        script.stalls.append(MIB)
    await h.post(training(weights(url)))
    await sent_at_least(h.server, url, MIB)

    async def progressed() -> dict[str, Any] | None:
        task = await h.task()
        return task if task["bytes_done"] >= MIB else None

    task = await eventually(progressed, 10, "progress in the API")
    assert task["state"] == "running"
    assert task["bytes_done"] == MIB
    assert task["bytes_total"] == len(data)
    listed = (await h.get("/api/deliveries?state=running"))["deliveries"]
    assert [t["id"] for t in listed] == [task["id"]]
    h.server.release()
    done = await h.settled()
    assert done["state"] == "succeeded"
    assert (done["bytes_done"], done["bytes_total"]) == (len(data), len(data))


async def test_concurrency_limit_holds_other_jobs_back(harness):
    h = await harness(delivery__concurrency=1)
    first, second = blob(MIB, 1), blob(1000, 2)
    first_url, second_url = h.server.add(first), h.server.add(second)
    with h.server.edit(first_url) as script:
        script.stalls.append(100_000)
    await h.post(training(weights(first_url), job_id="job-one"))
    await sent_at_least(h.server, first_url, 100_000)
    await h.post(training(weights(second_url), job_id="job-two"))
    await asyncio.sleep(1.5)  # longer than a poll: the second job had its chance
    assert h.server.requests(second_url) == []
    h.server.release()
    assert (await h.settled("job-one"))["state"] == "succeeded"
    assert (await h.settled("job-two"))["state"] == "succeeded"
    assert h.files("job-one") == {"trained_model.tar": first}
    assert h.files("job-two") == {"trained_model.tar": second}


async def test_job_without_output_urls_succeeds_with_no_files(harness):
    h = await harness()
    await h.post(training({"version": "acme/x:1", "note": "no files here"}))
    task = await h.settled()
    assert task["state"] == "succeeded"
    assert task["result"]["files"] == []
    assert h.server.requests() == []


# -- the pure parts --------------------------------------------------------------


def test_output_urls_finds_every_url_in_document_order_once():
    output = {
        "version": "acme/model:abc",
        "weights": "https://replicate.delivery/a/w.tar",
        "images": [
            "https://replicate.delivery/b/1.png",
            ["https://replicate.delivery/b/2.png", 3, None, True],
            {"again": "https://replicate.delivery/a/w.tar"},
        ],
        "text": "see https://replicate.delivery/c/inline.txt",
        "data": "data:image/png;base64,xyz",
        "relative": "/path/only.tar",
    }
    assert output_urls(output) == [
        "https://replicate.delivery/a/w.tar",
        "https://replicate.delivery/b/1.png",
        "https://replicate.delivery/b/2.png",
    ]
    assert output_urls("https://x.test/one.bin") == ["https://x.test/one.bin"]
    assert output_urls(None) == []
    assert output_urls(42) == []
    assert output_urls("http://x.test/a") == ["http://x.test/a"]  # then blocked


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://replicate.delivery/a/b.tar", True),
        ("https://pbxt.replicate.delivery/a/b.tar", True),
        ("https://REPLICATE.delivery/a", True),
        ("https://replicate.delivery:443/a", True),
        ("https://replicate.delivery:8443/a", False),
        ("http://replicate.delivery/a", False),
        ("https://replicate.delivery.evil.test/a", False),
        ("https://evilreplicate.delivery/a", False),
        ("https://user@replicate.delivery/a", False),
        ("https://replicate.delivery@evil.test/a", False),
        ("https://evil.test\\@replicate.delivery/a", False),
        ("https://replicate.delivery\\.evil.test/a", False),
        ("https://evil.test#@replicate.delivery/a", False),
        ("https://evil.test?@replicate.delivery/a", False),
        ("https://replicate.delivery./a", False),
        ("https:///nohost", False),
        ("https://[::1]:443/a", False),
        ("https://replicate.delivery:99999/a", False),
        ("not a url", False),
    ],
)
def test_host_allowed_needs_https_on_an_allowed_host(url, allowed):
    assert host_allowed(url, ("replicate.delivery",)) is allowed


def test_host_allowed_with_a_port_requires_that_port():
    hosts = ("localhost:8443",)
    assert host_allowed("https://localhost:8443/x", hosts)
    assert not host_allowed("https://localhost/x", hosts)
    assert not host_allowed("https://localhost:9443/x", hosts)
    assert not host_allowed("https://127.0.0.1:8443/x", hosts)
    assert not host_allowed("https://localhost:8443/x", ())


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://h/xezq/abc/trained_model.tar", "trained_model.tar"),
        ("https://h/a/..%2F..%2Fetc%2Fpasswd", "passwd"),
        ("https://h/a/%2Fabs%2Fname.bin", "name.bin"),
        ("https://h/a/..%5C..%5Cwin.exe", "win.exe"),
        ("https://h/a/x%00y.tar", "xy.tar"),
        ("https://h/a/.env", "env"),
        ("https://h/a/...", "fallback"),
        ("https://h/a/..", "fallback"),
        ("https://h/", "fallback"),
        ("https://h/a/dir/", "dir"),
        ("https://h/a/my%20model%20(1).tar", "my_model_1_.tar"),
        ("https://h/a/file.tar?name=../../x", "file.tar"),
        ("https://h/a/%252F..%252Fx", "2F.._2Fx"),  # decoded once only
        ("https://h/a/\uff0e\uff0e\uff0fx", "x"),  # fullwidth ../ after NFKC
    ],
)
def test_safe_name_is_a_bare_portable_name(url, name):
    assert safe_name(url, fallback="fallback") == name


def test_safe_name_shortens_long_names_and_keeps_the_suffix():
    name = safe_name("https://h/" + "a" * 500 + ".safetensors", fallback="f")
    assert len(name.encode()) == limits.MAX_OUTPUT_NAME_BYTES
    assert name.endswith(".safetensors")
    bare = safe_name("https://h/" + "b" * 500, fallback="f")
    assert len(bare.encode()) <= limits.MAX_OUTPUT_NAME_BYTES


def test_plan_files_gives_each_url_a_distinct_name_in_order():
    urls = [
        "https://h/1/model.tar.gz",
        "https://h/2/model.tar.gz",
        "https://h/3/MODEL.tar.gz",
        "https://h/4/model-2.tar.gz",
        "https://h/",
        "https://h/6/..",
    ]
    names = [f.name for f in plan_files(urls)]
    assert names == [
        "model.tar.gz",
        "model-2.tar.gz",
        "MODEL-3.tar.gz",
        "model-2-2.tar.gz",
        "output-5",
        "output-6",
    ]
    assert len({n.lower() for n in names}) == len(names)
    assert [f.url for f in plan_files(urls)] == urls
    assert plan_files(urls) == plan_files(urls)  # the same every time


def test_backoff_doubles_with_jitter_and_never_beats_retry_after():
    base = 2.0
    for attempts in range(1, 8):
        ceiling = min(limits.DELIVERY_BACKOFF_MAX_S, base * 2 ** (attempts - 1))
        delays = [queue.backoff_s(attempts, None, base) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert queue.backoff_s(0, None, base) <= base
    assert queue.backoff_s(30, None, base) <= limits.DELIVERY_BACKOFF_MAX_S
    assert queue.backoff_s(1, 120.0, base) >= 120.0
    assert queue.backoff_s(1, 0.0, base) >= base / 2


# -- found by the fresh-clone review ---------------------------------------------


async def test_output_arriving_after_success_is_delivered_when_it_comes(harness):
    h = await harness()
    await h.post(training(None))  # succeeded, but its output is not known yet
    first = await h.settled()
    assert first["state"] == "succeeded"
    assert first["result"]["files"] == []

    data = blob(4096, seed=7)
    url = h.server.add(data)
    reply = await h.post(training(weights(url)))
    assert reply["outcome"] == "filled"

    async def delivered() -> bool:
        task = await h.task()
        return task["state"] == "succeeded" and bool(task["result"]["files"])

    await eventually(delivered, 20, "the late output to be delivered")
    assert h.files() == {"trained_model.tar": data}


async def test_retry_with_an_id_beyond_sqlite_integers_is_a_404(harness):
    h = await harness()
    for task_id in ("9223372036854775808", "9" * 30, "1" * 5000):
        response = await h.client.post(f"/api/deliveries/{task_id}/retry")
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "delivery_not_found"


def test_cli_retry_refuses_an_id_that_is_not_a_small_number(tmp_path):
    for bad in ("99999999999999999999", "\u0663", "-1"):
        result = run_cli("retry", bad, "--data-dir", str(tmp_path))
        assert result.returncode == 2
        assert "not a delivery id" in result.stderr
        assert "Traceback" not in result.stderr


def test_host_with_an_empty_label_is_not_allowed():
    assert not host_allowed("https://a..replicate.delivery/x", ["replicate.delivery"])
    assert not host_allowed("https://a..localhost:8443/x", ["localhost:8443"])
    assert host_allowed("https://pbxt.replicate.delivery/x", ["replicate.delivery"])
