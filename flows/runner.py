"""The one runner every playbook flow shares.

For each step of the playbook, in order: skip it if an earlier run of the same
incident finished it; compute its plan; pass its gate (auto, or approvals bound
to the plan's hash, waiting in a Prefect pause with a RunInput form); run it as
a Prefect task (check → apply → verify); write every outcome to the trail.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from core import logsafe
from core.durations import format_duration
from core.errors import GateRejected, GateTimedOut, McpIrError, RunSuperseded, StepFailed
from core.trail import Trail
from flows.incident import RunEnded, incident_from_trail, iso, supersede_flow_runs
from flows.progress import emit
from flows.step_tasks import prepare_step, run_attempts
from runbook import decisions, fencing, observers
from runbook.context import Clients, Incident, StepContext, build_redactor
from runbook.gates import evaluate
from runbook.playbook import Playbook, StepSpec
from runbook.registry import Plan, Step, load_steps
from runbook.settings import Settings
from runbook.target_lock import TargetLock

__all__ = ["ApprovalInput", "RunEnded", "Runner", "emit"]  # RunEnded: for the CLI


class ApprovalInput(RunInput):
    """The form shown in the Prefect UI for a gate (and sent by the CLI and Slack)."""

    approver: str
    decision: Literal["approve", "reject"] = "approve"
    comment: str = ""
    plan_hash: str = ""
    source: str = "ui"
    # The signed statement (runbook.proofs) from `mcp-ir approve|reject` or the Slack
    # receiver; empty from the Prefect UI/API, which counts only where a gate lists `ui`.
    proof: str = ""


def back_to_running() -> None:
    """After a pause times out, Prefect marks the run failed; the runner decides what a
    timeout means (escalate and wait again, or reject), so it puts the run back to
    running before either."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.get_id(), Running(), force=True)


def deployment_id() -> str | None:
    """The Prefect deployment this run came through (None: started in-process)."""
    from prefect.runtime import deployment

    try:
        return deployment.get_id()
    except Exception:  # noqa: BLE001 (outside a run, or the server unreachable: not through one)
        return None


def pause_key(step: str, round_no: int) -> str:
    return f"{step.replace('_', '-')}-{round_no}"


class Runner:
    def __init__(self, settings: Settings, incident: Incident) -> None:
        self.settings = settings
        self.incident = incident
        self.inventory = settings.inventory()
        self.target = self.inventory.target(incident.target)
        self.redactor = build_redactor(self.target)
        logsafe.install(self.redactor)
        self.trail = Trail.open(settings.evidence_dir, incident.id, self.redactor)
        self.clients = Clients(self.target)
        self.log = get_run_logger()
        self.observers = observers.attach(self)

    # -- incident bookkeeping -------------------------------------------------
    def open_or_resume(self) -> bool:
        records = self.trail.records()
        existing = incident_from_trail(records)
        run_id = str(flow_run.get_id() or "")
        meta = fencing.run_meta(run_id, deployment_id())
        if existing is None:
            inc = self.incident
            self.trail.append(
                "incident.opened",
                None,
                {
                    "incident_id": inc.id,
                    "target": inc.target,
                    "playbook": inc.playbook,
                    "initiator": inc.initiator,
                    "trigger": inc.trigger,
                    "severity": inc.severity,
                    "window_start": iso(inc.window_start),
                    "window_end": iso(inc.window_end),
                    "drill": inc.drill,
                    "policy": inc.policy,
                    "sandbox": self.target.sandbox,
                    **decisions.opening(self.trail, self.inventory),
                },
            )
            self.trail.claim("run.started", meta)
            return False
        if (existing.target, existing.playbook) != (self.incident.target, self.incident.playbook):
            raise McpIrError(
                f"incident {existing.id} is a {existing.playbook!r} on target {existing.target!r}; "
                f"cannot resume it as {self.incident.playbook!r} on {self.incident.target!r}"
            )
        self.incident = existing
        previous = [
            r.data.get("flow_run_id") for r in records if r.kind in ("run.started", "run.resumed")
        ]
        _, owner = self.trail.claim("run.resumed", {**meta, "previous_flow_runs": previous})
        # The trail is ours from here: the run we replace can no longer append. Stop its
        # process where we can reach it, and tell Prefect it is over.
        stopped = fencing.stop_previous(owner)
        superseded = supersede_flow_runs([p for p in previous if p and p != run_id])
        if superseded or stopped["previous"]:
            self.trail.append("run.superseded", None, {"flow_runs": superseded, **stopped})
        for rec in records:
            if rec.kind == "lock.acquired" and not any(
                r.kind == "lock.released" and r.data.get("lease_id") == rec.data["lease_id"]
                for r in records
            ):
                released = TargetLock.release_stale(rec.data["lease_id"])
                self.trail.append(
                    "lock.released",
                    None,
                    {"lease_id": rec.data["lease_id"], "stale": True, "released": released},
                )
        return True

    def context(self, spec: StepSpec) -> StepContext:
        return StepContext.for_spec(
            spec, self.incident, self.target, self.inventory, self.trail, self.clients, log=self.log
        )

    # -- gates ----------------------------------------------------------------
    def gate(self, spec: StepSpec, plan: Plan, plan_hash: str, findings: str = "") -> None:
        ctx_trigger = self.incident.trigger
        if spec.auto:
            reason = spec.auto_reason or (
                "sandbox/drill policy" if self.target.sandbox else "playbook policy"
            )
            self.trail.append(
                "gate.auto",
                spec.key,
                {"plan_hash": plan_hash, "reason": reason, "trigger": ctx_trigger},
            )
            return
        gate = spec.approval
        assert gate is not None
        state = self.gate_state(spec)
        if state.status == "passed" and state.plan_hash == plan_hash and state.remaining == 0:
            return
        if (
            state.status in ("not_opened", "auto", "rejected", "timed_out", "passed")
            or state.plan_hash != plan_hash
        ):
            members = self.inventory.group_members(self.incident.target, gate.group)
            self.trail.append(
                "gate.opened",
                spec.key,
                {
                    "plan_hash": plan_hash,
                    "group": gate.group,
                    "required": gate.required,
                    "members": members,
                    "allow_initiator": gate.allow_initiator,
                    "timeout_s": gate.timeout_s,
                    "escalate_after_s": gate.escalate_after_s,
                    "escalate_to": gate.escalate_to,
                    "channels": list(gate.channels),
                },
            )
            state = self.gate_state(spec)
        if state.remaining > 0:
            from runbook.plan_text import plan_lines

            have = f"; approved so far: {', '.join(state.approvals)}" if state.approvals else ""
            emit(f"      waiting for {state.remaining} more approval(s) from {gate.group!r}{have}")
            for line in plan_lines({**plan.as_dict(), "summary": None}, indent="      "):
                emit(line)
            emit(
                f"      approve:   mcp-ir approve {self.incident.id} {spec.key} "
                f"--plan-hash {plan_hash}"
            )
        while state.remaining > 0:
            assert state.opened_at is not None
            elapsed = (datetime.now(UTC) - state.opened_at).total_seconds()
            left = gate.timeout_s - elapsed
            if left <= 0:
                raise self._timed_out(spec, gate.timeout_s, state.approvals)
            wait = left
            escalating = bool(gate.escalate_after_s and gate.escalate_to and not state.escalated)
            if escalating:
                wait = min(left, max(1.0, gate.escalate_after_s - elapsed))
            key = pause_key(spec.key, state.rounds + 1)
            self.trail.append(
                "gate.waiting",
                spec.key,
                {"key": key, "flow_run_id": str(flow_run.get_id()), "plan_hash": plan_hash},
            )
            description = (
                f"### Approve `{spec.key}` for incident `{self.incident.id}`\n\n{plan.summary}\n\n"
                + (f"{findings}\n\n" if findings else "")
                + f"Plan hash: `{plan_hash}`\n\nNeeds {state.remaining} more approval(s) from `{gate.group}`."
            )
            form = ApprovalInput.with_initial_data(description=description, plan_hash=plan_hash)
            try:
                decision = pause_flow_run(
                    wait_for_input=form, timeout=max(1, int(wait)), poll_interval=1, key=key
                )
            except FlowPauseTimeout:
                self.trail.check_fence()  # a superseded run leaves the flow run alone
                back_to_running()
                if (
                    escalating
                    and (datetime.now(UTC) - state.opened_at).total_seconds() < gate.timeout_s
                ):
                    members = self.inventory.group_members(self.incident.target, gate.escalate_to)
                    self.trail.append(
                        "gate.escalated", spec.key, {"to": gate.escalate_to, "members": members}
                    )
                    emit(
                        f"      no quorum after {format_duration(gate.escalate_after_s)}: escalated to {gate.escalate_to!r}"
                    )
                    state = self.gate_state(spec)
                    continue
                raise self._timed_out(spec, gate.timeout_s, state.approvals) from None
            self._decide(spec, state, decision, plan_hash)
            state = self.gate_state(spec)
        self.trail.append(
            "gate.passed", spec.key, {"plan_hash": plan_hash, "approvers": state.approvals}
        )

    def gate_state(self, spec: StepSpec) -> Any:
        """The gate's state from proven decisions only; decision records whose proof
        does not verify are reported (``approval.unproven``) and not counted."""
        state = decisions.proven_state(self.trail, self.inventory, spec, self.incident.target)
        for seq, why in decisions.report_unproven(self.trail, spec.key, state):
            emit(f"      ignored the decision record at seq {seq}: {why}")
        eligible = [
            a
            for a in state.approvals
            if a in state.members and (state.allow_initiator or a != self.incident.initiator)
        ]
        state.approvals = eligible
        return state

    def _timed_out(self, spec: StepSpec, timeout_s: float, approvals: list[str]) -> GateTimedOut:
        """Records that the gate of ``spec`` timed out without quorum (a timeout rejects)
        and returns the error to raise."""
        self.trail.append(
            "gate.timeout", spec.key, {"timeout_s": timeout_s, "approvals": approvals}
        )
        return GateTimedOut(
            f"{spec.key}: no quorum within {format_duration(timeout_s)}; a timeout rejects"
        )

    def _decide(self, spec: StepSpec, state: Any, decision: ApprovalInput, plan_hash: str) -> None:
        from core.errors import ApprovalRefused

        state.status = "waiting"
        try:
            evaluate(
                state,
                approver=decision.approver,
                decision=decision.decision,
                plan_hash=decision.plan_hash or None,
                initiator=self.incident.initiator,
            )
            proof = decisions.accept(
                self.trail,
                self.inventory,
                spec,
                approver=decision.approver,
                decision=decision.decision,
                plan_hash=plan_hash,
                proof_text=decision.proof,
            )
        except ApprovalRefused as exc:
            self.trail.append(
                "approval.refused",
                spec.key,
                {
                    "approver": decision.approver,
                    "decision": decision.decision,
                    "source": decision.source,
                    "reason": exc.detail,
                },
            )
            emit(f"      refused {decision.decision} from {decision.approver!r}: {exc.detail}")
            return
        if decision.decision == "reject":
            self.trail.append(
                "gate.rejected",
                spec.key,
                {
                    "approver": decision.approver,
                    "source": decision.source,
                    "comment": decision.comment,
                    "plan_hash": plan_hash,
                    **proof,
                },
            )
            raise GateRejected(
                f"{spec.key} rejected by {decision.approver}"
                + (f": {decision.comment}" if decision.comment else "")
            )
        self.trail.append(
            "approval.accepted",
            spec.key,
            {
                "approver": decision.approver,
                "source": decision.source,
                "comment": decision.comment,
                "plan_hash": plan_hash,
                **proof,
            },
        )
        emit(f"      approved by {decision.approver} ({proof['proof']['channel']})")

    # -- steps ----------------------------------------------------------------
    def run(self, playbook: Playbook) -> str:
        records = self.trail.records()
        done = {r.step for r in records if r.kind == "step.succeeded"}
        total = len(playbook.steps)
        for index, spec in enumerate(playbook.steps, start=1):
            label = f"[{index}/{total}] {spec.key}"
            if spec.key in done:
                self.trail.append(
                    "step.skipped",
                    spec.key,
                    {"reason": "succeeded in an earlier run of this incident"},
                )
                emit(f"{label}: already done, skipped")
                continue
            started = time.monotonic()
            try:
                self.run_one(spec, label)
            except (GateRejected, GateTimedOut, RunSuperseded):
                raise
            except Exception as exc:  # noqa: BLE001 (every failure is recorded, then re-raised or continued)
                duration = time.monotonic() - started
                detail = (
                    exc.detail if isinstance(exc, McpIrError) else f"{type(exc).__name__}: {exc}"
                )
                failed = {"error": detail, "duration_s": round(duration, 3)}
                if getattr(exc, "request_id", None):
                    failed["request_id"] = exc.request_id
                self.trail.append("step.failed", spec.key, failed)
                emit(
                    f"      FAILED after {format_duration(duration)}: {self.redactor.text(detail)}"
                )
                if spec.on_failure == "continue":
                    continue
                if isinstance(exc, McpIrError):
                    raise
                raise StepFailed(spec.key, detail) from exc
        return "succeeded"

    def run_one(self, spec: StepSpec, label: str) -> None:
        """plan → prepare (optional) → gate → manual input (optional) → check/apply/verify."""
        ctx = self.context(spec)
        step = load_steps()[spec.key]()
        plan = step.plan(ctx)
        plan_hash = plan.digest()
        ctx.plan = plan
        last_plan = [
            r for r in self.trail.records() if r.step == spec.key and r.kind == "step.planned"
        ]
        if not last_plan or last_plan[-1].data.get("hash") != plan_hash:
            self.trail.append("step.planned", spec.key, plan.as_dict())
        emit(f"{label}: {plan.summary}")
        if type(step).prepare is not Step.prepare:
            ctx.prepared = self.prepare(spec, ctx, plan_hash)
        self.gate(spec, plan, plan_hash, (ctx.prepared or {}).get("summary", ""))
        if step.manual_input is not None:
            ctx.manual = self.manual(spec, step, ctx, plan_hash)
        started = time.monotonic()
        first = self.trail.append(
            "step.started", spec.key, {"plan_hash": plan_hash, "timeout_s": spec.timeout_s}
        )
        result = run_attempts(self.trail, spec, ctx, started + spec.timeout_s)
        duration = time.monotonic() - started
        self.trail.append(
            "step.succeeded",
            spec.key,
            {"duration_s": round(duration, 3), "plan_hash": plan_hash, **result},
        )
        from runbook.plan_text import warnings

        problems = warnings([r for r in self.trail.records() if r.seq > first.seq])
        emit(f"      ok ({format_duration(duration)})" + (" with warnings:" if problems else ""))
        for problem in problems:
            emit(f"      warning: {problem}")

    def prepare(self, spec: StepSpec, ctx: StepContext, plan_hash: str) -> dict[str, Any]:
        """Runs a step's read-only preparation once per plan (the support report, the log
        review), before its gate, so the people deciding see what it found."""
        for rec in reversed(self.trail.records()):
            if (
                rec.step == spec.key
                and rec.kind == "step.prepared"
                and rec.data.get("plan_hash") == plan_hash
            ):
                return dict(rec.data.get("result", {}))
        result = prepare_step.with_options(
            task_run_name=f"{spec.key}-prepare", timeout_seconds=spec.timeout_s
        )(spec.key, quote(ctx))
        self.trail.append("step.prepared", spec.key, {"plan_hash": plan_hash, "result": result})
        if result.get("summary"):
            emit(f"      {result['summary']}")
        return result

    def manual(
        self, spec: StepSpec, step: Step, ctx: StepContext, plan_hash: str
    ) -> dict[str, Any]:
        """Waits for a person to record what they did outside the engine (e.g. the
        vendor ticket), from the Prefect UI form or ``mcp-ir record``."""
        from core.errors import ApprovalRefused

        prove = decisions.prover(self.trail, self.inventory, spec)
        for rec in reversed(self.trail.records()):
            if (
                rec.step == spec.key
                and rec.kind == "manual.recorded"
                and rec.data.get("plan_hash") == plan_hash
            ):
                why = prove(rec)
                if why is None:
                    return dict(rec.data)
                self.trail.append(
                    "approval.unproven", spec.key, {"seq": rec.seq, "reason": why, "counted": False}
                )
                emit(f"      ignored the record at seq {rec.seq}: {why}")
                break
        timeout_s = float(spec.params.get("input_timeout_s", 24 * 3600))
        deadline = time.monotonic() + timeout_s
        form_type = step.manual_input
        assert form_type is not None
        round_no = sum(
            1 for r in self.trail.records() if r.step == spec.key and r.kind == "manual.waiting"
        )
        emit(
            f"      waiting for a person to record it: mcp-ir record {self.incident.id} {spec.key} …"
        )
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.trail.append("gate.timeout", spec.key, {"timeout_s": timeout_s, "input": True})
                raise GateTimedOut(
                    f"{spec.key}: nobody recorded it within {format_duration(timeout_s)}"
                )
            round_no += 1
            key = pause_key(spec.key, round_no) + "-input"
            self.trail.append(
                "manual.waiting",
                spec.key,
                {
                    "key": key,
                    "flow_run_id": str(flow_run.get_id()),
                    "plan_hash": plan_hash,
                    "fields": sorted(form_type.model_fields),
                },
            )
            description = step.manual_prompt(ctx)
            try:
                value = pause_flow_run(
                    wait_for_input=form_type.with_initial_data(description=description),
                    timeout=max(1, int(left)),
                    poll_interval=1,
                    key=key,
                )
            except FlowPauseTimeout:
                self.trail.check_fence()
                back_to_running()
                continue
            data = value.model_dump()
            proof_text = str(data.pop("proof", "") or "")
            try:
                step.validate_manual(ctx, data)
                proof = decisions.accept(
                    self.trail,
                    self.inventory,
                    spec,
                    approver=str(data.get("by", "")),
                    decision="record",
                    plan_hash=plan_hash,
                    proof_text=proof_text,
                )
            except ApprovalRefused as exc:
                self.trail.append("manual.refused", spec.key, {**data, "reason": exc.detail})
                emit(f"      refused: {exc.detail}")
                continue
            record = {**data, "plan_hash": plan_hash, **proof}
            record.pop("nonce", None)
            try:
                decisions.check_live_record(self.trail, self.inventory, spec.key, record)
            except ApprovalRefused as exc:
                self.trail.append("manual.refused", spec.key, {**data, "reason": exc.detail})
                emit(f"      refused: {exc.detail}")
                continue
            self.trail.append("manual.recorded", spec.key, record)
            emit(f"      recorded by {data.get('by', '?')}")
            return record
