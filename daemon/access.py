"""Access rules: who the client is, and who may use the admin API.

Every /api/ route but the webhook, and /metrics, needs `Authorization: Bearer
<admin token>` when REPLICATE_WEBHOOKD_ADMIN_TOKEN is set. When it is not, those
routes answer loopback clients only, and only when addressed to a loopback name
(Host 127.0.0.1, [::1] or localhost) or to the host of `server.public_url` (a
proxy in front), so that a web page cannot reach them through DNS rebinding.
/healthz and /readyz stay open. The client is resolved the same way as for the
webhook allowlist, so a request relayed by a trusted proxy is judged by its real
origin, not the proxy.

Browsers run other sites' scripts next to the dashboard, so whatever a browser
marks as coming from another site (`Sec-Fetch-Site: cross-site` or `same-site`),
and any change (not GET or HEAD) whose `Origin` is not the host it was sent to, is
refused with 403 `cross_origin`, token or not. Tools that send neither header
(curl, the CLI, scripts) are not affected.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from aiohttp import web

from daemon.appkeys import SETTINGS
from daemon.errors import ApiError, Handler
from daemon.receive.client_ip import ClientAddressError, IPAddress, resolve_client
from daemon.webhook_url import WEBHOOK_PATH as WEBHOOK_PATH  # re-exported

METRICS_PATH = "/metrics"
CLIENT_ADDRESS: web.RequestKey[IPAddress] = web.RequestKey("client_address")


def client_of(request: web.Request) -> IPAddress:
    """The request's client address; garbage in a trusted header is a 403."""
    if CLIENT_ADDRESS in request:
        return request[CLIENT_ADDRESS]
    settings = request.app[SETTINGS].current
    header = settings.client_ip_header
    try:
        client = resolve_client(
            request.remote,
            {header.lower(): request.headers.getall(header, [])},
            settings.trusted_proxies,
            header,
        )
    except ClientAddressError as exc:
        raise ApiError(403, "invalid_client_address", str(exc)) from None
    request[CLIENT_ADDRESS] = client
    return client


@web.middleware
async def admin_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    if _is_admin_path(request.path):
        _check_admin(request)
    return await handler(request)


def _is_admin_path(path: str) -> bool:
    return (path.startswith("/api/") and path != WEBHOOK_PATH) or path == METRICS_PATH


def _check_admin(request: web.Request) -> None:
    _check_browser_origin(request)
    settings = request.app[SETTINGS].current
    token = settings.admin_token
    if token is None:
        if not client_of(request).is_loopback:
            raise ApiError(
                403,
                "forbidden",
                "the admin API answers loopback clients only unless "
                "REPLICATE_WEBHOOKD_ADMIN_TOKEN is set",
            )
        if not _own_host(request.host, settings.public_url):
            raise ApiError(
                403,
                "forbidden_host",
                "without REPLICATE_WEBHOOKD_ADMIN_TOKEN the admin API answers "
                "requests addressed to 127.0.0.1, [::1], localhost or the "
                "public_url's host only",
            )
        return
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    expected = token.reveal().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        offered.strip().encode("utf-8", "replace"), expected
    ):
        raise ApiError(
            401,
            "unauthorized",
            "send Authorization: Bearer <REPLICATE_WEBHOOKD_ADMIN_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _check_browser_origin(request: web.Request) -> None:
    site = request.headers.get("Sec-Fetch-Site", "")
    origin = request.headers.get("Origin")
    if site in ("cross-site", "same-site"):
        raise _cross_origin()
    changes = request.method not in ("GET", "HEAD")
    if changes and origin is not None and not _same_host(origin, request.host):
        raise _cross_origin()


def _same_host(origin: str, host: str) -> bool:
    """Whether an Origin header names the host the request was sent to. Only the
    host names are compared: TLS may end at a proxy in front, and proxies pass
    the Host without its port (another port is `Sec-Fetch-Site: same-site`)."""
    if origin == "null":
        return False
    try:
        return urlsplit(origin).hostname == urlsplit(f"//{host}").hostname
    except ValueError:
        return False


def _cross_origin() -> ApiError:
    return ApiError(
        403,
        "cross_origin",
        "requests from another site's pages are refused; use the dashboard served "
        "by this daemon, or a client that is not a browser",
    )


def _own_host(host: str, public_url: str | None) -> bool:
    """Whether a Host header names this daemon: localhost, a loopback address or
    the public URL's host, with or without a port."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name.startswith("["):
        name = name[1 : name.find("]")]
    name = name.lower()
    if name == "localhost":
        return True
    if public_url is not None and name == (urlsplit(public_url).hostname or ""):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
