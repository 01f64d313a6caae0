"""A step's work as Prefect tasks, and the retry policy around it.

``run_step`` is one try (check → apply → verify) with the step's deadline visible
to the adapters (:func:`core.retry.remaining`); :func:`run_attempts` runs it under
the step's :class:`~core.retry.RetryPolicy`.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from core import failpoints, retry
from core.durations import format_duration
from core.errors import McpIrError
from core.trail import Trail
from flows.progress import emit
from runbook.context import StepContext
from runbook.guarded import plan_bound
from runbook.playbook import StepSpec
from runbook.registry import load_steps


@task(name="run-step", cache_policy=NO_CACHE, persist_result=False)
def run_step(key: str, ctx: StepContext, deadline_at: float) -> dict[str, Any]:
    """check → apply → verify for one step, inside a Prefect task; adapters see the
    step's deadline (``core.retry.remaining``)."""
    step = load_steps()[key]()
    # Every mutating call: in the approved plan, or refused (runbook/guarded.py).
    with retry.deadline(deadline_at), plan_bound(ctx):
        failpoints.reach(key, "before_check")
        reason = step.check(ctx)
        if reason:
            ctx.record("step.already_done", {"reason": reason})
            outcome: dict[str, Any] = {"already_done": reason}
        else:
            outcome = step.apply(ctx) or {}
        failpoints.reach(key, "after_apply")
        verification = step.verify(ctx) or {}
    return {"outcome": outcome, "verify": verification}


@task(name="prepare-step", cache_policy=NO_CACHE, persist_result=False)
def prepare_step(key: str, ctx: StepContext) -> dict[str, Any]:
    """A step's read-only preparation, inside a Prefect task."""
    return load_steps()[key]().prepare(ctx) or {}


def run_attempts(
    trail: Trail, spec: StepSpec, ctx: StepContext, deadline_at: float
) -> dict[str, Any]:
    """Runs the step until it succeeds, under its retry policy: a
    :class:`TransientError` runs it again (``check`` first) after the policy's
    wait, recorded as ``step.retry``; anything else, the last try, or a wait that
    would pass the step's deadline ends it."""
    attempt = 1
    while True:
        left = deadline_at - time.monotonic()
        try:
            return run_step.with_options(
                task_run_name=spec.key if attempt == 1 else f"{spec.key}-{attempt}",
                timeout_seconds=max(1.0, left),
            )(spec.key, quote(ctx), deadline_at)
        except McpIrError as exc:
            wait, why = spec.retry.wait_before(attempt, exc, deadline_at - time.monotonic())
            if wait < 0:
                retry.final(exc, why)
                raise
            trail.append(
                "step.retry",
                spec.key,
                {
                    "attempt": attempt,
                    "error": exc.detail,
                    "request_id": exc.request_id,
                    "wait_s": round(wait, 3),
                },
            )
            emit(
                f"      transient failure (try {attempt}/{spec.retry.attempts}), again in "
                f"{format_duration(wait)}: {trail.redactor.text(exc.detail)}"
            )
            time.sleep(wait)
            attempt += 1
