"""The settings in force, which `PUT /api/cloud/providers/replicate` can change.

The app holds one LiveSettings under SETTINGS. Handlers and workers read
`.current` each time they need a value, so a change applies to the next request or
task without a restart; what was read for a request in flight stays as it was.
"""

from __future__ import annotations

import asyncio

from daemon.config import Settings
from daemon.record.jobs import OutputPlan


class LiveSettings:
    def __init__(self, settings: Settings) -> None:
        self.lock = asyncio.Lock()  # one change at a time
        self.replace(settings)

    def __repr__(self) -> str:
        return f"LiveSettings({self._current!r})"

    @property
    def current(self) -> Settings:
        return self._current

    @property
    def plan(self) -> OutputPlan:
        """The publishers a succeeded job's outputs go to, besides the local copy."""
        return self._plan

    def replace(self, settings: Settings) -> None:
        self._current = settings
        self._plan = output_plan(settings)


def output_plan(settings: Settings) -> OutputPlan:
    names = []
    if settings.hub.model_id:
        names.append("hub")
    if settings.s3.enabled:
        names.append("s3")
    return OutputPlan(tuple(names), settings.delivery.max_attempts)
