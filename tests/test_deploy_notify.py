"""systemd's notify protocol, observed on a real datagram socket.

The daemon runs as a subprocess with NOTIFY_SOCKET pointing at a socket the test
binds (a path, or an abstract name) and WATCHDOG_USEC set, as systemd would start it
under `Type=notify` with `WatchdogSec=`.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.notify import Notifier
from tests.helpers import DaemonProcess

WATCHDOG_USEC = 400_000  # pings every 0.2 s


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(0.2)
    yield sock, str(path)
    sock.close()


def receive_until(
    sock: socket.socket, done: Callable[[list[str]], bool], timeout_s: float = 15
) -> list[str]:
    messages: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not done(messages):
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return messages


def fields(message: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in message.splitlines())


def pings(messages: list[str]) -> int:
    return sum("WATCHDOG" in fields(m) for m in messages)


def test_daemon_sends_ready_then_watchdog_pings_then_stopping(
    daemon_process: Callable[..., DaemonProcess],
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    daemon = daemon_process(
        extra_env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    )
    assert daemon.process is not None
    before = receive_until(sock, lambda m: pings(m) >= 3)
    daemon.stop(signal.SIGTERM)
    after = receive_until(sock, lambda m: any("STOPPING" in fields(x) for x in m), 5)

    first = fields(before[0])
    assert first["READY"] == "1", before
    assert first["MAINPID"] == str(daemon.process.pid)
    assert first["STATUS"].startswith("listening on http://127.0.0.1:")
    assert pings(before[1:]) >= 3, before
    assert all(fields(m).get("WATCHDOG") == "1" for m in before[1:]), before
    stopping = [m for m in after if "STOPPING" in fields(m)]
    assert stopping, after
    assert fields(stopping[0])["STOPPING"] == "1"
    assert daemon.process.returncode == 0, daemon.log_text()


def test_watchdog_pings_come_at_half_the_watchdog_interval(
    daemon_process: Callable[..., DaemonProcess],
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    daemon_process(
        extra_env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    )
    receive_until(sock, lambda m: any("READY" in fields(x) for x in m))
    arrivals: list[float] = []
    while len(arrivals) < 7:
        if "WATCHDOG" in fields(receive_until(sock, bool, 5)[0]):
            arrivals.append(time.monotonic())
    gaps = sorted(b - a for a, b in itertools.pairwise(arrivals))
    # Half of 0.4 s is 0.2 s; pinging at the full interval would give 0.4 s. The
    # median ignores a gap stretched by a busy machine.
    assert 0.15 <= gaps[len(gaps) // 2] <= 0.3, gaps


def test_daemon_notifies_an_abstract_socket_named_with_at(
    daemon_process: Callable[..., DaemonProcess],
) -> None:
    name = f"replicate-webhookd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(0.2)
        daemon_process(extra_env={"NOTIFY_SOCKET": "@" + name})
        messages = receive_until(sock, lambda m: bool(m))
    assert fields(messages[0])["READY"] == "1"


def test_daemon_without_notify_socket_starts_and_stops_normally(
    daemon_process: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_process(extra_env={"WATCHDOG_USEC": str(WATCHDOG_USEC)})
    assert daemon.stop(signal.SIGTERM) == 0
    assert "daemon.notify" not in daemon.log_text()  # nothing to say, no warning


def test_watchdog_is_off_when_watchdog_pid_names_another_process(
    tmp_path: Path,
) -> None:
    env = {
        "NOTIFY_SOCKET": str(tmp_path / "s"),
        "WATCHDOG_USEC": "1000000",
        "WATCHDOG_PID": str(os.getpid() + 1),
    }
    assert Notifier.from_env(env).watchdog_interval_s is None
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier.from_env(env).watchdog_interval_s == 0.5
