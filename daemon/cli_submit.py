"""`replicate-webhookd submit`: start a training through the running daemon.

The command reads the JSON files, sends them to the daemon's
`POST /api/cloud/replicate/submit` (with REPLICATE_WEBHOOKD_ADMIN_TOKEN when set)
and prints the job id, the warnings and the dataset files left out. The daemon
does the upload and the call to Replicate, and then follows the job; the dataset
path is made absolute here, so it must be readable by the daemon's user.
Exit codes: 0 submitted (or replayed), 1 refused, 2 bad arguments or files.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from daemon.settings import ADMIN_TOKEN_ENV, ConfigError


def add_parser(commands: Any, command: Any) -> None:
    parser = command(commands, "submit", submit_command, "start a training")
    parser.add_argument(
        "--training-config",
        required=True,
        metavar="FILE",
        help="SimpleTuner config JSON (an object)",
    )
    parser.add_argument(
        "--dataloader",
        required=True,
        metavar="FILE",
        help="dataloader JSON (an array of datasets)",
    )
    parser.add_argument("--lycoris", metavar="FILE", help="LyCORIS config JSON")
    parser.add_argument("--dataset", help="dataset directory or .zip/.tar(.gz)")
    parser.add_argument("--version", help='trainer version id (default: "latest")')
    parser.add_argument("--model", help="trainer model owner/name")
    parser.add_argument("--destination", help="owner/model the training creates")
    parser.add_argument("--hardware", help="hardware name in the price table")
    parser.add_argument("--hub-model-id", help="Hub repository the trainer pushes to")
    parser.add_argument("--max-train-steps", type=int)
    parser.add_argument("--idempotency-key", help="the same key returns the same job")
    parser.add_argument("--url", help="the daemon (default: from the settings)")


def submit_command(args: argparse.Namespace) -> int:
    from daemon.cli import settings_for

    body = _request_body(args)
    settings = settings_for(args, require_secret=False, stored=False)
    # A daemon listening on every interface is reached here over loopback.
    wildcard = settings.host in ("0.0.0.0", "::", "")  # noqa: S104 - compared only
    host = "127.0.0.1" if wildcard else settings.host
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    base = args.url or f"http://{host}:{settings.port}"
    status, answer = _post(base, "/api/cloud/replicate/submit", body)
    if status >= 300:
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        print(f"refused ({status}): {error.get('message', answer)}", file=sys.stderr)
        return 1
    print(f"job {answer['job_id']} ({answer['submission_id']})")
    for warning in answer.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    for skipped in answer.get("skipped", []):
        print(f"left out: {skipped['path']} ({skipped['reason']})", file=sys.stderr)
    return 0


def _request_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "config": _json_file("--training-config", args.training_config),
        "dataloader": _json_file("--dataloader", args.dataloader),
    }
    if args.lycoris:
        body["lycoris"] = _json_file("--lycoris", args.lycoris)
    if args.dataset:
        body["dataset"] = str(Path(args.dataset).expanduser().absolute())
    optional = {
        "version": args.version,
        "model": args.model,
        "destination": args.destination,
        "hardware": args.hardware,
        "hub_model_id": args.hub_model_id,
        "max_train_steps": args.max_train_steps,
        "idempotency_key": args.idempotency_key,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def _json_file(flag: str, name: str) -> Any:
    try:
        return json.loads(Path(name).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{flag}: {name}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{flag}: {name} is not JSON ({exc})") from None


def _post(base: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--url: not an http(s) URL: {base!r}")
    connection_type = (
        http.client.HTTPSConnection
        if parts.scheme == "https"
        else http.client.HTTPConnection
    )
    conn = connection_type(parts.hostname, parts.port, timeout=600)
    headers = {"Content-Type": "application/json"}
    token = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", parts.path.rstrip("/") + path, json.dumps(body), headers)
        response = conn.getresponse()
        raw = response.read()
    except OSError as exc:
        raise ConfigError(f"the daemon at {base} did not answer ({exc})") from None
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except json.JSONDecodeError:
        return response.status, raw.decode("utf-8", "replace")[:500]
