"""deploy/systemd: the unit passes systemd's own checks, and the daemon runs under
the restrictions that can be applied without systemd.

There is no running systemd here: `systemd-analyze verify` and `security
--offline=true` read the unit file as systemd would. The unit's ExecStart names
the install path of deploy/README.md, so a temporary copy points it at this venv's
console script.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet

from tests.deploy_support import DEPLOY, rewrite
from tests.helpers import WEBHOOK_PATH, DaemonProcess, signed_headers

UNIT = DEPLOY / "systemd" / "replicate-webhookd.service"
INSTALLED = "/opt/replicate-webhookd/.venv/bin/replicate-webhookd"
# deploy/README.md records the score; a change to the sandboxing that raises it
# past this fails here.
MAX_EXPOSURE = 2.0


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if not found:
        raise AssertionError("systemd-analyze is missing: apt-get install systemd")
    return found


def unit_copy(folder: Path) -> Path:
    script = Path(sys.executable).parent / "replicate-webhookd"
    assert script.exists(), f"{script}: install the project into the venv first"
    path = folder / UNIT.name
    path.write_text(rewrite(UNIT.read_text(), [(INSTALLED, str(script))]))
    return path


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_unit_passes_systemd_analyze_verify_with_no_output(tmp_path: Path) -> None:
    result = subprocess.run(
        [systemd_analyze(), "verify", str(unit_copy(tmp_path))],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_unit_exposure_score_is_within_the_recorded_bound(tmp_path: Path) -> None:
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", str(unit_copy(tmp_path))],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match[1])
    assert score <= MAX_EXPOSURE, result.stdout
    readme = (DEPLOY / "README.md").read_text()
    assert f"exposure level {score}" in readme, "record the new score in the README"


def test_unit_declares_notify_watchdog_restart_secrets_state_and_sandbox() -> None:
    unit = directives(UNIT.read_text())
    expected = {
        "Type": ["notify"],
        "Restart": ["on-failure"],
        "DynamicUser": ["yes"],
        "StateDirectory": ["replicate-webhookd"],
        "ProtectSystem": ["strict"],
        "NoNewPrivileges": ["yes"],
        "EnvironmentFile": ["/etc/replicate-webhookd/env"],
    }
    for key, value in expected.items():
        assert unit.get(key) == value, key
    assert unit["WatchdogSec"][0].endswith("s")
    assert unit["ExecStart"][0].startswith(INSTALLED + " serve")
    # Both state folders live in the state directory, the only writable place.
    folders = [v for v in unit["Environment"] if "_DIR=" in v]
    assert folders
    assert all("=%S/replicate-webhookd/" in v for v in folders)
    assert not any(re.search(r"SECRET|TOKEN", v) for v in unit["Environment"])


LAUNCH_RESTRICTED = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NO_NEW_PRIVS, PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 38, 65, 1
assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "no_new_privs refused"
assert libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0, "no MDWE"
from daemon.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_daemon_runs_with_no_new_privileges_and_memory_deny_write_execute(
    daemon_process: Callable[..., DaemonProcess],
) -> None:
    """NoNewPrivileges= and MemoryDenyWriteExecute= as the kernel applies them:
    the daemon starts, decrypts with its Fernet key, takes a webhook, stops."""
    daemon = daemon_process(
        launcher=["-c", LAUNCH_RESTRICTED],
        extra_env={
            "REPLICATE_WEBHOOKD_SECRET_KEY": Fernet.generate_key().decode(),
        },
    )
    body = json.dumps({"id": "sandboxjob0001", "status": "starting"}).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback
        daemon.url + WEBHOOK_PATH,
        data=body,
        headers=signed_headers(daemon.secret, body),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        assert json.load(answer)["ok"] is True
    ready = daemon.url + "/readyz"
    with urllib.request.urlopen(ready, timeout=10) as answer:  # noqa: S310
        assert answer.status == 200
    assert daemon.stop(signal.SIGTERM) == 0, daemon.log_text()
