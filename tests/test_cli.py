"""The command line through its real entry point, against a real running daemon."""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from daemon.record.db import known_migrations
from tests.helpers import (
    WEBHOOK_PATH,
    DaemonProcess,
    cli_env,
    payload,
    payload_json,
    run_cli,
    signed_headers,
)

SUCCEEDED = payload_json("training_succeeded.json")
FAILED = payload_json("training_failed.json")


def post(proc: DaemonProcess, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - always http://127.0.0.1
        proc.url + WEBHOOK_PATH,
        data=body,
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.status == 200
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def deliver(proc: DaemonProcess, name: str) -> None:
    body = payload(name)
    post(proc, body, signed_headers(proc.secret, body))


def cli(*args: str, data_dir: Path, **env: str) -> Any:
    return run_cli(*args, "--data-dir", str(data_dir), env=cli_env(**env))


def running_daemon(daemon_process: Any, *names: str) -> DaemonProcess:
    proc: DaemonProcess = daemon_process()
    for name in names:
        deliver(proc, name)
    return proc


def test_jobs_prints_a_table_with_the_delivered_job(daemon_process, tmp_path):
    proc = running_daemon(daemon_process, "training_succeeded.json")
    result = cli("jobs", data_dir=proc.data_dir)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "ID",
        "STATUS",
        "MODEL",
        "CREATED",
        "COMPLETED",
        "PREDICT_S",
    ]
    assert len(rows) == 1
    assert rows[0].split() == [
        SUCCEEDED["id"],
        "succeeded",
        SUCCEEDED["model"],
        SUCCEEDED["created_at"],
        SUCCEEDED["completed_at"],
        f"{SUCCEEDED['metrics']['predict_time']:.1f}",
    ]


def test_jobs_status_filter_lists_only_that_status(daemon_process):
    proc = running_daemon(
        daemon_process, "training_succeeded.json", "training_failed.json"
    )
    failed = cli("jobs", "--status", "failed", data_dir=proc.data_dir)
    everything = cli("jobs", data_dir=proc.data_dir)
    assert failed.returncode == 0, failed.stderr
    assert FAILED["id"] in failed.stdout
    assert SUCCEEDED["id"] not in failed.stdout
    assert FAILED["id"] in everything.stdout
    assert SUCCEEDED["id"] in everything.stdout


def test_jobs_json_prints_the_api_job_objects(daemon_process):
    proc = running_daemon(
        daemon_process, "training_succeeded.json", "training_failed.json"
    )
    result = cli("jobs", "--json", data_dir=proc.data_dir)
    assert result.returncode == 0, result.stderr
    jobs = json.loads(result.stdout)
    by_id = {job["id"]: job for job in jobs}
    assert set(by_id) == {SUCCEEDED["id"], FAILED["id"]}
    assert by_id[SUCCEEDED["id"]]["status"] == "succeeded"
    assert by_id[SUCCEEDED["id"]]["output"] == SUCCEEDED["output"]
    assert by_id[FAILED["id"]]["error"] == FAILED["error"]
    # newest first: the failed training was created after the succeeded one
    assert SUCCEEDED["created_at"] < FAILED["created_at"]
    assert [job["id"] for job in jobs] == [FAILED["id"], SUCCEEDED["id"]]


def test_job_shows_details_and_history(daemon_process):
    proc = daemon_process()
    expected = []
    for name, kind, status, outcome in (
        ("training_starting.json", "start", "starting", "created"),
        ("training_succeeded.json", "completed", "succeeded", "applied"),
    ):
        body = payload(name)
        headers = signed_headers(proc.secret, body)
        post(proc, body, headers)
        msg_id = headers["webhook-id"]
        expected.append([kind, status, outcome, str(len(body)), "B", msg_id])

    result = cli("job", SUCCEEDED["id"], data_dir=proc.data_dir)

    assert result.returncode == 0, result.stderr
    fields = {}
    for line in result.stdout.split("\nhistory:")[0].splitlines():
        key, _, value = line.partition(": ")
        fields[key.strip()] = value
    assert fields["id"] == SUCCEEDED["id"]
    assert fields["status"] == "succeeded"
    assert fields["completed_at"] == SUCCEEDED["completed_at"]
    assert json.loads(fields["output"]) == SUCCEEDED["output"]
    history = result.stdout.split("\nhistory:")[1].strip().splitlines()
    assert [line.split()[1:] for line in history] == expected


def test_job_json_prints_state_and_history(daemon_process):
    proc = running_daemon(daemon_process, "training_failed.json")
    result = cli("job", FAILED["id"], "--json", data_dir=proc.data_dir)
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "failed"
    assert job["error"] == FAILED["error"]
    assert [item["kind"] for item in job["history"]] == ["failed"]


def test_job_logs_prints_the_log_exactly(daemon_process):
    proc = running_daemon(
        daemon_process, "training_processing_logs.json", "training_succeeded.json"
    )
    result = cli("job", SUCCEEDED["id"], "--logs", data_dir=proc.data_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout == SUCCEEDED["logs"]


def test_job_with_unknown_id_exits_1(daemon_process):
    proc = running_daemon(daemon_process, "training_succeeded.json")
    for extra in ([], ["--logs"], ["--json"]):
        result = cli("job", "no-such-job", *extra, data_dir=proc.data_dir)
        assert result.returncode == 1, extra
        assert "no-such-job" in result.stderr
        assert result.stdout == ""


def test_commands_read_the_database_after_the_daemon_stopped(daemon_process):
    proc = running_daemon(daemon_process, "training_succeeded.json")
    assert proc.stop() == 0
    listed = cli("jobs", data_dir=proc.data_dir)
    logs = cli("job", SUCCEEDED["id"], "--logs", data_dir=proc.data_dir)
    assert listed.returncode == 0, listed.stderr
    assert SUCCEEDED["id"] in listed.stdout
    assert logs.stdout == SUCCEEDED["logs"]


def test_jobs_without_a_database_exits_1_with_a_clear_message(tmp_path):
    data_dir = tmp_path / "never-ran"
    for args in (["jobs"], ["job", "some-id"]):
        result = cli(*args, data_dir=data_dir)
        assert result.returncode == 1, args
        assert result.stderr.count("\n") == 1
        assert "no database at" in result.stderr
        assert str(data_dir) in result.stderr
        assert "Traceback" not in result.stderr
    assert not data_dir.exists()  # reading never creates a database


def test_migrate_applies_every_migration_then_reports_current(tmp_path):
    data_dir = tmp_path / "fresh"
    first = cli("migrate", data_dir=data_dir)
    assert first.returncode == 0, first.stderr
    known = known_migrations()
    assert len(known) >= 2
    for migration in known:
        assert f"{migration.version:04d}_{migration.name}" in first.stdout
    database = data_dir / "webhookd.sqlite3"
    with sqlite3.connect(database) as conn:
        versions = [
            row[0] for row in conn.execute("SELECT version FROM schema_migrations")
        ]
    assert versions == [migration.version for migration in known]

    second = cli("migrate", data_dir=data_dir)
    assert second.returncode == 0, second.stderr
    assert "already current" in second.stdout
    assert "0001" not in second.stdout


def test_sign_headers_are_accepted_by_the_running_daemon(daemon_process, tmp_path):
    proc = daemon_process()
    body_file = tmp_path / "body.json"
    body_file.write_bytes(payload("training_canceled.json"))

    signed = run_cli(
        "sign",
        "--body-file",
        str(body_file),
        env=cli_env(REPLICATE_WEBHOOK_SECRET=proc.secret),
    )

    assert signed.returncode == 0, signed.stderr
    headers = dict(line.split(": ", 1) for line in signed.stdout.splitlines())
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    answer = post(proc, body_file.read_bytes(), headers)
    assert answer["outcome"] == "created"
    assert answer["job_id"] == payload_json("training_canceled.json")["id"]


def test_sign_with_another_secret_is_refused_by_the_daemon(daemon_process, tmp_path):
    proc = daemon_process()
    body_file = tmp_path / "body.json"
    body_file.write_bytes(payload("training_canceled.json"))
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    signed = run_cli("sign", "--secret", other, "--body-file", str(body_file))
    assert signed.returncode == 0, signed.stderr
    headers = dict(line.split(": ", 1) for line in signed.stdout.splitlines())
    with pytest.raises(urllib.error.HTTPError) as refused:
        post(proc, body_file.read_bytes(), headers)
    refused.value.close()  # the error holds the open connection
    assert refused.value.code == 401


def test_sign_with_a_missing_body_file_exits_2_with_a_message(tmp_path, secret):
    done = run_cli(
        "sign", "--secret", secret, "--body-file", str(tmp_path / "missing.json")
    )
    assert done.returncode == 2
    assert "--body-file" in done.stderr
    assert "Traceback" not in done.stderr
