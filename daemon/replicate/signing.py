"""The HMAC keys deliveries are verified against, and where they come from.

Keys from REPLICATE_WEBHOOK_SECRET are final: they are never refetched. Without
them, and with REPLICATE_API_TOKEN set, the secret is fetched from Replicate at
start-up and cached in daemon_state, encrypted with Fernet (the key from
REPLICATE_WEBHOOKD_SECRET_KEY, or a 0600 key file in the data dir). A failed
start-up fetch falls back to the cache; with neither, `current()` is empty (the
handler answers 503) and a background task tries again once per interval.

A delivery that fails verification may mean the secret rotated: `refresh()`
refetches, at most once per interval however many requests ask at once, so
forged requests cannot make the daemon hammer Replicate. A request waits for the
refetch only briefly (`refresh_within`); the fetch itself goes on in the
background, so a slow Replicate never holds a webhook answer past a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from daemon import limits
from daemon.observe.logs import redact
from daemon.receive.signature import decode_secret
from daemon.record.writer import Writer
from daemon.replicate.client import ReplicateClient
from daemon.replicate.errors import ReplicateError
from daemon.sensitive import Secret, secret_values
from daemon.settings import SECRET_KEY_ENV, ConfigError, Settings

log = logging.getLogger(__name__)

STATE_KEY = "webhook_secret"  # daemon_state row holding the Fernet token
KEY_FILE_NAME = "secret.key"

Fetch = Callable[[], Awaitable[Secret]]


class SigningKeys:
    """The keys to verify with: configured ones, or Replicate's fetched secret."""

    def __init__(
        self,
        keys: tuple[bytes, ...],
        *,
        fetch: Fetch | None = None,
        cache: SecretCache | None = None,
        interval_s: float = limits.SECRET_REFETCH_INTERVAL_S,
    ) -> None:
        self._keys = keys
        self._fetch = fetch  # None: the keys were configured and are final
        self._cache = cache
        self._interval_s = interval_s
        self._next_fetch_at = 0.0  # monotonic; a refetch before it is refused
        self._generation = 0  # bumped whenever the keys change
        self._lock = asyncio.Lock()
        self._retrying: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[bool] | None = None
        self._fetched = False  # whether a fetch has succeeded since start-up

    def __repr__(self) -> str:
        source = "configured" if self._fetch is None else "fetched"
        return f"SigningKeys({len(self._keys)} {source} keys)"

    def current(self) -> tuple[bytes, ...]:
        return self._keys

    async def start(self) -> None:
        """Fetch at start-up; else use the cache; else keep trying in the background."""
        if self._fetch is None:
            return
        if await self._load_from_replicate():
            return
        cached = await self._cache.load() if self._cache else None
        if cached is not None:
            redact(secret_values(cached))
            self._keys = (decode_secret(cached.reveal()),)  # checked by load()
            log.warning("signing secret: using the cached copy (%s)", _print(cached))
        else:
            log.warning(
                "signing secret: none fetched and none cached; webhooks are refused "
                "(503) until a fetch succeeds, tried every %.0f s",
                self._interval_s,
            )
        self._next_fetch_at = time.monotonic() + self._interval_s
        self._retrying = asyncio.create_task(self._retry_until_fetched())

    async def refresh(self) -> bool:
        """Refetch after a failed verification; True when the keys have changed."""
        if self._fetch is None:
            return False
        seen = self._generation
        async with self._lock:
            if self._generation != seen:  # changed while this caller waited
                return True
            now = time.monotonic()
            if now < self._next_fetch_at:
                return False
            self._next_fetch_at = now + self._interval_s
            return await self._load_from_replicate()

    async def refresh_within(self, timeout_s: float) -> bool | None:
        """`refresh()`, waited for at most `timeout_s`; None when it has not
        finished by then (it goes on, and later deliveries use its result)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self.refresh())
        try:
            return await asyncio.wait_for(asyncio.shield(self._refreshing), timeout_s)
        except TimeoutError:
            return None

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing
            self._refreshing = None
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying
            self._retrying = None

    async def _retry_until_fetched(self) -> None:
        while not self._fetched:
            await asyncio.sleep(max(0.0, self._next_fetch_at - time.monotonic()))
            await self.refresh()

    async def _load_from_replicate(self) -> bool:
        """Fetch once; store and use the secret if it is new. True when it was."""
        assert self._fetch is not None
        try:
            secret = await self._fetch()
            redact(secret_values(secret))
            key = decode_secret(secret.reveal())
        except ReplicateError as exc:
            log.warning("signing secret: fetch from Replicate failed: %s", exc)
            return False
        except ValueError as exc:
            log.warning("signing secret: Replicate's answer is unusable (%s)", exc)
            return False
        self._fetched = True
        if self._keys == (key,):
            log.info("signing secret: fetched, unchanged (%s)", _print(secret))
            return False
        self._keys = (key,)
        self._generation += 1
        log.info("signing secret: fetched from Replicate (%s)", _print(secret))
        if self._cache is not None:
            await self._cache.save(secret)
        return True


class SecretCache:
    """The fetched secret in daemon_state, encrypted; never stored in clear."""

    def __init__(self, writer: Writer, fernet: Fernet) -> None:
        self._writer = writer
        self._fernet = fernet

    def __repr__(self) -> str:
        return "SecretCache()"

    async def save(self, secret: Secret) -> None:
        token = self._fernet.encrypt(secret.reveal().encode()).decode("ascii")
        try:
            await self._writer.submit(lambda conn: _put(conn, token))
        except Exception as exc:  # the secret is in use; only the cache is missing
            log.warning("signing secret: could not cache it (%s)", type(exc).__name__)

    async def load(self) -> Secret | None:
        token = await self._writer.submit(_get)
        if token is None:
            return None
        try:
            secret = Secret(self._fernet.decrypt(token.encode()).decode())
            decode_secret(secret.reveal())
            return secret
        except (InvalidToken, ValueError):
            log.warning(
                "signing secret: the cached copy cannot be decrypted with the "
                "current key (%s changed?); ignored",
                SECRET_KEY_ENV,
            )
            return None


async def open_signing_keys(
    settings: Settings, client: ReplicateClient, writer: Writer
) -> SigningKeys:
    """The started keys for this app: configured, or fetched when a token is set."""
    if settings.webhook_keys or not client.has_token:
        return SigningKeys(settings.hmac_keys())
    fernet = Fernet(load_fernet_key(settings).reveal())
    keys = SigningKeys(
        (), fetch=client.default_webhook_secret, cache=SecretCache(writer, fernet)
    )
    await keys.start()
    return keys


def load_fernet_key(settings: Settings) -> Secret:
    """REPLICATE_WEBHOOKD_SECRET_KEY, else `<data_dir>/secret.key`, made if absent."""
    if settings.secret_key is not None:
        return settings.secret_key
    path = settings.data_dir / KEY_FILE_NAME
    if not path.exists():
        _create_key_file(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path}: readable by group or others (mode {mode:04o}); "
            f"run chmod 600 {path}, or set {SECRET_KEY_ENV}"
        )
    text = path.read_text("ascii", errors="replace").strip()
    try:
        Fernet(text)
    except ValueError:
        raise ConfigError(f"{path}: not a Fernet key (value hidden)") from None
    redact([text])
    return Secret(text)


def _create_key_file(path: Path) -> None:
    """Write a new key to a private temporary file, then link it into place, so
    that the key file is never seen empty or readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    log.info("signing secret: created the key file %s", path)


def _put(conn: sqlite3.Connection, token: str) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO daemon_state (key, value) VALUES (?, ?)",
        (STATE_KEY, token),
    )


def _get(conn: sqlite3.Connection) -> str | None:
    row = conn.execute(
        "SELECT value FROM daemon_state WHERE key = ?", (STATE_KEY,)
    ).fetchone()
    return None if row is None else str(row[0])


def _print(secret: Secret) -> str:
    """A fingerprint of a secret, safe to log."""
    key = decode_secret(secret.reveal())
    return f"sha256 {hashlib.sha256(key).hexdigest()[:12]}"
