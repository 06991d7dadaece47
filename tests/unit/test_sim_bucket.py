"""The simulators' one call-limit bucket (simulators/bucket.py): a token bucket and, seen from the
other side, Shopify's leaky bucket; they differ only in what a new plan keeps."""

from __future__ import annotations

from retail_sync.simulators.bucket import Bucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_time_scale_speeds_the_refill() -> None:
    clock = Clock()
    bucket = Bucket(rate=1.0, burst=1, time_scale=10.0, clock=clock)
    assert bucket.take() and not bucket.take()
    clock.now = 0.1
    assert bucket.take()


def test_a_new_token_plan_keeps_earned_tokens_up_to_the_new_burst() -> None:
    clock = Clock()
    bucket = Bucket(rate=1.0, burst=10, clock=clock)
    bucket.take()
    bucket.reshape(1.0, 4)
    assert bucket.count() == 4  # 9 earned, 4 kept
    bucket.reshape(1.0, 20)
    assert bucket.count() == 4  # a bigger burst gives nothing now


def test_a_new_leaky_plan_keeps_the_calls_in_the_bucket() -> None:
    clock = Clock()
    bucket = Bucket.leaky(capacity=40, leak_per_s=2.0, clock=clock)
    assert all(bucket.take() for _ in range(30))
    bucket.reshape(2.0, 80)  # Shopify Plus
    assert bucket.header() == "30/80"
    bucket.reshape(2.0, 20)  # smaller than what is in it: full until the calls leak away
    assert bucket.header() == "20/20" and not bucket.take()
    clock.now = 5.0  # 10 leaked: 20 in a bucket of 20
    assert not bucket.take()
    clock.now = 5.5
    assert bucket.take() and bucket.header() == "20/20"


def test_walmart_reading_of_the_count() -> None:
    clock = Clock()
    bucket = Bucket(rate=0.5, burst=3, clock=clock)
    assert bucket.seconds_to_next_token() == 0  # full
    assert bucket.take() and bucket.count() == 2
    assert bucket.seconds_to_next_token() == 2.0
    clock.now = 1.0
    assert bucket.count() == 2 and bucket.seconds_to_next_token() == 1.0  # half a token earned
