"""Command-line commands that talk to Replicate or report on its costs."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sys
import time
from pathlib import Path
from typing import Any

from daemon import cost
from daemon.cli import (
    existing_database,
    print_table,
    read_database,
    settings_for,
    terminal_safe,
)
from daemon.config import SECRET_ENV, Settings
from daemon.read import queries
from daemon.receive import signature


def validate_command(args: argparse.Namespace) -> int:
    from daemon.replicate.client import ReplicateClient
    from daemon.replicate.errors import ReplicateError

    client = ReplicateClient(settings_for(args, require_secret=False).replicate)
    try:
        account = asyncio.run(_closing(client, client.account()))
    except ReplicateError as exc:
        print(f"replicate-webhookd: {exc}", file=sys.stderr)
        return 1
    print(
        "token valid: "
        + terminal_safe(f"{account.get('username')} ({account.get('type')}), ")
        + terminal_safe(str(account.get("name")))
    )
    return 0


def versions_command(args: argparse.Namespace) -> int:
    from daemon.replicate.client import ReplicateClient
    from daemon.replicate.errors import ReplicateError

    client = ReplicateClient(settings_for(args, require_secret=False).replicate)
    model = args.model or client.trainer_model
    try:
        found = asyncio.run(_closing(client, client.model_versions(model)))
    except (ReplicateError, ValueError) as exc:
        print(f"replicate-webhookd: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    rows = [("ID", "CREATED", "COG")]
    rows += [(v.get("id"), v.get("created_at"), v.get("cog_version")) for v in found]
    print_table(rows)
    return 0


async def _closing(client: Any, call: Any) -> Any:
    try:
        return await call
    finally:
        await client.close()


def cancel_command(args: argparse.Namespace) -> int:
    from daemon.replicate.cancel import CancelRefused
    from daemon.replicate.errors import ReplicateError

    settings = settings_for(args, require_secret=False)
    path = existing_database(settings)
    try:
        receipt = asyncio.run(_cancel_recorded(settings, path, args.job_id))
    except (CancelRefused, ReplicateError) as exc:
        print(f"replicate-webhookd: {exc}", file=sys.stderr)
        return 1
    print(f"job {args.job_id}: {receipt.previous_status} -> {receipt.status}")
    return 0


async def _cancel_recorded(settings: Settings, path: Path, job_id: str) -> Any:
    """The endpoint's own steps, with this process's writer; a running daemon's
    workers pick up any delivery task this queues."""
    from daemon.live import output_plan
    from daemon.record.writer import Writer
    from daemon.replicate.cancel import cancel_job
    from daemon.replicate.client import ReplicateClient

    writer = Writer(path, synchronous=settings.synchronous)
    await asyncio.to_thread(writer.open)
    client = ReplicateClient(settings.replicate)
    try:
        reader = await queries.open_reader(path)
        try:
            plan = output_plan(settings)
            return await cancel_job(client, writer, reader, plan, job_id)
        finally:
            await reader.close()
    finally:
        await client.close()
        await asyncio.to_thread(writer.close)


def status_command(args: argparse.Namespace) -> int:
    from daemon.replicate.status import replicate_status

    settings = settings_for(args, require_secret=False)
    found = asyncio.run(replicate_status(settings.replicate.status_url))
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    print(terminal_safe(f"{found['indicator']}: {found['description']}"))
    return 0


def secret_command(args: argparse.Namespace) -> int:
    from daemon.replicate.client import ReplicateClient
    from daemon.replicate.errors import ReplicateError

    settings = settings_for(args, require_secret=False)
    client = ReplicateClient(settings.replicate)
    try:
        fetched = asyncio.run(_closing(client, client.default_webhook_secret()))
        key = signature.decode_secret(fetched.reveal())
    except ReplicateError as exc:
        print(f"replicate-webhookd: {exc}", file=sys.stderr)
        return 1
    except ValueError:
        print("replicate-webhookd: Replicate's secret does not decode", file=sys.stderr)
        return 1
    print(f"Replicate signing secret: {_fingerprint(key)}")
    if not args.check:
        return 0

    local = settings.hmac_keys()
    matches = [n for n, mine in enumerate(local, 1) if hmac.compare_digest(mine, key)]
    if matches:
        print(f"matches {SECRET_ENV} entry {matches[0]} of {len(local)}")
        return 0
    print(f"matches no entry of {SECRET_ENV} ({len(local)} set)")
    for number, mine in enumerate(local, 1):
        print(f"  entry {number}: {_fingerprint(mine)}")
    return 1


def billing_command(args: argparse.Namespace) -> int:
    settings = settings_for(args, require_secret=False)
    path = existing_database(settings)
    spend = asyncio.run(read_database(path, "spend", settings.cost, time.time()))
    # This process made no Replicate call, so it has seen no 402.
    report = cost.billing_report(spend, settings.cost, None)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    period, limit = report["period"], report["limit"]
    print(f"period: {period['name']} {period['start']} to {period['end']}")
    print(f"spend: ${report['spend']:.2f}")
    if limit is None:
        print("limit: none")
    else:
        print(
            f"limit: ${limit['amount']:.2f} ({limit['action']}); "
            f"remaining ${report['remaining']:.2f}"
            + ("; OVER LIMIT" if report["over_limit"] else "")
        )
    print(f"balance: unknown ({report['balance_reason']})\n")
    rows = [("DATE", "SPEND")]
    rows += [(day["date"], f"${day['spend']:.2f}") for day in report["by_day"]]
    print_table(rows)
    return 0


def _fingerprint(key: bytes) -> str:
    """Enough to tell keys apart, nothing to sign with."""
    return f"sha256 {hashlib.sha256(key).hexdigest()[:12]}, {len(key)} bytes"
