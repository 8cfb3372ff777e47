"""Access rules: who the client is, and who may use the admin API.

Every /api/ route but the webhook, and /metrics, needs `Authorization: Bearer
<admin token>` when REPLICATE_WEBHOOKD_ADMIN_TOKEN is set; when it is not, those
routes answer loopback clients only; /healthz and /readyz stay open. The client
is resolved the same way as for the webhook allowlist, so a request relayed by a
trusted proxy is judged by its real origin, not the proxy.
"""

from __future__ import annotations

import hmac

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
    token = request.app[SETTINGS].current.admin_token
    if token is None:
        if not client_of(request).is_loopback:
            raise ApiError(
                403,
                "forbidden",
                "the admin API answers loopback clients only unless "
                "REPLICATE_WEBHOOKD_ADMIN_TOKEN is set",
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
