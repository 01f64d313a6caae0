"""The one playbook flow: one parameter model (:class:`PlaybookRun`), one body
(:func:`flows.execute.execute`), and thin named entries for ``prefect.yaml``'s
deployments (:func:`playbook_entry`) that differ only in their name and defaults.

The flow's parameters are the model's fields, flat (what ``run_deployment`` and
the deployments' ``parameters:`` pass); the signature Prefect reads is derived
from the model, so it is written once, here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect import flow
from prefect.flows import Flow
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict


class PlaybookRun(BaseModel):
    """What a playbook run is given. ``options`` are playbook switches kept in the
    incident's trigger, so a resumed run honours them (``remove_config`` for
    teardown, ``rotate_ca`` for the rotation drill)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    playbook: str
    target: str
    initiator: str
    incident_id: str | None = None
    trigger: dict[str, Any] | None = None
    severity: str | None = None
    window_start: str | None = None
    window_end: str | None = None
    policy: str = "standard"
    options: dict[str, Any] | None = None
    config_path: str | None = None
    evidence_dir: str | None = None


@dataclass(frozen=True)
class Profile:
    """What a named entry sets for its playbook: the trigger ``kind`` it records, the
    default severity, whether runs are drills, and a hook run after the playbook
    (with the result, also when it ended without success)."""

    trigger_kind: str = "manual"
    severity: str = "high"
    drill: bool = False
    after: Callable[[PlaybookRun, str, dict[str, Any]], None] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


def run(params: PlaybookRun, profile: Profile | None = None) -> dict[str, Any]:
    """Runs ``params.playbook`` under ``params.incident_id`` (a new id when omitted);
    the same incident id again resumes it. Raises ``RunEnded`` without success."""
    from flows.execute import execute
    from flows.incident import RunEnded
    from runbook.launch import new_incident_id

    profile = profile or Profile()
    incident_id = params.incident_id or new_incident_id()
    if params.trigger and profile.trigger_kind == "manual":
        trigger = dict(params.trigger)  # what the caller (the intake, an alert) says
    else:
        trigger = {"kind": profile.trigger_kind, "by": params.initiator, **(params.trigger or {})}
    trigger.update({k: v for k, v in (params.options or {}).items() if v})
    resolved = params.model_copy(
        update={
            "incident_id": incident_id,
            "trigger": trigger,
            "severity": params.severity or profile.severity,
        }
    )
    try:
        result = execute(resolved, drill=profile.drill)
    except RunEnded as exc:
        if profile.after is not None:
            profile.after(params, incident_id, exc.result)
        raise
    if profile.after is not None:
        profile.after(params, incident_id, result)
    return result


def _signature(fixed: set[str], defaults: dict[str, Any]) -> inspect.Signature:
    """The flat flow signature, from the model's fields (required ones first)."""
    required, optional = [], []
    for name, info in PlaybookRun.model_fields.items():
        if name in fixed:
            continue
        default = defaults.get(name, info.default if not info.is_required() else inspect._empty)
        param = inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=info.annotation
        )
        (required if default is inspect._empty else optional).append(param)
    return inspect.Signature([*required, *optional], return_annotation=dict[str, Any])


def _run_name() -> str:
    params = flow_run.parameters
    return str(params.get("incident_id") or f"{params.get('target', 'run')}")


def playbook_entry(playbook: str | None, profile: Profile | None = None) -> Flow[..., Any]:
    """A Prefect flow for ``playbook`` (``None``: the generic ``run-playbook``, whose
    first parameter names the playbook). Its parameters are :class:`PlaybookRun`'s
    fields, with the profile's defaults."""
    prof = profile or Profile()
    fixed = {"playbook"} if playbook else set()

    def body(**kwargs: Any) -> dict[str, Any]:
        params = PlaybookRun(**({"playbook": playbook} if playbook else {}), **kwargs)
        return run(params, prof)

    name = playbook or "run-playbook"
    body.__name__ = body.__qualname__ = name.replace("-", "_")
    body.__doc__ = (
        f"Runs the {playbook!r} playbook." if playbook else "Runs any playbook by name."
    ) + " Running it again with the same incident id resumes where it stopped."
    body.__signature__ = _signature(fixed, prof.defaults)  # type: ignore[attr-defined]
    return flow(name=name, flow_run_name=_run_name, log_prints=False, persist_result=False)(body)
