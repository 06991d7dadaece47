"""Retrying external calls (agents/retry.py): transient errors up to the policy's attempts from
settings, full-jitter backoff never below Retry-After, permanent errors never retried."""

import pytest

from retail_sync.agents.retry import RetryPolicy, backoff_delay, call_with_retries
from retail_sync.connectors.errors import PermanentError, RateLimitedError, RetryableError
from retail_sync.settings import Settings

SETTINGS = Settings(marketplace_max_attempts=3, marketplace_backoff_base_s=0.001,
                    marketplace_backoff_max_s=0.002, erp_max_attempts=5,
                    erp_backoff_base_s=0.001, erp_backoff_max_s=0.002)


def failing(errors):
    calls = []

    async def call():
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return call, calls


async def test_marketplace_calls_use_their_own_limit():
    call, calls = failing([RetryableError("503")] * 10)
    with pytest.raises(RetryableError):
        await call_with_retries(call, SETTINGS, policy=RetryPolicy.marketplace(SETTINGS))
    assert len(calls) == 3  # marketplace_max_attempts, not the ERP's 5
    call, calls = failing([RetryableError("503")] * 10)
    with pytest.raises(RetryableError):
        await call_with_retries(call, SETTINGS)
    assert len(calls) == 5


async def test_a_transient_error_then_success_and_a_permanent_one_at_once():
    call, calls = failing([RateLimitedError("429", retry_after=0.001), RetryableError("reset")])
    assert await call_with_retries(call, SETTINGS, policy=RetryPolicy.marketplace(SETTINGS)) == "ok"
    assert len(calls) == 3
    call, calls = failing([PermanentError("400 invalid sku")])
    with pytest.raises(PermanentError):
        await call_with_retries(call, SETTINGS, policy=RetryPolicy.marketplace(SETTINGS))
    assert len(calls) == 1


def test_backoff_is_capped_jittered_and_never_below_retry_after():
    policy = RetryPolicy(attempts=10, base_s=0.5, max_s=4.0)
    delays = [backoff_delay(8, SETTINGS, None, policy) for _ in range(200)]
    assert all(0 <= d <= 4.0 for d in delays) and len(set(delays)) > 100  # full jitter
    assert all(backoff_delay(1, SETTINGS, 7.5, policy) == 7.5 for _ in range(20))
    with pytest.raises(ValueError, match="marketplace_backoff_base_s"):
        Settings(marketplace_backoff_base_s=10, marketplace_backoff_max_s=1)


async def test_a_lambda_returning_a_coroutine_is_awaited_and_retried():
    """The agents pass ``lambda: outbound.call(...)``: its coroutine is awaited on every try."""
    call, calls = failing([RetryableError("503")])
    assert await call_with_retries(lambda: call(), SETTINGS) == "ok"
    assert len(calls) == 2


async def test_the_connector_helpers_await_a_lambda_returning_a_coroutine():
    """tenacity awaits only coroutine functions; connectors.retry wraps the call, so a lambda
    (or any callable returning an awaitable) is awaited and retried, not returned unawaited."""
    from retail_sync.connectors.retry import on_transient, while_result

    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RetryableError("try again")
        return "done"

    assert await on_transient(lambda: flaky(), attempts=5, base_s=0.0, max_s=0.0) == "done"
    assert len(calls) == 3

    answers = iter([429, 429, 200])

    async def paced() -> int:
        return next(answers)

    assert await while_result(lambda: paced(), lambda status: status == 429, attempts=5) == 200
