"""Ingest benchmark for replicate-webhookd (not a test): rate, durability, size.

Run from the checkout:  .venv/bin/python bench/ingest.py

(a) signed deliveries per second and p50/p99 latency through the real daemon
    (`python -m daemon serve`, allowlist 127.0.0.1, signature check, commit)
    against a bare aiohttp handler that answers 200 and does nothing, each in its
    own process, both driven by the same load generator (an aiohttp client in its
    own process, fixed concurrency and duration, pre-signed requests, every one a
    distinct webhook-id; or wrk with a Lua script, `--loadgen wrk`);
(b) SIGKILL of the daemon under load, restart, and a count of the acknowledged
    deliveries found in the database;
(c) the database size (main file + WAL) after 2,000 logs deliveries for one job
    whose cumulative log grows to 2 MiB, against the size of that log.

Everything listens on 127.0.0.1 only; temporary directories are removed and every
process started here is ended by its pid. Exit status 1 means a durability check
failed (an acknowledged delivery is missing) or a phase could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hmac
import io
import itertools
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WEBHOOK_PATH = "/api/webhooks/replicate"
HOST = "127.0.0.1"
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
START_TIMEOUT_S = 20.0
LOG_TARGET_BYTES = 2 * 1024 * 1024
LOG_DELIVERIES = 2000
DELIVERIES_PER_JOB = 8  # one "starting", then growing "processing" snapshots


# --------------------------------------------------------------------- signing


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def sign(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """Standard Webhooks v1, written here independently of the daemon's code."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.digest(key, content, "sha256")).decode()


def signed(secret: str, msg_id: str, body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": sign(secret, msg_id, stamp, body),
    }


_TQDM = (
    "flux_train_replicate:  {pct:2d}%|#####     | {step}/1000 [02:41<24:12,  "
    "1.61s/it, lr: 4.0e-04 loss: 4.178e-01]\n"
)


def training_body(job_id: str, status: str, logs: str) -> bytes:
    """A body shaped like a real Replicate training snapshot (about 1.5 KB)."""
    return json.dumps(
        {
            "id": job_id,
            "model": "ostris/flux-dev-lora-trainer",
            "version": "e440909d3512c31646ee2e0c7d6f6f4923224863a6a10c494606e79fb",
            "input": {"steps": 1000, "lora_rank": 16, "trigger_word": "TOK"},
            "logs": logs,
            "output": None,
            "data_removed": False,
            "error": None,
            "source": "api",
            "status": status,
            "created_at": "2025-03-04T10:15:02.118000Z",
            "started_at": "2025-03-04T10:15:19.483105Z",
            "completed_at": None,
            "metrics": {},
            "urls": {
                "cancel": f"https://api.replicate.com/v1/trainings/{job_id}/cancel",
                "get": f"https://api.replicate.com/v1/trainings/{job_id}",
                "web": f"https://replicate.com/p/{job_id}",
            },
        }
    ).encode()


def mixed_requests(
    secret: str, prefix: str, count: int
) -> list[tuple[dict[str, str], bytes]]:
    """`count` distinct deliveries: per job a start, then growing log snapshots."""
    requests = []
    for k in range(count):
        job_id = f"{prefix}j{k // DELIVERIES_PER_JOB:07d}"
        step = k % DELIVERIES_PER_JOB
        logs = "Starting train job\n" + "".join(
            _TQDM.format(pct=i * 10 % 100, step=i * 100) for i in range(step * 2)
        )
        body = training_body(job_id, "starting" if step == 0 else "processing", logs)
        requests.append((signed(secret, f"msg_{prefix}{k:08d}", body), body))
    return requests


# ------------------------------------------------------------------ processes


@dataclass
class Proc:
    """A subprocess started by this bench; `end` stops it by its pid."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def end(self, sig: int = signal.SIGTERM, timeout_s: float = 15) -> int:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)
            try:
                return self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
        return self.popen.wait(timeout=timeout_s)


@dataclass
class Bench:
    tmp: Path
    secret: str
    procs: list[Proc] = field(default_factory=list)

    def spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> Proc:
        log_path = self.tmp / f"{name}-{time.time_ns()}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [sys.executable, *args],
                cwd=REPO,
                env={**os.environ, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def listening(self, proc: Proc) -> Proc:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            match = LISTENING.search(proc.log_text())
            if match:
                proc.port = int(match[1])
                return proc
            if proc.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{proc.name} did not start:\n{proc.log_text()[-2000:]}")

    def daemon(self, data_dir: Path) -> Proc:
        env = {
            "REPLICATE_WEBHOOK_SECRET": self.secret,
            "REPLICATE_WEBHOOKD_ALLOWED_IPS": "127.0.0.1",
        }
        args = ["-m", "daemon", "serve", "--port", "0", "--data-dir", str(data_dir)]
        return self.listening(self.spawn("daemon", args, env))

    def baseline(self) -> Proc:
        return self.listening(self.spawn("baseline", [__file__, "--role", "baseline"]))

    def end_all(self) -> None:
        for proc in self.procs:
            proc.end(signal.SIGKILL, timeout_s=10)


# ------------------------------------------------------------- (a) the rate


@dataclass
class LoadResult:
    sent: int
    ok: int
    errors: int
    statuses: dict[str, int]
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    exhausted: bool = False

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    def line(self) -> str:
        other = {code: n for code, n in self.statuses.items() if code != "200" and n}
        extra = f" non-200={other}" if other else ""
        extra += f" errors={self.errors}" if self.errors else ""
        extra += " (ran out of pre-signed requests)" if self.exhausted else ""
        return (
            f"{self.rate:8.0f} deliveries/s  p50 {self.p50_ms:6.2f} ms  "
            f"p99 {self.p99_ms:6.2f} ms  ({self.ok} x 200 in {self.elapsed_s:.1f} s"
            f"{extra})"
        )


def run_loadgen(
    bench: Bench,
    url: str,
    args: argparse.Namespace,
    prefix: str,
    *,
    acked: Path | None = None,
    started: Path | None = None,
    kill: Proc | None = None,
    cycle: bool = False,
) -> LoadResult:
    """The aiohttp load generator in its own process; optionally SIGKILL `kill`.

    `cycle` starts the pre-signed requests over when they run out: only for the
    baseline, which checks nothing, so that it is measured for the whole duration.
    """
    out = bench.tmp / f"load-{prefix}.json"
    argv = [
        __file__, "--role", "loadgen", "--url", url + WEBHOOK_PATH,
        "--prefix", prefix, "--out", str(out),
        "--concurrency", str(args.concurrency), "--duration", str(args.duration),
        "--requests", str(args.requests),
    ]  # fmt: skip
    if acked and started:
        argv += ["--acked", str(acked), "--started", str(started)]
    if cycle:
        argv.append("--cycle")
    proc = bench.spawn("loadgen", argv, {"BENCH_SECRET": bench.secret})
    if kill is not None and started is not None:
        _kill_after_start(proc, started, kill, args.kill_after)
    code = proc.popen.wait(timeout=args.duration + 90)
    if code != 0 or not out.exists():
        raise RuntimeError(f"load generator failed ({code}):\n{proc.log_text()}")
    return LoadResult(**json.loads(out.read_text()))


def _kill_after_start(loadgen: Proc, started: Path, victim: Proc, after: float) -> None:
    deadline = time.monotonic() + 60
    while not started.exists():
        if loadgen.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"load generator never started:\n{loadgen.log_text()}")
        time.sleep(0.02)
    time.sleep(after)
    victim.end(signal.SIGKILL)


def run_wrk(
    bench: Bench,
    url: str,
    args: argparse.Namespace,
    prefix: str,
    *,
    cycle: bool = False,
) -> LoadResult:
    """wrk with pre-signed requests, one slice per thread, read by init()."""
    threads = 2
    data = bench.tmp / f"wrk-{prefix}.jsonl"
    with data.open("w") as handle:
        for headers, body in mixed_requests(bench.secret, prefix, args.requests):
            handle.write(json.dumps({"h": headers, "b": body.decode()}) + "\n")
    script = bench.tmp / "bench.lua"
    lua = WRK_LUA.replace("@DATA@", str(data)).replace("@CYCLE@", str(cycle).lower())
    script.write_text(lua)
    seconds = max(1, round(args.duration))
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{args.concurrency}", f"-d{seconds}s",
         "--latency", "-s", str(script), url + WEBHOOK_PATH],
        capture_output=True, text=True, timeout=seconds + 60, check=False,
    )  # fmt: skip
    match = re.search(r"^BENCH (\{.*\})$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed:\n{out.stdout}\n{out.stderr}")
    return LoadResult(**json.loads(match[1]))


# Requests are built inside init() from a JSON-lines file: thread t takes every
# line whose number is t modulo the thread count, so no webhook-id is sent twice;
# a thread that runs out stops itself and says so (or, for the baseline, which
# checks nothing, starts over).
WRK_LUA = r"""
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  local nthreads = counter
  reqs, index, exhausted = {}, 0, 0
  local n = 0
  for line in io.lines("@DATA@") do
    if n % 2 == tid then
      local h = line:match('"h": (%b{})')
      local b = line:match('"b": (".*")}$')
      local headers = {}
      for k, v in h:gmatch('"([^"]+)": "([^"]*)"') do headers[k] = v end
      local body = b:sub(2, -2):gsub('\\(.)', function(c)
        if c == "n" then return "\n" end
        return c
      end)
      table.insert(reqs, wrk.format("POST", nil, headers, body))
    end
    n = n + 1
  end
end
function request()
  index = index + 1
  if index > #reqs and @CYCLE@ then
    index = 1
  elseif index > #reqs then
    exhausted = 1
    wrk.thread:stop()
    return reqs[#reqs]
  end
  return reqs[index]
end
function done(summary, latency, requests)
  local spent = 0
  for _, t in ipairs(threads) do spent = spent + t:get("exhausted") end
  local s = summary
  local errors = s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout
  io.write(string.format(
    'BENCH {"sent": %d, "ok": %d, "errors": %d, "statuses": {"non-2xx": %d}, ' ..
    '"elapsed_s": %f, "p50_ms": %f, "p99_ms": %f, "exhausted": %s}\n',
    s.requests, s.requests - s.errors.status, errors, s.errors.status,
    s.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    spent > 0 and "true" or "false"))
end
"""


def phase_rate(bench: Bench, args: argparse.Namespace) -> float:
    """Alternate baseline and daemon runs; compare the best rate of each."""
    use_wrk = args.loadgen == "wrk"
    drive = run_wrk if use_wrk else run_loadgen
    print(
        f"(a) rate: loadgen={'wrk' if use_wrk else 'aiohttp client'} "
        f"concurrency={args.concurrency} duration={args.duration:.0f} s "
        f"rounds={args.rounds}, pre-signed deliveries (start + log snapshots, "
        "~1.5 KB), each webhook-id sent once to the daemon (the baseline, which "
        "checks nothing, reuses them)"
    )
    base_results, daemon_results = [], []
    for round_no in range(1, args.rounds + 1):
        base = bench.baseline()
        base_results.append(drive(bench, base.url, args, f"base{round_no}", cycle=True))
        base.end()
        print(f"    baseline (bare aiohttp, answers 200): {base_results[-1].line()}")

        daemon = bench.daemon(bench.tmp / f"rate{round_no}")
        result = drive(bench, daemon.url, args, f"rate{round_no}")
        code = daemon.end()
        print(f"    daemon (allowlist+signature+commit):  {result.line()}")
        if code != 0:
            raise RuntimeError(f"daemon exited {code}:\n{daemon.log_text()[-2000:]}")
        if result.ok != result.sent or result.errors:
            raise RuntimeError("the daemon refused deliveries during the rate run")
        daemon_results.append(result)
    best_base = max(base_results, key=lambda r: r.rate)
    best_daemon = max(daemon_results, key=lambda r: r.rate)
    ratio = best_daemon.rate / best_base.rate
    verdict = "met" if ratio >= 0.5 else "NOT met"
    print(
        f"    best of {args.rounds}: baseline {best_base.rate:.0f}/s, daemon "
        f"{best_daemon.rate:.0f}/s (p50 {best_daemon.p50_ms:.2f} ms, p99 "
        f"{best_daemon.p99_ms:.2f} ms); ratio daemon/baseline: {ratio:.2f} "
        f"(target >= 0.5: {verdict})"
    )
    return ratio


# -------------------------------------------------------- (b) crash under load


def phase_crash(bench: Bench, args: argparse.Namespace) -> bool:
    data_dir = bench.tmp / "crash"
    daemon = bench.daemon(data_dir)
    acked_path, started = bench.tmp / "acked.txt", bench.tmp / "started"
    result = run_loadgen(
        bench, daemon.url, args, "crash",
        acked=acked_path, started=started, kill=daemon,
    )  # fmt: skip
    acked = set(acked_path.read_text().split())
    restarted = bench.daemon(data_dir)  # recovers the WAL on open
    found = stored_webhook_ids(data_dir / "webhookd.sqlite3", "msg_crash")
    code = restarted.end()
    missing = acked - found
    print(
        f"(b) SIGKILL after {args.kill_after:.1f} s of load: acked={len(acked)} "
        f"found={len(acked & found)} missing={len(missing)} "
        f"(stored in all: {len(found)}, connection errors: {result.errors}; "
        f"restart exit {code})"
    )
    if missing:
        print(f"    LOST acknowledged deliveries, e.g. {sorted(missing)[:5]}")
    return not missing and code == 0 and bool(acked)


def stored_webhook_ids(path: Path, prefix: str) -> set[str]:
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT webhook_id FROM webhook_deliveries WHERE webhook_id LIKE ?",
            (prefix + "%",),
        ).fetchall()
    finally:
        conn.close()
    return {row[0] for row in rows}


# ------------------------------------------------------- (c) database size


def log_text(size: int) -> str:
    line_no, parts, total = 0, [], 0
    while total < size:
        line = _TQDM.format(pct=line_no % 100, step=line_no % 1000)
        parts.append(line)
        total += len(line)
        line_no += 1
    return "".join(parts)[:size]


async def send_log_snapshots(bench: Bench, url: str) -> tuple[int, float]:
    import aiohttp

    full = log_text(LOG_TARGET_BYTES)
    job_id = "sizejob0000000000000000001"
    ok = 0
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        for k in range(1, LOG_DELIVERIES + 1):
            size = -(-LOG_TARGET_BYTES * k // LOG_DELIVERIES)
            body = training_body(job_id, "processing", full[:size])
            headers = signed(bench.secret, f"msg_size{k:06d}", body)
            data = io.BytesIO(body)  # aiohttp warns about large raw bytes
            async with session.post(
                url + WEBHOOK_PATH, data=data, headers=headers
            ) as r:
                await r.read()
                ok += r.status == 200
    return ok, time.perf_counter() - started


def phase_size(bench: Bench) -> float:
    data_dir = bench.tmp / "size"
    daemon = bench.daemon(data_dir)
    ok, elapsed = asyncio.run(send_log_snapshots(bench, daemon.url))
    db_path = data_dir / "webhookd.sqlite3"
    main, wal = file_size(db_path), file_size(Path(f"{db_path}-wal"))
    logs_bytes = stored_log_bytes(db_path)
    code = daemon.end()
    after = file_size(db_path) + file_size(Path(f"{db_path}-wal"))
    ratio = (main + wal) / LOG_TARGET_BYTES
    verdict = "met" if ratio < 3 else "NOT met"
    print(
        f"(c) {ok}/{LOG_DELIVERIES} logs deliveries for one job in {elapsed:.1f} s, "
        f"final log {logs_bytes} B stored"
    )
    print(
        f"    database while running: main {main} B + WAL {wal} B = {main + wal} B "
        f"= {ratio:.2f}x the log (target < 3x: {verdict}); "
        f"after a clean stop: {after} B"
    )
    if ok != LOG_DELIVERIES or logs_bytes != LOG_TARGET_BYTES or code != 0:
        raise RuntimeError(f"size phase incomplete:\n{daemon.log_text()[-2000:]}")
    return ratio


def file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def stored_log_bytes(path: Path) -> int:
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT sum(length(data)) FROM job_log_chunks").fetchone()
    finally:
        conn.close()
    return int(row[0] or 0)


# ------------------------------------------------ roles run in subprocesses


def role_baseline() -> None:
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    async def main() -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post(WEBHOOK_PATH, answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        port = runner.addresses[0][1]
        print(f"listening on http://{HOST}:{port}{WEBHOOK_PATH}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


def role_loadgen(args: argparse.Namespace) -> None:
    secret = os.environ["BENCH_SECRET"]
    requests = mixed_requests(secret, args.prefix, args.requests)
    result, acked = asyncio.run(_drive(args, requests))
    if args.acked:
        Path(args.acked).write_text("\n".join(acked) + "\n")
    Path(args.out).write_text(json.dumps(result))


async def _drive(
    args: argparse.Namespace, requests: list[tuple[dict[str, str], bytes]]
) -> tuple[dict[str, Any], list[str]]:
    import aiohttp

    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    acked: list[str] = []
    errors = 0
    numbers = range(len(requests))
    pending: Iterator[int] = itertools.cycle(numbers) if args.cycle else iter(numbers)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal errors
            for index in pending:
                if time.perf_counter() >= deadline:
                    return
                headers, body = requests[index]
                sent = time.perf_counter()
                try:
                    async with session.post(args.url, data=body, headers=headers) as r:
                        await r.read()
                except (aiohttp.ClientError, OSError, TimeoutError):
                    errors += 1
                    return  # the server is gone: this worker stops
                latencies.append(time.perf_counter() - sent)
                statuses[str(r.status)] += 1
                if r.status == 200:
                    acked.append(headers["webhook-id"])

        if args.started:
            Path(args.started).touch()
        began = time.perf_counter()
        deadline = began + args.duration
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    sent = len(latencies) + errors
    return {
        "sent": sent,
        "ok": statuses["200"],
        "errors": errors,
        "statuses": dict(statuses),
        "elapsed_s": elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "exhausted": not args.cycle and sent >= len(requests),
    }, acked


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[
        min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    ]


# ------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--requests", type=int, default=30000, help="pre-signed requests per run"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating baseline/daemon runs"
    )
    parser.add_argument("--kill-after", type=float, default=1.5)
    parser.add_argument(
        "--loadgen",
        choices=("aiohttp", "wrk"),
        default="aiohttp",
        help="load generator for (a); (b) always uses the aiohttp one",
    )
    parser.add_argument(
        "--role", choices=("main", "baseline", "loadgen"), default="main"
    )
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--acked", help=argparse.SUPPRESS)
    parser.add_argument("--started", help=argparse.SUPPRESS)
    parser.add_argument("--cycle", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    if args.role == "baseline":
        role_baseline()
        return 0
    if args.role == "loadgen":
        role_loadgen(args)
        return 0
    if args.loadgen == "wrk" and shutil.which("wrk") is None:
        print("wrk is not installed; use the default aiohttp load generator")
        return 2
    began = time.monotonic()
    print(
        f"replicate-webhookd ingest bench: python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, everything on {HOST}"
    )
    bench = Bench(Path(tempfile.mkdtemp(prefix="webhookd-bench-")), new_secret())
    durable = False
    try:
        phase_rate(bench, args)
        durable = phase_crash(bench, args)
        phase_size(bench)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"bench failed: {exc}")
        return 1
    finally:
        bench.end_all()
        with contextlib.suppress(OSError):
            shutil.rmtree(bench.tmp)
        print(f"total {time.monotonic() - began:.0f} s")
    return 0 if durable else 1


if __name__ == "__main__":
    sys.exit(main())
