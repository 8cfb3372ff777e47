"""The SQLite file: connection settings, numbered migrations and readiness.

Migrations are the `NNNN_name.sql` files in `migrations/`, applied in order, each
in its own transaction, and recorded in `schema_migrations`. A database that has a
migration this code does not know (written by a newer daemon) is refused.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from daemon import limits

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


class SchemaError(RuntimeError):
    """The database schema cannot be used by this version of the daemon."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def migrations_dir() -> Path:
    """Installed wheels carry the SQL inside the package; a checkout has it on top."""
    for candidate in (_PACKAGE_DIR / "migrations", _PACKAGE_DIR.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise SchemaError("the migrations folder is missing from this installation")


def known_migrations(folder: Path | None = None) -> list[Migration]:
    found = []
    for path in sorted((folder or migrations_dir()).glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path))
    return found


def connect(path: Path, *, synchronous: str = "normal") -> sqlite3.Connection:
    """Open the write connection: WAL, bounded lock waits, explicit transactions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path,
        timeout=limits.DB_BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        check_same_thread=False,
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA foreign_keys = ON")
    # Keep the WAL near 1 MiB instead of SQLite's 4 MB default peak; a checkpoint
    # only copies committed pages into the database file, so nothing is at risk.
    conn.execute(f"PRAGMA wal_autocheckpoint = {limits.WAL_CHECKPOINT_PAGES}")
    conn.execute(f"PRAGMA journal_size_limit = {limits.WAL_KEEP_BYTES}")
    return conn


def applied_versions(conn: sqlite3.Connection) -> dict[int, str | None]:
    """Applied migration versions with the sha256 of the SQL that was applied."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL,"
        " checksum TEXT) STRICT"
    )
    columns = {row[1] for row in conn.execute("PRAGMA table_info(schema_migrations)")}
    if "checksum" not in columns:  # recorded before checksums were kept: unknown
        conn.execute("ALTER TABLE schema_migrations ADD COLUMN checksum TEXT")
    rows = conn.execute("SELECT version, checksum FROM schema_migrations")
    return {version: checksum for version, checksum in rows}


def migrate(conn: sqlite3.Connection, folder: Path | None = None) -> list[str]:
    """Apply every pending migration; return the names applied."""
    migrations = known_migrations(folder)
    done = applied_versions(conn)
    unknown = set(done) - {m.version for m in migrations}
    if unknown:
        raise SchemaError(
            f"database has migration {max(unknown):04d}, newer than this daemon knows"
        )
    applied = []
    for migration in migrations:
        if migration.version in done:
            _check_unchanged(migration, done[migration.version])
            continue
        _apply(conn, migration)
        applied.append(f"{migration.version:04d}_{migration.name}")
        log.info("applied migration %04d_%s", migration.version, migration.name)
    return applied


def _check_unchanged(migration: Migration, recorded: str | None) -> None:
    if recorded is not None and recorded != migration.checksum():
        raise SchemaError(
            f"migration {migration.version:04d}_{migration.name} changed after it was "
            "applied to this database; restore the file (changes need a new migration)"
        )


def pending(conn: sqlite3.Connection) -> list[int]:
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    return [m.version for m in known_migrations() if m.version not in done]


def _apply(conn: sqlite3.Connection, migration: Migration) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _statements(migration.path.read_text("utf-8")):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at, checksum)"
            " VALUES (?, ?, ?, ?)",
            (migration.version, migration.name, time.time(), migration.checksum()),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """Split a script into statements without executescript's implicit COMMIT."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(
        part.strip().startswith("--") or not part.strip()
        for part in buffer.splitlines()
    ):
        raise SchemaError("migration ends with an incomplete statement")
    return statements
