"""Delivery benchmark for replicate-webhookd (not a test): download and S3 upload.

Run from the checkout:  .venv/bin/python bench/deliver.py [--size-mib 1024]

(a) download: a file served over https by a loopback aiohttp server, fetched by
    `curl` and then by the real daemon (`python -m daemon serve`, a succeeded job
    whose output is that file's URL); throughput of each, the ratio
    daemon/curl (target >= 0.8), and the daemon's peak RSS (target < 150 MiB);
(b) S3: the same file uploaded by the daemon's S3 publisher into moto's S3 server,
    against boto3's `upload_file` of the same file into the same server, and the
    ratio daemon/boto3.

Everything listens on 127.0.0.1 only; temporary directories are removed and every
process started here is ended by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import Bench, Proc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from daemon.receive.signature import decode_secret, sign  # noqa: E402

CHUNK = 1024 * 1024
BUCKET = "bench-outputs"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench-key-id",
    "AWS_SECRET_ACCESS_KEY": "bench-secret-key",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def main() -> int:
    args = parse_args()
    if args.role == "fileserver":
        return serve_file(Path(args.file), Path(args.cert), Path(args.key))
    if args.role == "moto":
        return serve_moto()
    tmp = Path(tempfile.mkdtemp(prefix="bench-deliver-"))
    bench = Bench(tmp, "whsec_" + os.urandom(24).hex())
    try:
        return run(bench, tmp, args.size_mib)
    finally:
        bench.end_all()
        shutil.rmtree(tmp, ignore_errors=True)


def run(bench: Bench, tmp: Path, size_mib: int) -> int:
    print(f"replicate-webhookd deliver bench: {size_mib} MiB, everything on 127.0.0.1")
    source = tmp / "trained_model.tar"
    digest = make_file(source, size_mib)
    cert, key = make_certificate(tmp)
    server = bench.listening(
        bench.spawn(
            "fileserver",
            [
                __file__,
                "--role",
                "fileserver",
                "--file",
                str(source),
                "--cert",
                str(cert),
                "--key",
                str(key),
            ],
        )
    )
    url = f"https://localhost:{server.port}/xezq/bench/{source.name}"
    moto = bench.listening(bench.spawn("moto", [__file__, "--role", "moto"], AWS_ENV))
    endpoint = f"http://127.0.0.1:{moto.port}"
    create_bucket(endpoint)

    curl_s = timed_curl(url, cert, tmp / "curl.bin")
    daemon = start_daemon(bench, tmp, server.port, cert, endpoint)
    local_s, s3_s = deliver_through_daemon(bench, daemon, url)
    peak_rss = peak_rss_bytes(daemon)
    stored = tmp / "out" / "benchjob00000000000000000" / source.name
    ok = sha256_of(stored) == digest
    boto3_s = timed_boto3_upload(endpoint, source)

    size = size_mib * CHUNK
    print("(a) download over https from a loopback server")
    print(f"    curl:   {rate(size, curl_s)}")
    print(f"    daemon: {rate(size, local_s)}  sha256 {'matches' if ok else 'WRONG'}")
    print(f"    ratio daemon/curl: {curl_s / local_s:.2f} (target >= 0.8)")
    print(f"    daemon peak RSS: {peak_rss / CHUNK:.0f} MiB (target < 150 MiB)")
    print("(b) upload into moto's S3 server")
    print(f"    boto3 upload_file: {rate(size, boto3_s)}")
    print(f"    daemon publisher:  {rate(size, s3_s)}")
    print(f"    ratio daemon/boto3: {boto3_s / s3_s:.2f}")
    return 0 if ok else 1


def make_file(path: Path, size_mib: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(CHUNK)
    with path.open("wb") as handle:
        for index in range(size_mib):
            chunk = index.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            handle.write(chunk)
    return digest.hexdigest()


def make_certificate(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def timed_curl(url: str, cert: Path, target: Path) -> float:
    started = time.monotonic()
    subprocess.run(
        ["curl", "-sS", "--fail", "--cacert", str(cert), "-o", str(target), url],
        check=True,
    )
    elapsed = time.monotonic() - started
    target.unlink()
    return elapsed


def start_daemon(bench: Bench, tmp: Path, port: int, cert: Path, endpoint: str) -> Proc:
    config = tmp / "daemon.toml"
    config.write_text(
        f'[server]\noutputs_dir = "{tmp / "out"}"\n'
        f'[delivery]\nallowed_hosts = ["localhost:{port}"]\nca_file = "{cert}"\n'
        f'[s3]\nbucket = "{BUCKET}"\nendpoint_url = "{endpoint}"\n'
    )
    env = {"REPLICATE_WEBHOOK_SECRET": bench.secret, **AWS_ENV}
    args = [
        "-m",
        "daemon",
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(tmp / "data"),
        "--config",
        str(config),
    ]
    return bench.listening(bench.spawn("daemon", args, env))


def deliver_through_daemon(bench: Bench, daemon: Proc, url: str) -> tuple[float, float]:
    job_id = "benchjob00000000000000000"
    body = json.dumps(
        {"id": job_id, "status": "succeeded", "output": {"weights": url}}
    ).encode()
    stamp = str(int(time.time()))
    entry = sign(decode_secret(bench.secret), "msg_bench", stamp, body)
    request = urllib.request.Request(
        daemon.url + "/api/webhooks/replicate",
        data=body,
        headers={
            "webhook-id": "msg_bench",
            "webhook-timestamp": stamp,
            "webhook-signature": entry,
        },
    )
    started = time.time()
    urllib.request.urlopen(request, timeout=10).read()
    tasks = wait_for_tasks(daemon, job_id)
    local_end = finished(tasks["local"])
    return local_end - started, finished(tasks["s3"]) - local_end


def wait_for_tasks(daemon: Proc, job_id: str, timeout_s: float = 900) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(
            f"{daemon.url}/api/deliveries?job_id={job_id}", timeout=10
        ) as answer:
            tasks = {t["destination"]: t for t in json.load(answer)["deliveries"]}
        if tasks and all(t["finished_at"] for t in tasks.values()):
            bad = {
                d: t["reason"] for d, t in tasks.items() if t["state"] != "succeeded"
            }
            if bad:
                raise RuntimeError(
                    f"delivery failed: {bad}\n{daemon.log_text()[-3000:]}"
                )
            return tasks
        time.sleep(0.2)
    raise RuntimeError("deliveries did not finish in time")


def finished(task: dict) -> float:
    return datetime.fromisoformat(task["finished_at"]).timestamp()


def peak_rss_bytes(proc: Proc) -> int:
    for line in Path(f"/proc/{proc.popen.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def create_bucket(endpoint: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, **_keys()).create_bucket(Bucket=BUCKET)


def timed_boto3_upload(endpoint: str, source: Path) -> float:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **_keys())
    started = time.monotonic()
    client.upload_file(str(source), BUCKET, "boto3/" + source.name)
    return time.monotonic() - started


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS_ENV["AWS_DEFAULT_REGION"],
    }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def rate(size: int, seconds: float) -> str:
    return f"{size / CHUNK / seconds:8.1f} MiB/s ({seconds:.2f} s)"


def serve_file(path: Path, cert: Path, key: Path) -> int:
    import ssl

    from aiohttp import web

    async def answer(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    async def main() -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        app = web.Application()
        app.router.add_get("/{tail:.*}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = runner.addresses[0][1]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    return 0


def serve_moto() -> int:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(f"listening on http://127.0.0.1:{server.get_host_and_port()[1]}", flush=True)
    while True:
        time.sleep(3600)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size")
    parser.add_argument(
        "--role", choices=["main", "fileserver", "moto"], default="main"
    )
    parser.add_argument("--file")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
