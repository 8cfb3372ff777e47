"""The first step of every delivery: a local copy of a job's outputs.

Files go to `outputs_dir/<job id>/` under names fixed once per job (see
outputs.plan_files) and recorded in `output_files`, so a restart resumes each URL
into the same file and publishers read only files recorded as complete. A URL that
is not https on an allowed host ends the task `blocked_host` before any request.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp

from daemon.deliver import download
from daemon.deliver.errors import DeliveryError, Permanent
from daemon.deliver.outputs import (
    OutputFile,
    host_allowed,
    output_urls,
    plan_files,
    refusal,
)
from daemon.deliver.publish import LocalFile
from daemon.record.writer import Writer
from daemon.settings import Settings

log = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"


class LocalCopier:
    """Deliver a job's outputs to the local disk; the worker's `local` handler."""

    def __init__(
        self, settings: Settings, writer: Writer, session: aiohttp.ClientSession
    ) -> None:
        self._settings = settings
        self._writer = writer
        self._session = session

    def job_dir(self, job_id: str) -> Path:
        return self._settings.outputs_dir / job_id

    async def __call__(
        self, job_id: str, progress: download.Progress
    ) -> dict[str, Any]:
        output = await self._writer.submit(lambda conn: _job_output(conn, job_id))
        urls = output_urls(output)
        blocked = [u for u in urls if not host_allowed(u, self._allowed_hosts)]
        if blocked:
            raise Permanent("blocked_host", refusal(blocked[0]))
        files = await self._writer.submit(
            lambda conn: _fix_names(conn, job_id, plan_files(urls))
        )
        folder = self._prepare(job_id)
        done: list[LocalFile] = []
        for planned, complete in files:
            final = folder / planned.name
            if complete is None or not final.is_file():
                complete = await self._fetch(job_id, planned, folder, progress)
            done.append(LocalFile(planned.name, final, *complete))
        shutil.rmtree(folder / PARTIAL_DIR, ignore_errors=True)
        return {
            "dir": str(folder),
            "files": [
                {"name": f.name, "size": f.size, "sha256": f.sha256} for f in done
            ],
        }

    @property
    def _allowed_hosts(self) -> tuple[str, ...]:
        return self._settings.delivery.allowed_hosts

    def _prepare(self, job_id: str) -> Path:
        root = self._settings.outputs_dir
        folder = root / job_id
        try:
            root.mkdir(parents=True, exist_ok=True)
            if folder.is_symlink():
                raise Permanent("unsafe_path", f"{folder} is a symbolic link")
            folder.mkdir(exist_ok=True)
            partial = folder / PARTIAL_DIR
            if partial.is_symlink():  # never write part files through a link
                partial.unlink()
            partial.mkdir(exist_ok=True)
        except OSError as exc:
            raise download._disk_error(exc) from None
        if folder.resolve().parent != root.resolve():
            raise Permanent("unsafe_path", f"{folder} is outside outputs_dir")
        return folder

    async def _fetch(
        self,
        job_id: str,
        planned: OutputFile,
        folder: Path,
        progress: download.Progress,
    ) -> tuple[int, str]:
        started = time.monotonic()
        part = folder / PARTIAL_DIR / (planned.name + ".part")
        try:
            fetched = await download.fetch(
                self._session,
                planned.url,
                part,
                folder / planned.name,
                allowed_hosts=self._allowed_hosts,
                max_bytes=self._settings.delivery.max_file_bytes,
                progress=progress,
            )
        except DeliveryError as exc:
            if not exc.retryable:
                part.unlink(missing_ok=True)
            raise
        await self._writer.submit(
            lambda conn: _complete(conn, job_id, planned.name, fetched)
        )
        log.info(
            "job %s: saved %s (%d bytes, sha256 %s) in %.1f s",
            job_id,
            planned.name,
            fetched.size,
            fetched.sha256[:12],
            time.monotonic() - started,
        )
        return fetched.size, fetched.sha256


def complete_files(
    conn: sqlite3.Connection, job_id: str, folder: Path
) -> list[LocalFile]:
    """The job's finished local files, for publishers."""
    rows = conn.execute(
        "SELECT name, size, sha256 FROM output_files WHERE job_id = ?"
        " AND completed_at IS NOT NULL ORDER BY position",
        (job_id,),
    )
    return [LocalFile(name, folder / name, size, sha) for name, size, sha in rows]


def _job_output(conn: sqlite3.Connection, job_id: str) -> Any:
    row = conn.execute(
        "SELECT output_json FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    return json.loads(row[0]) if row and row[0] else None


def _fix_names(
    conn: sqlite3.Connection, job_id: str, planned: list[OutputFile]
) -> list[tuple[OutputFile, tuple[int, str] | None]]:
    """Record the plan the first time; afterwards always return the recorded one."""
    conn.executemany(
        "INSERT OR IGNORE INTO output_files (job_id, position, url, name)"
        " VALUES (?, ?, ?, ?)",
        [(job_id, i, f.url, f.name) for i, f in enumerate(planned)],
    )
    rows = conn.execute(
        "SELECT url, name, size, sha256, completed_at FROM output_files"
        " WHERE job_id = ? ORDER BY position",
        (job_id,),
    )
    return [
        (OutputFile(url, name), (size, sha) if done is not None else None)
        for url, name, size, sha, done in rows
    ]


def _complete(
    conn: sqlite3.Connection, job_id: str, name: str, fetched: download.Fetched
) -> None:
    conn.execute(
        "UPDATE output_files SET size = ?, sha256 = ?, completed_at = ?"
        " WHERE job_id = ? AND name = ?",
        (fetched.size, fetched.sha256, time.time(), job_id, name),
    )
