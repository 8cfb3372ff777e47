"""What jobs cost and how much was spent in the current calendar period.

A job's hardware is what it was submitted with, else its input's "hardware" value
when it is a string, else the configured default; hardware without a price is
priced as the default hardware.
A finished job costs metrics.predict_time times its price per hour / 3600 (no
predict_time: nothing, as Replicate bills only predict time). A running job
(started_at set, status not terminal) costs the time elapsed since started_at.

Periods are calendar periods in the configured time zone: a day from local
midnight, an ISO week from Monday's midnight, a month from the 1st's midnight.
A job's whole cost counts in the period that holds its start (started_at, else
created_at, else when the daemon first saw it); it is never split across periods.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiosqlite

from daemon import limits
from daemon.config import CostSettings
from daemon.record.events import epoch, is_terminal
from daemon.replicate.errors import CreditNotice

BALANCE_REASON = "Replicate has no public balance API"


@dataclass(frozen=True)
class Spend:
    start: datetime  # aware, in the configured zone
    end: datetime  # exclusive
    total: float  # USD
    by_day: dict[date, float]  # every local day of the period, in order


def job_hardware(job: Mapping[str, Any], cost: CostSettings) -> str:
    value = job.get("hardware")
    job_input = job.get("input")
    if not value and isinstance(job_input, dict):
        value = job_input.get("hardware")
    return value if isinstance(value, str) and value else cost.default_hardware


def job_cost(job: Mapping[str, Any], cost: CostSettings, now: float) -> float:
    """USD for a job as `GET /api/jobs` shows it (status, predict_time_s,
    started_at, input)."""
    per_second = cost.price_per_hour(job_hardware(job, cost)) / 3600
    if is_terminal(str(job.get("status"))):
        predict = job.get("predict_time_s")
        return float(predict) * per_second if predict is not None else 0.0
    started = epoch(job.get("started_at"))
    if started is None:
        return 0.0
    return max(0.0, now - started) * per_second


def period_bounds(period: str, now: float, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The calendar day, ISO week (from Monday) or month holding `now`, in `zone`."""
    today = datetime.fromtimestamp(now, zone).date()
    if period == "daily":
        first, following = today, today + timedelta(days=1)
    elif period == "weekly":
        first = today - timedelta(days=today.weekday())
        following = first + timedelta(days=7)
    elif period == "monthly":
        first = today.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown period {period!r}")
    return _midnight(first, zone), _midnight(following, zone)


async def period_spend(
    conn: aiosqlite.Connection, cost: CostSettings, now: float
) -> Spend:
    """Spend in the configured period that holds `now`, with a total per day."""
    zone = cost.zone
    start, end = period_bounds(cost.limit_period, now, zone)
    first = start.date()
    by_day = {first + timedelta(days=n): 0.0 for n in range((end.date() - first).days)}
    async with conn.execute(
        "SELECT status, predict_time_s, started_at, created_ts, first_seen_at,"
        " input_json, hardware FROM jobs"
        " WHERE coalesce(created_ts, first_seen_at) >= ?",
        (start.timestamp() - limits.COST_LOOKBACK_S,),
    ) as cursor:
        rows = await cursor.fetchall()
    for row in rows:
        began = epoch(row["started_at"]) or row["created_ts"] or row["first_seen_at"]
        if not start.timestamp() <= began < end.timestamp():
            continue
        job = {**dict(row), "input": _loads(row["input_json"])}
        day = datetime.fromtimestamp(began, zone).date()
        by_day[day] += job_cost(job, cost, now)
    return Spend(start, end, round(sum(by_day.values()), 4), by_day)


def billing_report(
    spend: Spend, cost: CostSettings, credit: CreditNotice | None
) -> dict[str, Any]:
    """The body of GET /api/cloud/replicate/billing. `over_limit`: the spend has
    reached the limit (spend >= amount), whatever the action."""
    limited = cost.limit_amount > 0
    return {
        "balance": None,
        "balance_reason": BALANCE_REASON,
        "currency": "USD",
        "period": {
            "name": cost.limit_period,
            "start": spend.start.isoformat(),
            "end": spend.end.isoformat(),
            "time_zone": cost.time_zone,
        },
        "spend": spend.total,
        "limit": (
            {"amount": cost.limit_amount, "action": cost.limit_action}
            if limited
            else None
        ),
        "remaining": (
            round(max(0.0, cost.limit_amount - spend.total), 4) if limited else None
        ),
        "over_limit": limited and spend.total >= cost.limit_amount,
        "by_day": [
            {"date": day.isoformat(), "spend": round(value, 4)}
            for day, value in spend.by_day.items()
        ],
        "last_insufficient_credit": (
            {
                "at": datetime.fromtimestamp(credit.at, UTC).isoformat(),
                "detail": credit.detail,
            }
            if credit is not None
            else None
        ),
    }


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
