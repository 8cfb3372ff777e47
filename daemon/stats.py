"""Webhook outcomes since start-up: the shutdown summary and /metrics read them.

The webhook handler records every answer here, in memory only, so counting costs
the hot path one dictionary update. Outcomes are `accepted` (with the receipt's
outcome as the reason), `duplicate`, and `rejected` (with the error code).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"


@dataclass
class DeliveryStats:
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_verified_at: float | None = None  # unix time of the last good signature

    def count(self, outcome: str, reason: str) -> None:
        self.counts[(outcome, reason)] += 1

    def verified(self) -> None:
        self.last_verified_at = time.time()

    def total(self, outcome: str) -> int:
        return sum(n for (kind, _), n in self.counts.items() if kind == outcome)

    def summary(self) -> str:
        refused = {
            reason: n for (kind, reason), n in self.counts.items() if kind == REJECTED
        }
        reasons = ", ".join(f"{code}={n}" for code, n in sorted(refused.items()))
        return (
            f"accepted={self.total(ACCEPTED)} duplicates={self.total(DUPLICATE)} "
            f"rejected={self.total(REJECTED)}" + (f" ({reasons})" if reasons else "")
        )
