"""Per-tenant rate limits: a token bucket of events per second, so one tenant cannot starve others.

A batch is admitted whole or refused whole (429 with Retry-After): splitting it would make the
client track which events of a batch were taken. The bucket holds two seconds of burst; a batch
larger than that is admitted when the bucket is full and drives it negative, so big batches are
not starved but still pay for their size.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Mapping

BURST_SECONDS = 2.0


class TokenBucket:
    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = rate * BURST_SECONDS
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()

    def wait_for(self, amount: int) -> float:
        """Seconds until ``amount`` tokens are available (0 = now); refills first."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        needed = min(amount, self.capacity)
        return 0.0 if self.tokens >= needed else (needed - self.tokens) / self.rate

    def charge(self, amount: int) -> None:
        self.tokens -= amount


class TenantRateLimits:
    """Buckets for the tenants that have ``rate_limit_events_per_second`` configured."""

    def __init__(self, rates: Mapping[str, float | None], clock: Callable[[], float] = time.monotonic) -> None:
        self.buckets = {tenant: TokenBucket(rate, clock) for tenant, rate in rates.items() if rate}

    def admit(self, counts: Mapping[str, int]) -> int:
        """0 when every tenant in the batch has room (then all are charged), else Retry-After seconds."""
        buckets = [(self.buckets[t], n) for t, n in counts.items() if t in self.buckets]
        wait = max((bucket.wait_for(n) for bucket, n in buckets), default=0.0)
        if wait > 0:
            return math.ceil(wait)
        for bucket, n in buckets:
            bucket.charge(n)
        return 0
