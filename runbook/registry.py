"""Step declarations.

A step is declared where it is defined, with its key, whether its effect can be
undone, and the target-driver capabilities it needs (``needs``; ``targets/base.py``).
Playbooks name steps by key; an unknown key, or a step whose target's driver lacks a
capability it needs, is an error before anything runs.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from core.operations import Operation

if TYPE_CHECKING:
    from runbook.context import StepContext


@dataclass(frozen=True)
class Plan:
    """What a step will do against a target, exactly: an approval is bound to the
    SHA-256 of this object, so approving one plan never approves another.

    ``operations`` are the mutating calls, as data: the plan hash covers them and at
    run time the guard refuses any mutating call they do not list. ``api_calls`` is
    how people read the plan: the read-only calls given, then every operation's
    ``METHOD path (note)``."""

    step: str
    target: str
    summary: str
    resources: list[str] = field(default_factory=list)
    api_calls: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    operations: list[Operation] = field(default_factory=list)

    def __post_init__(self) -> None:
        calls = list(self.api_calls)
        calls += [c for c in (op.call() for op in self.operations) if c not in calls]
        object.__setattr__(self, "api_calls", calls)

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hash": self.digest()}


class Step(ABC):
    """check → apply → verify. Subclasses set the class attributes and implement
    ``plan``, ``apply`` and ``verify``; ``check`` returns a reason when the effect is
    already in place (the step then records that and does not act again)."""

    key: ClassVar[str]
    reversible: ClassVar[bool]
    # Target-driver capabilities the step calls (``targets.base``); the playbook check
    # refuses the step on a target whose driver lacks one.
    needs: ClassVar[frozenset[str]] = frozenset()
    description: ClassVar[str] = ""

    @abstractmethod
    def plan(self, ctx: StepContext) -> Plan: ...

    # A form a person fills in while the step waits (e.g. the vendor ticket); the
    # runner pauses for it after the gate and hands the data over as ``ctx.manual``.
    manual_input: ClassVar[type[Any] | None] = None

    def prepare(self, ctx: StepContext) -> dict[str, Any] | None:
        """Optional read-only work done BEFORE the gate (its ``summary`` is shown to the
        people deciding). Runs once per plan; its result is ``ctx.prepared``."""
        return None

    def manual_prompt(self, ctx: StepContext) -> str:
        return f"Record the outcome of `{self.key}`."

    def validate_manual(self, ctx: StepContext, data: dict[str, Any]) -> None:
        """Raises ``ApprovalRefused`` when the recorded data does not count."""
        by = data.get("by")
        if not by or by not in ctx.inventory.people:
            from core.errors import ApprovalRefused

            raise ApprovalRefused(f"{by!r} is not a person in the inventory")

    def check(self, ctx: StepContext) -> str | None:
        return None

    def new_plan(self, ctx: StepContext, summary: str, **fields: Any) -> Plan:
        """This step's plan against the incident's target (``fields``: the rest of
        :class:`Plan`)."""
        return Plan(step=self.key, target=ctx.incident.target, summary=summary, **fields)

    def planned(self, ctx: StepContext, part: Any, **fields: Any) -> Plan:
        """The plan made of a driver's ``PlanPart`` (``fields`` override or add)."""
        values: dict[str, Any] = {
            "summary": part.summary,
            "resources": list(part.resources),
            "api_calls": list(part.reads),
            "operations": list(part.operations),
            "parameters": dict(part.parameters),
        }
        values.update(fields)
        return self.new_plan(ctx, **values)

    @abstractmethod
    def apply(self, ctx: StepContext) -> dict[str, Any]: ...

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class DriverCalls:
    """Names of the target-driver methods (``targets.base.TargetDriver``) that a
    :class:`DriverStep`'s plan, check, apply and verify are."""

    plan: str
    check: str
    apply: str
    verify: str


class DriverStep(Step):
    """A step that is its target driver's work and nothing else: each phase calls the
    driver method :attr:`calls` names, so such steps hold no copy of the delegation
    (and no kind branch). A subclass may still wrap a phase (``super().apply(ctx)``)."""

    calls: ClassVar[DriverCalls]

    def plan(self, ctx: StepContext) -> Plan:
        return self.planned(ctx, getattr(ctx.driver, self.calls.plan)(ctx))

    def check(self, ctx: StepContext) -> str | None:
        return getattr(ctx.driver, self.calls.check)(ctx)

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        return getattr(ctx.driver, self.calls.apply)(ctx)

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        return getattr(ctx.driver, self.calls.verify)(ctx)


_REGISTRY: dict[str, type[Step]] = {}


def register(cls: type[Step]) -> type[Step]:
    """Class decorator: adds a step to the registry under its ``key``."""
    if cls.key in _REGISTRY and _REGISTRY[cls.key] is not cls:
        raise ValueError(f"step key {cls.key!r} registered twice")
    _REGISTRY[cls.key] = cls
    return cls


def load_steps() -> dict[str, type[Step]]:
    """Imports the step modules (registering them) and returns the registry."""
    import runbook.steps  # noqa: F401  (import registers)

    return dict(_REGISTRY)


def get_step(key: str) -> type[Step]:
    steps = load_steps()
    return steps[key]
