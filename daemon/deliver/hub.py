"""Publish a job's files to a Hugging Face Hub model repository, in one commit.

`HubPublisher` creates the repository when it is missing (private unless
`hub.private` is false), then adds all the job's files in one commit named after
the job, with the official client in a worker thread; commits to one repository
wait for each other. Publishing the same bytes again makes no new commit: the
client skips unchanged files. Errors, sorted as `daemon.deliver.errors`:

    Retryable   http_412 (the branch moved), http_408, http_429, http_5xx (with
                Retry-After when given), hub_timeout, hub_unreachable (refused or
                reset connections), hub_error (anything the client did not explain)
    Permanent   http_401, http_403, http_404 and every other 4xx,
                hub_token_missing, hub_not_configured, local_file (a file is gone)

The token reaches the client only inside the worker thread; messages quote the
server's own words with anything token-shaped masked.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import httpx2
from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, set_client_factory
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils._http import default_client_factory
from huggingface_hub.utils.tqdm import disable_progress_bars

from daemon import __version__
from daemon.deliver.errors import DeliveryError, Permanent, Retryable, retry_after_s
from daemon.deliver.publish import PublishRequest
from daemon.sensitive import MASK, Secret
from daemon.settings import HubSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

TIMEOUT_S = 120.0  # per read or write: the Hub may think a while over a large commit
CONNECT_TIMEOUT_S = 10.0
_QUOTE_CHARS = 200  # how much of the server's explanation goes into a message
_TOKEN_SHAPED = re.compile(r"hf_[A-Za-z0-9_-]{6,}|Bearer\s+\S+", re.IGNORECASE)
_HINTS = {
    401: "HF_TOKEN was rejected",
    403: "HF_TOKEN may not write to this repository or namespace",
    404: "no such repository or namespace",
}


class HubPublisher:
    """Commits each job's files to `settings.model_id`; one instance serves all jobs.

    `endpoint` overrides the Hub's address; by default the client takes HF_ENDPOINT,
    else huggingface.co. Building one installs the client's shared HTTP session
    with timeouts (the client's own has none) and turns its progress bars off.
    """

    def __init__(
        self,
        settings: HubSettings,
        *,
        endpoint: str | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self._settings = settings
        self._endpoint = endpoint
        self._locks: dict[str, asyncio.Lock] = {}
        disable_progress_bars()
        set_client_factory(partial(_timed_client, timeout_s))

    def __repr__(self) -> str:
        return f"HubPublisher(repo={self._settings.model_id!r})"

    async def __call__(self, request: PublishRequest) -> dict[str, Any]:
        repo_id, token = self._ready(request)
        async with self._locks.setdefault(repo_id, asyncio.Lock()):
            started = time.monotonic()
            create = partial(self._create_repo, repo_id, token)
            await _off_loop(create, f"creating {repo_id}")
            commit = partial(self._commit, repo_id, token, request)
            info = await _off_loop(commit, f"committing to {repo_id}")
            took = time.monotonic() - started
        names = [file.name for file in request.files]
        size = sum(file.size for file in request.files)
        log.info(
            "hub commit %s to %s: job %s, %d files, %d bytes, %.2f s",
            info.oid[:12],
            repo_id,
            request.job_id,
            len(names),
            size,
            took,
        )
        return {
            "repo": repo_id,
            "commit_url": info.commit_url,
            "commit_oid": info.oid,
            "files": names,
        }

    def _ready(self, request: PublishRequest) -> tuple[str, Secret]:
        repo_id, token = self._settings.model_id, self._settings.token
        if not repo_id:
            raise Permanent("hub_not_configured", "hub.model_id is not set")
        if token is None:
            raise Permanent(
                "hub_token_missing",
                f"HF_TOKEN not set: cannot publish job {request.job_id} to {repo_id}",
            )
        if not request.files:
            raise Permanent("hub_no_files", f"job {request.job_id} has no files")
        return repo_id, token

    def _client(self, token: Secret) -> HfApi:
        return HfApi(
            endpoint=self._endpoint,
            token=token.reveal(),
            library_name="replicate-webhookd",
            library_version=__version__,
        )

    def _create_repo(self, repo_id: str, token: Secret) -> None:
        client = self._client(token)
        client.create_repo(repo_id, private=self._settings.private, exist_ok=True)

    def _commit(
        self, repo_id: str, token: Secret, request: PublishRequest
    ) -> CommitInfo:
        for file in request.files:
            if not file.path.is_file():
                raise Permanent("local_file", f"{file.path} is gone")
        # Building an operation reads the file's head, so it belongs off the loop too.
        additions = [
            CommitOperationAdd(path_in_repo=file.name, path_or_fileobj=file.path)
            for file in request.files
        ]
        return self._client(token).create_commit(
            repo_id,
            additions,
            commit_message=f"Add outputs of Replicate job {request.job_id}",
            commit_description=_description(request),
        )


async def _off_loop(call: Callable[[], T], what: str) -> T:
    try:
        return await asyncio.to_thread(call)
    except DeliveryError:
        raise
    except Exception as exc:
        raise _sorted(exc, what) from None


def _sorted(exc: Exception, what: str) -> DeliveryError:
    """Sort a client failure; the client wraps transport errors, so walk the chain."""
    for link in _chain(exc):
        if isinstance(link, HfHubHTTPError):
            return _from_response(link, what)
        if isinstance(link, httpx2.TimeoutException):
            return Retryable("hub_timeout", f"Hub timed out while {what}")
        if isinstance(link, httpx2.TransportError):
            cause = type(link).__name__
            return Retryable(
                "hub_unreachable", f"Hub unreachable while {what}: {cause}"
            )
        if isinstance(link, FileNotFoundError):
            return Permanent("local_file", f"{what}: {link.filename} is gone")
    return Retryable("hub_error", f"{what} failed: {_quote(str(exc))}")


def _from_response(error: HfHubHTTPError, what: str) -> DeliveryError:
    status = error.response.status_code
    message = f"Hub answered {status} while {what}"
    if status in _HINTS:
        message += f": {_HINTS[status]}"
    if error.server_message:
        message += f" ({_quote(error.server_message)})"
    if status in (408, 412, 429) or status >= 500:
        wait = retry_after_s(error.response.headers.get("retry-after"))
        return Retryable(f"http_{status}", message, retry_after_s=wait)
    return Permanent(f"http_{status}", message)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def _quote(text: str) -> str:
    """The server's words on one short line, with anything token-shaped masked."""
    line = " ".join(_TOKEN_SHAPED.sub(MASK, text).split())
    return line if len(line) <= _QUOTE_CHARS else line[: _QUOTE_CHARS - 3] + "..."


def _description(request: PublishRequest) -> str:
    fields = {"Replicate job": request.job_id, "Trainer": request.model}
    fields["Version"] = request.version
    return "\n".join(f"{key}: {value}" for key, value in fields.items() if value)


def _timed_client(timeout_s: float) -> httpx2.Client:
    client = default_client_factory()
    connect = min(timeout_s, CONNECT_TIMEOUT_S)
    client.timeout = httpx2.Timeout(timeout_s, connect=connect)
    return client
