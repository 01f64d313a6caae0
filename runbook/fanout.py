"""Running one playbook over several targets with rate control, the way AWS Systems
Manager Automation does it.

* ``max_concurrency``: at most this many targets run at once (a number, or a
  percentage of the targets, at least 1).
* ``max_errors``: once MORE than this many targets have failed, no new target is
  started (a number or a percentage; ``0`` stops at the first failure). Targets
  already running are allowed to finish; the rest are reported as not started.

Each target runs as its own incident (own trail) through a ``launch`` callable, so
this module knows nothing about playbooks: it schedules, counts and reports.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Literal

from core.errors import ConfigError
from runbook.inventory import Inventory

Status = Literal["succeeded", "failed", "not_started"]
_LIMIT = re.compile(r"^(\d+)(%?)$")
_SELECTOR = re.compile(r"^([A-Za-z0-9_./-]+)=(.*)$")


@dataclass(frozen=True)
class TargetOutcome:
    """How one target ended."""

    target: str
    status: Status
    incident_id: str | None = None
    detail: str = ""
    duration_s: float = 0.0


@dataclass
class FanoutResult:
    """Every target's outcome, in the order they were given, and why the fan-out
    stopped early (None when it did not)."""

    outcomes: list[TargetOutcome] = field(default_factory=list)
    stopped_reason: str | None = None

    def with_status(self, status: Status) -> list[str]:
        return [o.target for o in self.outcomes if o.status == status]

    @property
    def ok(self) -> bool:
        return all(o.status == "succeeded" for o in self.outcomes)

    def summary(self) -> list[str]:
        """Human-readable lines: which targets ran, failed, were not started."""
        ran = [o.target for o in self.outcomes if o.status != "not_started"]
        lines = [
            f"ran {len(ran)} of {len(self.outcomes)} target(s): {', '.join(ran) or 'none'}",
            f"succeeded: {', '.join(self.with_status('succeeded')) or 'none'}",
            f"failed: {', '.join(self.with_status('failed')) or 'none'}",
            f"not started: {', '.join(self.with_status('not_started')) or 'none'}",
        ]
        if self.stopped_reason:
            lines.append(f"stopped: {self.stopped_reason}")
        return lines


def parse_limit(value: str | int, total: int, field_name: str, *, minimum: int) -> int:
    """``"3"`` → 3; ``"50%"`` → that share of ``total`` (concurrency rounds up, errors
    down, as SSM does). Raises ``ConfigError`` naming the option otherwise."""
    match = _LIMIT.match(str(value).strip())
    if not match:
        raise ConfigError(
            f"{field_name}: must be a whole number or a percentage like 10% (got {value!r})"
        )
    number, percent = int(match.group(1)), bool(match.group(2))
    if percent:
        if number > 100:
            raise ConfigError(f"{field_name}: a percentage cannot exceed 100% (got {value!r})")
        share = total * number / 100
        number = math.ceil(share) if minimum >= 1 else math.floor(share)
    if number < minimum:
        raise ConfigError(f"{field_name}: must be at least {minimum} (got {value!r})")
    return number


def select_targets(inventory: Inventory, names: list[str], selectors: list[str]) -> list[str]:
    """Targets named with ``--target`` plus those whose ``labels`` match EVERY
    ``key=value`` selector; no duplicates, inventory order for selected ones.

    Raises:
        ConfigError: an unknown target, a malformed selector, or nothing selected.
    """
    chosen: list[str] = []
    for name in names:
        inventory.target(name)  # raises UnknownTargetError naming it
        if name not in chosen:
            chosen.append(name)
    wanted: dict[str, str] = {}
    for sel in selectors:
        match = _SELECTOR.match(sel)
        if not match:
            raise ConfigError(f"--selector: expected KEY=VALUE (got {sel!r})")
        wanted[match.group(1)] = match.group(2)
    if wanted:
        matched = [
            name
            for name, target in inventory.targets.items()
            if all(target.labels.get(k) == v for k, v in wanted.items())
        ]
        if not matched:
            shown = ", ".join(f"{k}={v}" for k, v in wanted.items())
            raise ConfigError(f"--selector: no target in the inventory has labels {shown}")
        chosen += [m for m in matched if m not in chosen]
    if not chosen:
        raise ConfigError("--target: give at least one target (or --selector KEY=VALUE)")
    return chosen


def run_fanout(
    targets: list[str],
    launch: Callable[[str], TargetOutcome],
    *,
    max_concurrency: int,
    max_errors: int,
    emit: Callable[[str], None] = print,
) -> FanoutResult:
    """Runs ``launch(target)`` for each target under the two limits.

    ``launch`` must not raise for a failed run: it returns a ``failed`` outcome. An
    exception it does raise is counted as that target's failure.
    """
    if max_concurrency < 1:
        raise ConfigError(f"max_concurrency: must be at least 1 (got {max_concurrency})")
    if max_errors < 0:
        raise ConfigError(f"max_errors: must be 0 or more (got {max_errors})")
    outcomes: dict[str, TargetOutcome] = {}
    lock = threading.Lock()
    errors = 0
    stopped: str | None = None
    pending = list(targets)

    def guarded(target: str) -> TargetOutcome:
        started = time.monotonic()
        try:
            return launch(target)
        except Exception as exc:  # noqa: BLE001 (one target's crash is its failure, not the fan-out's)
            return TargetOutcome(
                target,
                "failed",
                detail=f"{type(exc).__name__}: {exc}",
                duration_s=time.monotonic() - started,
            )

    with ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="fanout") as pool:
        running: dict[Future[TargetOutcome], str] = {}
        while pending or running:
            while pending and stopped is None and len(running) < max_concurrency:
                target = pending.pop(0)
                emit(f"[{target}] starting ({len(outcomes) + len(running) + 1}/{len(targets)})")
                running[pool.submit(guarded, target)] = target
            if not running:
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                target = running.pop(future)
                outcome = future.result()
                with lock:
                    outcomes[target] = outcome
                    if outcome.status == "failed":
                        errors += 1
                emit(
                    f"[{target}] {outcome.status}"
                    + (f" ({outcome.incident_id})" if outcome.incident_id else "")
                    + (f": {outcome.detail}" if outcome.detail else "")
                )
                if outcome.status == "failed" and errors > max_errors and stopped is None:
                    stopped = (
                        f"{errors} target(s) failed, more than --max-errors {max_errors}: "
                        f"no new target started ({len(pending)} left)"
                    )
                    emit(f"stopping: {stopped}")
    for target in pending:
        outcomes[target] = TargetOutcome(target, "not_started", detail="error limit reached")
    return FanoutResult([outcomes[t] for t in targets], stopped)
