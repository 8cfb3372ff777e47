"""Counters for the shutdown summary: deliveries accepted, duplicates, rejections."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class DeliveryStats:
    accepted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        refused = sum(self.rejected.values())
        reasons = ", ".join(f"{code}={n}" for code, n in sorted(self.rejected.items()))
        return (
            f"accepted={self.accepted} duplicates={self.duplicates} "
            f"rejected={refused}" + (f" ({reasons})" if reasons else "")
        )
