"""The one runner every playbook flow shares.

For each step of the playbook, in order: skip it if an earlier run of the same
incident finished it; compute its plan; pass its gate (auto, or approvals bound
to the plan's hash, waiting in a Prefect pause with a RunInput form); run it as
a Prefect task (check → apply → verify); write every outcome to the trail.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from core import failpoints, logsafe
from core.durations import format_duration
from core.errors import GateRejected, GateTimedOut, McpIrError, RunSuperseded, StepFailed
from core.trail import Record, Trail
from runbook import decisions, fencing, observers
from runbook.context import Clients, Incident, StepContext, build_redactor
from runbook.gates import evaluate
from runbook.guarded import plan_bound
from runbook.playbook import Playbook, StepSpec, load_playbook
from runbook.registry import Plan, Step, load_steps
from runbook.settings import Settings
from runbook.target_lock import TargetLock


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


@dataclass
class RunResult:
    incident_id: str
    status: str
    evidence_dir: str
    report_path: str | None
    detail: str = ""


def emit(line: str) -> None:
    """Progress for the person at the terminal (stderr, so stdout stays parseable) and
    for the Prefect UI (the run's log)."""
    if os.environ.get("MCP_IR_QUIET") != "1":
        print(line, file=sys.stderr, flush=True)
    with contextlib.suppress(Exception):  # outside a run there is no run logger
        get_run_logger().info(line.strip())


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


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def incident_from_trail(records: list[Record]) -> Incident | None:
    for rec in records:
        if rec.kind == "incident.opened":
            d = rec.data
            return Incident(
                id=d["incident_id"],
                target=d["target"],
                playbook=d["playbook"],
                initiator=d["initiator"],
                trigger=d.get("trigger", {}),
                severity=d.get("severity", "high"),
                window_start=_parse_time(d.get("window_start")),
                window_end=_parse_time(d.get("window_end")),
                drill=d.get("drill", False),
                policy=d.get("policy", "standard"),
            )
    return None


@task(name="run-step", cache_policy=NO_CACHE, persist_result=False)
def run_step(key: str, ctx: StepContext) -> dict[str, Any]:
    """check → apply → verify for one step, inside a Prefect task."""
    step = load_steps()[key]()
    with plan_bound(ctx):  # every mutating call: in the approved plan, or refused
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
                    "window_start": _iso(inc.window_start),
                    "window_end": _iso(inc.window_end),
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
        return StepContext(
            incident=self.incident,
            step=spec.key,
            target=self.target,
            inventory=self.inventory,
            trail=self.trail,
            clients=self.clients,
            params=dict(spec.params),
            timeout_s=spec.timeout_s,
            log=self.log,
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
                self.trail.append(
                    "gate.timeout",
                    spec.key,
                    {"timeout_s": gate.timeout_s, "approvals": state.approvals},
                )
                raise GateTimedOut(
                    f"{spec.key}: no quorum within {format_duration(gate.timeout_s)}; a timeout rejects"
                )
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
                self.trail.append(
                    "gate.timeout",
                    spec.key,
                    {"timeout_s": gate.timeout_s, "approvals": state.approvals},
                )
                raise GateTimedOut(
                    f"{spec.key}: no quorum within {format_duration(gate.timeout_s)}; a timeout rejects"
                ) from None
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
                self.trail.append(
                    "step.failed", spec.key, {"error": detail, "duration_s": round(duration, 3)}
                )
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
        result = run_step.with_options(task_run_name=spec.key, timeout_seconds=spec.timeout_s)(
            spec.key, quote(ctx)
        )
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


def execute(
    *,
    playbook: str,
    target: str,
    incident_id: str,
    initiator: str,
    trigger: dict[str, Any] | None = None,
    severity: str = "high",
    window_start: str | None = None,
    window_end: str | None = None,
    policy: str = "standard",
    drill: bool = False,
    config_path: str | None = None,
    evidence_dir: str | None = None,
) -> dict[str, Any]:
    """The body of every playbook flow."""
    settings = Settings.from_env(config_path, evidence_dir)
    end = _parse_time(window_end) or datetime.now(UTC)
    start = _parse_time(window_start) or end - timedelta(hours=24)
    incident = Incident(
        id=incident_id,
        target=target,
        playbook=playbook,
        initiator=initiator,
        trigger=trigger or {"kind": "manual", "by": initiator},
        severity=severity,
        window_start=start,
        window_end=end,
        drill=drill,
        policy=policy,
    )
    runner = Runner(settings, incident)
    resumed = runner.open_or_resume()
    inc = runner.incident
    emit(f"incident {inc.id}: {inc.playbook} on {inc.target}" + (" (resumed)" if resumed else ""))
    status, detail = "failed", ""
    superseded: RunSuperseded | None = None
    lock = TargetLock(inc.target)
    try:
        pb = load_playbook(
            inc.playbook,
            inventory=runner.inventory,
            target=inc.target,
            context={
                "trigger": {"severity": inc.severity, "auto_contain": False, **inc.trigger},
                "severity": inc.severity,
                "policy": inc.policy,
                "drill": inc.drill,
            },
        )
        lease = lock.acquire()
        runner.trail.append("lock.acquired", None, {"lease_id": str(lease), "limit": lock.name})
        try:
            status = runner.run(pb)
        finally:
            lock.release()
            runner.trail.append("lock.released", None, {"lease_id": str(lease)})
    except RunSuperseded as exc:
        superseded = exc  # a resumed run owns the incident: end without a word in its trail
    except GateRejected as exc:
        status, detail = "rejected", exc.detail
    except GateTimedOut as exc:
        status, detail = "timed_out", exc.detail
    except McpIrError as exc:
        status, detail = "failed", exc.detail
    finally:
        try:
            if superseded is None:
                runner.trail.append("run.ended", None, {"status": status, "detail": detail})
                report_path = publish_report(runner.trail)
        finally:
            runner.trail.release()
            observers.close_all(runner.observers)
            runner.clients.close()
    if superseded is not None:
        emit(f"incident {inc.id}: {superseded.detail}")
        raise superseded
    emit(f"incident {inc.id}: {status}" + (f" — {runner.redactor.text(detail)}" if detail else ""))
    result = {
        "incident_id": inc.id,
        "status": status,
        "detail": runner.redactor.text(detail),
        "evidence_dir": str(runner.trail.dir),
        "report_path": str(report_path) if report_path else None,
    }
    if status != "succeeded":
        raise RunEnded(result)
    return result


def supersede_flow_runs(flow_run_ids: list[str]) -> list[str]:
    """Marks earlier runs of this incident that Prefect still shows as paused or running
    (their process died) as crashed, so that nobody can resume a dead run and hand
    it a decision that no process will ever read."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    done: list[str] = []
    with get_client(sync_client=True) as client:
        for run_id in flow_run_ids:
            try:
                run = client.read_flow_run(UUID(run_id))
            except Exception:  # noqa: BLE001, S112 (a run the server no longer knows needs nothing)
                continue
            if run.state and run.state.type.value in ("PAUSED", "RUNNING", "PENDING", "SCHEDULED"):
                client.set_flow_run_state(
                    UUID(run_id),
                    Crashed(
                        message="process died; superseded by a resumed run of the same incident"
                    ),
                    force=True,
                )
                done.append(run_id)
    return done


class RunEnded(Exception):  # noqa: N818 (it is an outcome, not always an error)
    """The run ended without success; carries the result for the CLI."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(f"incident {result['incident_id']} {result['status']}: {result['detail']}")
        self.result = result


def publish_report(trail: Trail) -> Any:
    from runbook.report import render_markdown

    text = render_markdown(trail)
    trail.add_artifact(text.encode(), name="post-incident-report.md", media_type="text/markdown")
    path = trail.dir / "report.md"
    path.write_text(trail.redactor.text(text), encoding="utf-8")
    try:
        create_markdown_artifact(
            markdown=trail.redactor.text(text),
            key=f"report-{trail.incident_id.lower()}",
            description=f"Post-incident report for {trail.incident_id}",
        )
    except Exception as exc:  # noqa: BLE001 (the report is on disk and in the trail already)
        trail.append("report.publish_failed", None, {"error": f"{type(exc).__name__}"})
    return path
