"""Token bucket arithmetic on a fake clock (no sleeps)."""

from exporter.core.ratelimit import TenantRateLimits


def test_bucket_refills_and_reports_wait():
    now = [0.0]
    limits = TenantRateLimits({"a": 10.0, "b": None}, clock=lambda: now[0])
    assert limits.admit({"a": 20}) == 0          # full 2 s burst
    assert limits.admit({"a": 1}) == 1           # empty: 0.1 s → Retry-After rounds up to 1
    now[0] += 0.5
    assert limits.admit({"a": 5}) == 0           # 5 tokens refilled
    assert limits.admit({"b": 10_000}) == 0      # no limit configured for b


def test_batch_larger_than_burst_is_admitted_when_full_and_pays_for_its_size():
    now = [0.0]
    limits = TenantRateLimits({"a": 10.0}, clock=lambda: now[0])
    assert limits.admit({"a": 100}) == 0
    assert limits.admit({"a": 1}) == 9           # 80 tokens in debt + 1 needed = 8.1 s → 9


def test_refused_batch_charges_no_tenant():
    now = [0.0]
    limits = TenantRateLimits({"a": 10.0, "b": 10.0}, clock=lambda: now[0])
    assert limits.admit({"b": 20}) == 0
    assert limits.admit({"a": 5, "b": 5}) > 0
    assert limits.admit({"a": 20}) == 0, "a was not charged for the refused batch"
