"""Tell a service manager how the daemon is doing: systemd's notify protocol.

Under `Type=notify` systemd passes `NOTIFY_SOCKET`, a datagram socket (a path, or an
abstract name written with a leading `@`), and with `WatchdogSec=` also
`WATCHDOG_USEC`. The daemon sends `READY=1` once it listens, `STATUS=` lines as it
goes, `WATCHDOG=1` at half the watchdog interval for as long as its database writer
answers, and `STOPPING=1` when asked to stop. A stuck writer means no ping, so
systemd kills and restarts the daemon. Without `NOTIFY_SOCKET` every call is a
no-op; a notification that cannot be sent is logged once and never stops the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

log = logging.getLogger(__name__)

SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"

HealthCheck = Callable[[float], Awaitable[str | None]]  # timeout -> problem or None
StatusText = Callable[[], str]


class Notifier:
    """One service manager connection; every method is a no-op when there is none."""

    def __init__(self, address: str | None, watchdog_usec: int | None) -> None:
        self._address = _socket_address(address)
        self.watchdog_interval_s = (
            watchdog_usec / 2 / 1_000_000 if watchdog_usec and self._address else None
        )
        self._socket: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        usec = env.get(WATCHDOG_USEC_ENV, "").strip()
        pid = env.get(WATCHDOG_PID_ENV, "").strip()
        for_us = not pid or pid == str(os.getpid())  # else meant for a parent
        watchdog = int(usec) if usec.isdigit() and int(usec) > 0 and for_us else None
        return cls(env.get(SOCKET_ENV), watchdog)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def send(self, *fields: str) -> None:
        if self._address is None or self._failed:
            return
        message = "\n".join(field.replace("\n", " ") for field in fields)
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.connect(self._address)
            self._socket.sendall(message.encode())
        except OSError as exc:
            self._failed = True  # said once: the manager is gone or misconfigured
            log.warning("cannot notify the service manager: %s", exc)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def watchdog(self, healthy: HealthCheck, status: StatusText) -> None:
        """Ping while `healthy` finds no problem; run until cancelled."""
        interval = self.watchdog_interval_s
        if interval is None:
            return
        shown = ""
        while True:
            problem = await healthy(interval)
            if problem is None:
                text = status()
                fields = ["WATCHDOG=1"] + ([f"STATUS={text}"] if text != shown else [])
                self.send(*fields)
                shown = text
            else:
                # No ping: systemd's watchdog ends the process, and Restart= runs it
                # again, unless the problem clears before WatchdogSec runs out.
                log.warning("watchdog: not pinging, %s", problem)
                self.status(f"unhealthy: {problem}")
                shown = ""
            await asyncio.sleep(interval)


def _socket_address(address: str | None) -> str | None:
    """The connectable form of NOTIFY_SOCKET: a path, or "\\0name" for "@name"."""
    if not address:
        return None
    if address.startswith("@"):
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    log.warning("%s=%r is not a path or @name: not notifying", SOCKET_ENV, address)
    return None
