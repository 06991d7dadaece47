"""The circuit breaker: opens after repeated failures, waits a cool-down, probes, closes."""

from retail_sync.connectors.breaker import CircuitBreaker


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_opens_after_repeated_failures_and_closes_after_a_successful_probe():
    clock = Clock()
    breaker = CircuitBreaker("amazon", failures=3, cool_down_s=10, clock=clock)
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state == "closed" and breaker.wait_time() == 0
    breaker.record_failure()
    assert breaker.state == "open" and breaker.wait_time() == 10
    clock.now += 10
    assert breaker.state == "half_open" and breaker.wait_time() == 0
    breaker.record_success()
    assert breaker.state == "closed" and breaker.failures == 0


def test_a_failed_probe_doubles_the_cool_down_up_to_the_cap():
    clock = Clock()
    breaker = CircuitBreaker("erp", failures=1, cool_down_s=10, max_cool_down_s=25, clock=clock)
    breaker.record_failure()
    clock.now += 10
    breaker.record_failure()
    assert breaker.wait_time() == 20
    clock.now += 20
    breaker.record_failure()
    assert breaker.wait_time() == 25
    clock.now += 25
    breaker.record_success()
    assert breaker.cool_down_s == 10


async def test_wait_ready_returns_once_the_cool_down_is_over():
    breaker = CircuitBreaker("walmart", failures=1, cool_down_s=0.05)
    breaker.record_failure()
    assert breaker.state == "open"
    await breaker.wait_ready()
    assert breaker.state == "half_open"
