import pytest

from connectors.ratelimit import TokenBucket


def test_burst_then_rate():
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    for _ in range(3):
        assert bucket.wait_time() == 0
        bucket.tokens -= 1
    assert bucket.wait_time() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.wait_time() == 0
    now[0] = 100
    bucket._refill()
    assert bucket.tokens == 3  # never more than the burst


async def test_acquire_waits_for_a_token():
    bucket = TokenBucket(rate=50, burst=1)
    await bucket.acquire()
    assert bucket.wait_time() > 0
    await bucket.acquire()  # waits ~20 ms, then succeeds


def test_invalid_budget_is_rejected():
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0, burst=1)
