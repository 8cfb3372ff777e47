"""The `replicate-webhookd` command line.

serve             run the daemon
migrate           apply pending database migrations and exit
jobs              list recorded jobs as a table
job ID            one job's details and history (--logs for its log)
deliveries        list output delivery tasks (--job, --state)
retry ID          queue a failed delivery task again
verify-signature  check one delivery by hand: prints valid, invalid or expired
sign              print the three signature headers for a body, for curl tests
validate          check REPLICATE_API_TOKEN against Replicate; print the account
versions          list the trainer model's versions, newest first
cancel ID         cancel a job at Replicate and record its new state
status            Replicate's public status page (never fails on an outage)
secret            a fingerprint of Replicate's signing secret (--check: which
                  REPLICATE_WEBHOOK_SECRET entry matches); never the secret
billing           recorded spend in the current cost period against the limit
submit            start a training through the running daemon (daemon.cli_submit)
url [BASE]        the webhook URL for the public base URL (daemon.cli_url)

The last six, which talk to Replicate or report on its costs, live in
daemon.cli_replicate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daemon import __version__, cost
from daemon.config import load_settings
from daemon.deliver import queue
from daemon.observe import logs
from daemon.read import queries
from daemon.receive import signature
from daemon.record import db
from daemon.sensitive import secret_values
from daemon.settings import SECRET_ENV, ConfigError, Settings

log = logging.getLogger("daemon")

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _configure_logging()
        return int(args.run(args))
    except ConfigError as exc:
        print(f"replicate-webhookd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except db.SchemaError as exc:
        print(f"replicate-webhookd: database error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    # Imported here: cli_replicate builds on this module's helpers.
    from daemon import cli_replicate, cli_submit, cli_url

    parser = argparse.ArgumentParser(
        prog="replicate-webhookd",
        description="Receive, record and deliver Replicate training jobs.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = _command(commands, "serve", _serve, "run the daemon")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument(
        "--log-format", choices=logs.FORMATS, help="text (default) or json lines"
    )

    _command(commands, "migrate", _migrate, "apply pending database migrations")

    jobs = _command(commands, "jobs", _jobs, "list recorded jobs")
    jobs.add_argument("--status", help="only jobs with this status")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true", help="print JSON")

    job = _command(commands, "job", _job, "show one job and its history")
    job.add_argument("job_id", metavar="ID")
    job.add_argument("--logs", action="store_true", help="print the job's log")
    job.add_argument("--json", action="store_true", help="print JSON")

    tasks = _command(commands, "deliveries", _deliveries, "list delivery tasks")
    tasks.add_argument("--job", help="only this job's tasks")
    tasks.add_argument("--state", help="only tasks in this state")
    tasks.add_argument("--json", action="store_true", help="print JSON")

    again = _command(commands, "retry", _retry, "queue a failed delivery again")
    again.add_argument("task_id", type=_task_id, metavar="ID")

    check = commands.add_parser(
        "verify-signature", help="check a delivery's signature by hand"
    )
    check.set_defaults(run=_verify_signature)
    check.add_argument("--secret", required=True, help="whsec_... signing secret")
    check.add_argument("--id", required=True, help="webhook-id header")
    check.add_argument("--timestamp", required=True, help="webhook-timestamp header")
    check.add_argument("--signature", required=True, help="webhook-signature header")
    check.add_argument("--body-file", required=True, help="raw body file, - for stdin")
    check.add_argument("--now", type=int, help="clock to check against (unix seconds)")
    check.add_argument("--tolerance", type=int, default=300, help="seconds of skew")

    _command(
        commands,
        "validate",
        cli_replicate.validate_command,
        "check the Replicate API token",
    )
    versions = _command(
        commands, "versions", cli_replicate.versions_command, "list trainer versions"
    )
    versions.add_argument("--model", help="owner/name (default: the trainer model)")
    versions.add_argument("--json", action="store_true", help="print JSON")
    stop = _command(
        commands, "cancel", cli_replicate.cancel_command, "cancel a job at Replicate"
    )
    stop.add_argument("job_id", metavar="ID")
    health = _command(
        commands, "status", cli_replicate.status_command, "Replicate's status page"
    )
    health.add_argument("--json", action="store_true", help="print JSON")
    secret = _command(
        commands,
        "secret",
        cli_replicate.secret_command,
        "fingerprint the signing secret",
    )
    secret.add_argument(
        "--check", action="store_true", help=f"compare with ${SECRET_ENV}"
    )

    bill = _command(
        commands,
        "billing",
        cli_replicate.billing_command,
        "spend against the cost limit",
    )
    bill.add_argument("--json", action="store_true", help="print JSON")
    cli_submit.add_parser(commands, _command)

    url = _command(
        commands, "url", cli_url.url_command, "print the webhook URL to give Replicate"
    )
    url.add_argument(
        "base", nargs="?", metavar="BASE", help="public base URL (server.public_url)"
    )

    sign = commands.add_parser("sign", help="print signature headers for a body")
    sign.set_defaults(run=_sign)
    sign.add_argument("--secret", help=f"whsec_... secret (default: ${SECRET_ENV})")
    sign.add_argument("--id", help="webhook-id (default: a fresh msg_ id)")
    sign.add_argument("--timestamp", help="webhook-timestamp (default: now)")
    sign.add_argument("--body-file", required=True, help="raw body file, - for stdin")
    return parser


def _command(
    commands: Any, name: str, run: Any, help_text: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
    parser.set_defaults(run=run)
    parser.add_argument("--config", help="TOML settings file")
    parser.add_argument("--data-dir", help="where the database lives")
    return parser


def _task_id(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise argparse.ArgumentTypeError(f"not a delivery id: {text!r}")
    return int(text)


def _configure_logging() -> None:
    level = os.environ.get("REPLICATE_WEBHOOKD_LOG_LEVEL", "INFO").upper()
    if level not in logs.LEVELS:
        raise ConfigError(
            f"REPLICATE_WEBHOOKD_LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR, "
            f"got {level!r}"
        )
    # Text until the settings are read; `serve` then applies log.format.
    logs.configure(level)


def settings_for(
    args: argparse.Namespace, *, require_secret: bool, stored: bool = True
) -> Settings:
    """Settings from the file, the environment and the flags; with `stored`, the
    provider settings a running daemon was given through the API on top."""
    overrides = {
        "server.host": getattr(args, "host", None),
        "server.port": getattr(args, "port", None),
        "server.data_dir": args.data_dir,
        "log.format": getattr(args, "log_format", None),
    }
    settings = load_settings(
        os.environ,
        config_path=args.config,
        overrides=overrides,
        require_secret=require_secret,
    )
    if stored and settings.database_path.exists():
        from daemon.replicate.provider import read_stored, with_stored

        settings = with_stored(settings, read_stored(settings.database_path))
    return settings


def _serve(args: argparse.Namespace) -> int:
    from daemon.serve import serve  # the server stack loads only for this command

    settings = settings_for(args, require_secret=True, stored=False)
    logs.use_format(settings.log_format)
    logs.redact(secret_values(settings))
    _check_folder("server.data_dir", settings.data_dir)
    _check_folder("server.outputs_dir", settings.outputs_dir)
    try:
        asyncio.run(serve(settings))
    except (OSError, sqlite3.Error) as exc:
        print(f"replicate-webhookd: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _check_folder(key: str, path: Path) -> None:
    """Create a state folder, or stop before listening if it cannot be used."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot use {str(path)!r}: {exc.strerror}") from None


def _migrate(args: argparse.Namespace) -> int:
    settings = settings_for(args, require_secret=False)
    _check_folder("server.data_dir", settings.data_dir)
    conn = db.connect(settings.database_path, synchronous=settings.synchronous)
    try:
        applied = db.migrate(conn)
    finally:
        conn.close()
    print(f"{settings.database_path}: " + (", ".join(applied) or "already current"))
    return 0


def _jobs(args: argparse.Namespace) -> int:
    path = existing_database(settings_for(args, require_secret=False))
    jobs = asyncio.run(read_database(path, "list", args.status, max(1, args.limit)))
    if args.json:
        print(json.dumps(jobs, indent=2))
        return 0
    rows = [("ID", "STATUS", "MODEL", "CREATED", "COMPLETED", "PREDICT_S")]
    for item in jobs:
        predict = item["predict_time_s"]
        rows.append(
            (
                item["id"],
                item["status"],
                item["model"] or "-",
                item["created_at"] or item["first_seen_at"],
                item["completed_at"] or "-",
                f"{predict:.1f}" if predict is not None else "-",
            )
        )
    print_table(rows)
    return 0


def print_table(table: Sequence[Sequence[object]]) -> None:
    rows = [[terminal_safe(str(cell)) for cell in row] for row in table]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (
            str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
        )
        print("  ".join(cells).rstrip())


def terminal_safe(text: str) -> str:
    """Stored text comes from webhooks: show control characters, never send them."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _job(args: argparse.Namespace) -> int:
    path = existing_database(settings_for(args, require_secret=False))
    if args.logs:
        found = asyncio.run(read_database(path, "logs", args.job_id))
        if found is None:
            print(f"no job with id {args.job_id!r}", file=sys.stderr)
            return 1
        sys.stdout.buffer.write(found[0])
        return 0
    job = asyncio.run(read_database(path, "get", args.job_id))
    if job is None:
        print(f"no job with id {args.job_id!r}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    history = job.pop("history")
    for key, value in job.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        print(f"{key:>16}: {'-' if shown is None else terminal_safe(str(shown))}")
    print("\nhistory:")
    for item in history:
        print(
            f"  {item['received_at']}  {item['kind']:<9} {item['status']:<11} "
            f"{item['outcome']:<9} {item['body_bytes']:>8} B  "
            + terminal_safe(item["webhook_id"])
        )
    return 0


def _deliveries(args: argparse.Namespace) -> int:
    path = existing_database(settings_for(args, require_secret=False))
    tasks = asyncio.run(read_database(path, "tasks", args.job, args.state))
    if args.json:
        print(json.dumps(tasks, indent=2))
        return 0
    rows = [("ID", "JOB", "DEST", "STATE", "TRIES", "BYTES", "REASON")]
    for task in tasks:
        total = task["bytes_total"]
        rows.append(
            (
                str(task["id"]),
                task["job_id"],
                task["destination"],
                task["state"],
                f"{task['attempts']}/{task['max_attempts']}",
                f"{task['bytes_done']}/{'?' if total is None else total}",
                task["reason"] or "-",
            )
        )
    print_table(rows)
    return 0


def _retry(args: argparse.Namespace) -> int:
    settings = settings_for(args, require_secret=False)
    path = existing_database(settings)
    conn = db.connect(path, synchronous=settings.synchronous)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            queue.retry(conn, args.task_id, time.time())
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except LookupError:
        print(f"no delivery with id {args.task_id}", file=sys.stderr)
        return 1
    except queue.TaskStateError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        conn.close()
    print(f"delivery {args.task_id} queued again; a running daemon picks it up")
    return 0


def existing_database(settings: Settings) -> Path:
    path = settings.database_path
    if not path.exists():
        raise db.SchemaError(f"no database at {path}: the daemon has not run yet")
    return path


async def read_database(path: Path, what: str, *args: Any) -> Any:
    conn = await queries.open_reader(path)
    try:
        if what == "list":
            status, limit = args
            return await queries.list_jobs(conn, status=status, limit=limit, offset=0)
        if what == "get":
            return await queries.get_job(conn, args[0])
        if what == "spend":
            return await cost.period_spend(conn, *args)
        if what == "tasks":
            job_id, state = args
            return await queries.fetch_tasks(conn, job_id=job_id, state=state)
        return await queries.read_logs(conn, args[0], 0)
    finally:
        await conn.close()


def _read_body(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise ConfigError(f"--body-file: {name}: {exc.strerror}") from None


def _verify_signature(args: argparse.Namespace) -> int:
    try:
        key = signature.decode_secret(args.secret)
    except ValueError as exc:
        print(f"invalid: secret is unusable ({exc})")
        return 1
    result = signature.verify(
        [key],
        args.id,
        args.timestamp,
        args.signature,
        _read_body(args.body_file),
        now=time.time() if args.now is None else args.now,
        tolerance_s=args.tolerance,
    )
    word = {
        signature.Verdict.VALID: "valid",
        signature.Verdict.INVALID: "invalid",
        signature.Verdict.STALE: "expired",
        signature.Verdict.FUTURE: "expired",
    }[result.verdict]
    print(f"{word}: {result.reason}")
    return 0 if result.ok else 1


def _sign(args: argparse.Namespace) -> int:
    secrets_text = (args.secret or os.environ.get(SECRET_ENV, "")).split()
    if not secrets_text:
        raise ConfigError(f"{SECRET_ENV}: not set and no --secret given")
    try:
        key = signature.decode_secret(secrets_text[0])
    except ValueError as exc:
        raise ConfigError(f"--secret: {exc}") from None
    msg_id = args.id or "msg_" + os.urandom(12).hex()
    timestamp = args.timestamp or str(int(time.time()))
    entry = signature.sign(key, msg_id, timestamp, _read_body(args.body_file))
    print(f"webhook-id: {msg_id}")
    print(f"webhook-timestamp: {timestamp}")
    print(f"webhook-signature: {entry}")
    return 0
