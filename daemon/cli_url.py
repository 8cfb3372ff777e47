"""`replicate-webhookd url [BASE]`: the webhook URL to give Replicate.

BASE, or else `server.public_url` (REPLICATE_WEBHOOKD_PUBLIC_URL), is where the
daemon is reached from the internet: the reverse proxy or the tunnel. The URL goes
to stdout alone, so that `$(replicate-webhookd url)` can be pasted into a training
request; a plain-http base is printed too, with a warning on stderr.
"""

from __future__ import annotations

import argparse
import sys

from daemon.config import ENV_PREFIX, ConfigError
from daemon.webhook_url import is_https, shown, webhook_url

PUBLIC_URL_ENV = ENV_PREFIX + "PUBLIC_URL"


def url_command(args: argparse.Namespace) -> int:
    from daemon.cli import settings_for  # cli imports this module

    base = args.base
    if base is None:
        base = settings_for(args, require_secret=False).public_url
    if not base:
        raise ConfigError(
            "no public base URL: give one (replicate-webhookd url https://HOST) or "
            f"set server.public_url or {PUBLIC_URL_ENV}"
        )
    try:
        url = webhook_url(base)
    except ValueError as exc:
        raise ConfigError(f"public base URL {shown(base)} {exc}") from None
    if not is_https(url):
        print(
            f"replicate-webhookd: warning: {url} is not https: webhook bodies and "
            "signatures would cross the internet unencrypted; put TLS in front "
            "(deploy/README.md)",
            file=sys.stderr,
        )
    print(url)
    return 0
