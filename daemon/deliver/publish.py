"""What a publisher receives and returns.

A publisher (Hugging Face Hub, S3) copies a job's finished local files to one
destination. It is called by a delivery worker after the local copy succeeded,
gets only complete files (never a `.part`), and either returns a small JSON-able
result (where the files went) or raises a `daemon.deliver.errors.DeliveryError`:
`Retryable` for timeouts, 429, 5xx (with `retry_after_s` when the server said),
`Permanent` for everything a retry cannot fix. It must be safe to call again
for the same job after a crash: publishing the same bytes twice gives the same
end state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LocalFile:
    name: str  # safe bare file name, unique within the job
    path: Path  # absolute path of the finished file
    size: int
    sha256: str  # hex digest of the whole file


@dataclass(frozen=True)
class PublishRequest:
    job_id: str
    files: tuple[LocalFile, ...]
    model: str | None  # the trainer model, for commit messages and metadata
    version: str | None  # the output version Replicate created, when known


Publisher = Callable[[PublishRequest], Awaitable[dict[str, Any]]]
