"""Playbooks: YAML files in ``playbooks/``, rendered with Jinja2, then parsed.

Each playbook is an ordered list of steps named by key, each with its approval
policy, a step timeout and a failure rule. Everything that can be wrong with a
playbook is found here, before anything runs: template errors, unknown keys,
bad durations, unknown or empty approver groups, and ``auto`` on an
irreversible step of a production target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml

from core.durations import parse_duration
from core.errors import PlaybookError
from core.retry import RetryPolicy
from runbook.inventory import Inventory
from runbook.registry import load_steps

PLAYBOOK_DIR = Path(__file__).resolve().parent.parent / "playbooks"
SEVERITIES = ("info", "low", "medium", "high", "critical")


def playbook_dir() -> Path:
    return Path(os.environ.get("MCP_IR_PLAYBOOK_DIR") or PLAYBOOK_DIR)


def available_playbooks() -> list[str]:
    return sorted(p.stem for p in playbook_dir().glob("*.yaml") if not p.name.startswith("_"))


@dataclass(frozen=True)
class Approval:
    """``required`` distinct people from ``group``; a timeout rejects."""

    required: int
    group: str
    timeout_s: float
    allow_initiator: bool = False
    escalate_after_s: float | None = None
    escalate_to: str | None = None
    # Where a decision may come from: cli (the person's SSH signature), slack (the
    # receiving service's countersignature), ui (an unsigned Prefect UI/API RunInput:
    # only for a Prefect server behind per-user SSO).
    channels: tuple[str, ...] = ("cli", "slack")


@dataclass(frozen=True)
class StepSpec:
    key: str
    approval: Approval | None  # None means auto
    timeout_s: float
    on_failure: Literal["abort", "continue"]
    reversible: bool
    params: dict[str, Any] = field(default_factory=dict)
    auto_reason: str = ""
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def auto(self) -> bool:
        return self.approval is None


@dataclass(frozen=True)
class Playbook:
    name: str
    description: str
    steps: list[StepSpec]
    source: Path

    def step(self, key: str) -> StepSpec:
        for s in self.steps:
            if s.key == key:
                return s
        raise PlaybookError(f"{self.source}: playbook {self.name!r} has no step {key!r}")


def severity_at_least(severity: str, threshold: str) -> bool:
    """Whether ``severity`` is at or above ``threshold`` (unknown severities are not)."""
    if severity not in SEVERITIES or threshold not in SEVERITIES:
        return False
    return SEVERITIES.index(severity) >= SEVERITIES.index(threshold)


_STEP_FIELDS = {"key", "approval", "timeout", "on_failure", "params", "auto_reason", "retry"}
_APPROVAL_FIELDS = {
    "required",
    "group",
    "timeout",
    "allow_initiator",
    "escalate_after",
    "escalate_to",
    "channels",
}
_CHANNELS = ("cli", "slack", "ui")


def render(name: str, context: dict[str, Any]) -> tuple[str, Path]:
    path = playbook_dir() / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(available_playbooks()) or "none"
        raise PlaybookError(f"unknown playbook {name!r} (known: {known})")
    # Shared macros (playbooks/_gates.j2) resolve from the playbook dir, then the repo's.
    loader = jinja2.FileSystemLoader([str(path.parent), str(PLAYBOOK_DIR)])
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 (YAML, not HTML)
    env.globals["severity_at_least"] = severity_at_least
    try:
        return env.get_template(path.name).render(**context), path
    except jinja2.TemplateSyntaxError as exc:
        raise PlaybookError(f"{path}:{exc.lineno}: template error: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise PlaybookError(f"{path}: template error: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise PlaybookError(f"{path}: template error: cannot find {exc.name!r}") from None


def _duration(path: Path, where: str, field_name: str, value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise PlaybookError(f"{path}: {where}: field '{field_name}': {exc}") from None


def _retry(path: Path, where: str, raw: Any) -> RetryPolicy:
    try:
        return RetryPolicy.parse(raw)
    except ValueError as exc:
        raise PlaybookError(f"{path}: {where}: {exc}") from None


def _approval(path: Path, where: str, raw: Any) -> Approval | None:
    if raw == "auto":
        return None
    if not isinstance(raw, dict):
        raise PlaybookError(
            f"{path}: {where}: field 'approval': must be 'auto' or a mapping with required/group/timeout"
        )
    unknown = set(raw) - _APPROVAL_FIELDS
    if unknown:
        raise PlaybookError(
            f"{path}: {where}: field 'approval.{sorted(unknown)[0]}': unknown field"
        )
    for need in ("required", "group", "timeout"):
        if need not in raw:
            raise PlaybookError(f"{path}: {where}: field 'approval.{need}': required")
    required = raw["required"]
    if not isinstance(required, int) or isinstance(required, bool) or required < 1:
        raise PlaybookError(f"{path}: {where}: field 'approval.required': must be an integer >= 1")
    if not isinstance(raw["group"], str) or not raw["group"]:
        raise PlaybookError(f"{path}: {where}: field 'approval.group': must name an approver group")
    allow = raw.get("allow_initiator", False)
    if not isinstance(allow, bool):
        raise PlaybookError(
            f"{path}: {where}: field 'approval.allow_initiator': must be true or false"
        )
    escalate_after = raw.get("escalate_after")
    channels = raw.get("channels", ["cli", "slack"])
    if (
        not isinstance(channels, list)
        or not channels
        or any(c not in _CHANNELS for c in channels)
        or len(set(channels)) != len(channels)
    ):
        raise PlaybookError(
            f"{path}: {where}: field 'approval.channels': must be a non-empty list of "
            f"distinct channels from {', '.join(_CHANNELS)} (got {channels!r})"
        )
    return Approval(
        required=required,
        group=raw["group"],
        timeout_s=_duration(path, where, "approval.timeout", raw["timeout"]),
        allow_initiator=allow,
        escalate_after_s=None
        if escalate_after is None
        else _duration(path, where, "approval.escalate_after", escalate_after),
        escalate_to=raw.get("escalate_to"),
        channels=tuple(channels),
    )


def parse(text: str, path: Path) -> tuple[str, str, list[StepSpec]]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise PlaybookError(f"{path}: not valid YAML after rendering{where}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("steps"), list) or not raw["steps"]:
        raise PlaybookError(f"{path}: a playbook needs a non-empty 'steps' list")
    registry = load_steps()
    steps: list[StepSpec] = []
    seen: set[str] = set()
    for index, item in enumerate(raw["steps"], start=1):
        if not isinstance(item, dict) or "key" not in item:
            raise PlaybookError(f"{path}: step {index}: field 'key': required")
        key = item["key"]
        where = f"step {index} ({key})"
        if key not in registry:
            raise PlaybookError(
                f"{path}: {where}: unknown step key {key!r} (known: {', '.join(sorted(registry))})"
            )
        if key in seen:
            raise PlaybookError(f"{path}: {where}: step listed twice")
        seen.add(key)
        unknown = set(item) - _STEP_FIELDS
        if unknown:
            raise PlaybookError(f"{path}: {where}: field {sorted(unknown)[0]!r}: unknown field")
        if "approval" not in item:
            raise PlaybookError(f"{path}: {where}: field 'approval': required ('auto' or a gate)")
        on_failure = item.get("on_failure", "abort")
        if on_failure not in ("abort", "continue"):
            raise PlaybookError(
                f"{path}: {where}: field 'on_failure': must be 'abort' or 'continue'"
            )
        params = item.get("params") or {}
        if not isinstance(params, dict):
            raise PlaybookError(f"{path}: {where}: field 'params': must be a mapping")
        steps.append(
            StepSpec(
                key=key,
                approval=_approval(path, where, item["approval"]),
                timeout_s=_duration(path, where, "timeout", item.get("timeout", "10m")),
                on_failure=on_failure,
                reversible=registry[key].reversible,
                params=params,
                auto_reason=str(item.get("auto_reason", "")),
                retry=_retry(path, where, item.get("retry")),
            )
        )
    return str(raw.get("name", path.stem)), str(raw.get("description", "")), steps


def load_playbook(
    name: str, *, inventory: Inventory, target: str, context: dict[str, Any] | None = None
) -> Playbook:
    """Renders, parses and checks a playbook against the target it will run on.

    Raises:
        PlaybookError: naming the file, the step and the field.
    """
    tgt = inventory.target(target)
    ctx = {
        "target": tgt.model_dump(mode="json"),
        "target_name": target,
        "sandbox": tgt.sandbox,
        "policy": "standard",
        "drill": False,
        "trigger": {"kind": "manual", "severity": "high", "auto_contain": False},
        "severity": "high",
    }
    ctx.update(context or {})
    text, path = render(name, ctx)
    pb_name, description, steps = parse(text, path)
    registry = load_steps()
    from targets import driver_for

    driver = driver_for(tgt.kind)
    for index, spec in enumerate(steps, start=1):
        where = f"step {index} ({spec.key})"
        missing = sorted(registry[spec.key].needs - driver.capabilities)
        if missing:
            raise PlaybookError(
                f"{path}: {where}: step does not support target kind {tgt.kind!r} of target "
                f"{target!r}: its driver lacks the capabilit"
                f"{'y' if len(missing) == 1 else 'ies'} the step needs: {', '.join(missing)}"
            )
        unattended = tgt.sandbox or (tgt.drill and ctx.get("drill"))
        if spec.auto and not spec.reversible and not unattended:
            raise PlaybookError(
                f"{path}: {where}: field 'approval': 'auto' is refused on an irreversible step "
                f"unless the target is a sandbox/drill target ({target!r} is not; mark it "
                "'sandbox: true' or, for rotation drills, 'drill: true')"
            )
        gate = spec.approval
        if gate is None:
            continue
        for field_name, group in (("group", gate.group), ("escalate_to", gate.escalate_to)):
            if group is None:
                continue
            if not inventory.has_group(target, group):
                raise PlaybookError(
                    f"{path}: {where}: field 'approval.{field_name}': unknown approver group {group!r}"
                )
        members = inventory.group_members(target, gate.group)
        if gate.required > len(members):
            raise PlaybookError(
                f"{path}: {where}: field 'approval.required': {gate.required} approvers needed but "
                f"group {gate.group!r} has only {len(members)} member(s)"
            )
    return Playbook(name=pb_name, description=description, steps=steps, source=path)
