"""The one retry policy (``core.retry``): its playbook syntax, checked before
anything runs, and its decisions (transient only, attempts, backoff, deadline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import OperationFailed, PlaybookError, TransientError
from core.retry import RetryPolicy
from runbook.playbook import parse

STEP = """
name: p
steps:
  - key: stop_stack
    approval: auto
    timeout: 60s
{retry}
"""


def _parse(retry: str):
    return parse(STEP.format(retry=retry), Path("p.yaml"))[2][0]


def test_defaults_and_declared_limits():
    assert _parse("").retry == RetryPolicy(attempts=3, backoff_s=1.0, max_backoff_s=30.0)
    spec = _parse("    retry: {attempts: 5, backoff: 2s, max: 1m}")
    assert spec.retry == RetryPolicy(attempts=5, backoff_s=2.0, max_backoff_s=60.0)


@pytest.mark.parametrize(
    ("retry", "message"),
    [
        ("    retry: 3", "field 'retry': must be a mapping"),
        ("    retry: {attempts: 0}", "field 'retry.attempts': must be an integer from 1 to 20"),
        ("    retry: {attempts: true}", "field 'retry.attempts'"),
        ("    retry: {backoff: soon}", "field 'retry.backoff': bad duration"),
        ("    retry: {backoff: 10s, max: 2s}", "field 'retry.max': 2.0s is shorter than"),
        ("    retry: {tries: 2}", "field 'retry.tries': unknown field"),
    ],
)
def test_bad_retry_is_refused_naming_the_field(retry, message):
    with pytest.raises(PlaybookError) as info:
        _parse(retry)
    assert "step 1 (stop_stack)" in info.value.detail and message in info.value.detail


def test_only_transient_errors_are_retried_within_attempts_and_deadline():
    policy = RetryPolicy(attempts=3, backoff_s=1.0, max_backoff_s=3.0)
    transient = TransientError("x: HTTP 503")
    assert policy.wait_before(1, transient, 100) == (1.0, "")
    assert policy.wait_before(2, transient, 100) == (2.0, "")
    assert policy.wait_before(3, transient, 100)[1] == "gave up after 3 attempt(s)"
    assert policy.wait_before(1, OperationFailed("tunnels.archive", "409"), 100)[0] < 0
    assert policy.wait_before(1, ValueError("bug"), 100)[0] < 0
    # Retry-After is honoured above the backoff, never past the deadline.
    assert policy.wait_before(1, TransientError("x", retry_after=7), 100) == (7.0, "")
    wait, why = policy.wait_before(1, TransientError("x", retry_after=700), 100)
    assert wait < 0 and "retry after 11.7m" in why and "remaining deadline" in why
    wait, why = policy.wait_before(2, transient, 1.5)
    assert wait < 0 and "past the step's deadline" in why


def test_call_applies_the_policy_and_says_why_it_stopped():
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise TransientError("remote: HTTP 503")
        return "ok"

    seen: list[tuple[int, float]] = []
    policy = RetryPolicy(attempts=3, backoff_s=0.0, max_backoff_s=0.0)
    assert policy.call(flaky, on_retry=lambda n, exc, wait: seen.append((n, wait))) == "ok"
    assert seen == [(1, 0.0), (2, 0.0)]
    tries.clear()
    with pytest.raises(TransientError) as info:
        RetryPolicy(attempts=2, backoff_s=0.0, max_backoff_s=0.0).call(flaky)
    assert info.value.detail == "remote: HTTP 503 (gave up after 2 attempt(s))"
