"""``mcp-ir demo``: the breach procedure end to end against the local sandbox.

Brings up the same sandbox as ``mcp-ir sandbox up`` (``sandbox/host.py``: a
Prefect server on SQLite, podman, the sandbox Tunnels and Managed Agents APIs with
two sessions and an agent on the tunnel's MCP servers, Slack, …), runs
breach-response on target ``sandbox`` with the auto-approve policy (allowed only
because the target is a sandbox), plays the on-call engineer who records the
vendor ticket, prints where the evidence and the report are, and stops the sandbox
(``--keep`` leaves it running, with the commands to use it).

``--kind helm`` runs the same procedure on target ``sandbox-helm``: the mcp-tunnel
Helm release in the sandbox Kubernetes API, through the real ``kubernetes`` client.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any


def _say(line: str) -> None:
    print(f"demo: {line}", flush=True)


def _answer_support_step(inventory: Path, evidence: str, done: threading.Event) -> None:
    """Plays the on-call engineer at ``contact_support``: once the step waits for
    the vendor ticket, records one as ``mcp-ir record … --ticket --key`` would: signed
    with alice's own SSH key, generated for the sandbox beside the inventory (the
    gates are auto-approved in the demo; this step's gate is a person's record)."""
    from core.errors import McpIrError
    from core.trail import Trail
    from runbook.approvals import cli_signer
    from runbook.manual import submit_manual
    from runbook.settings import Settings
    from sandbox.keys import person_key

    settings = Settings.from_env(inventory, evidence)
    started = time.time()
    answered: set[str] = set()
    while not done.wait(1.0):
        for incident_dir in Path(evidence).glob("INC-*"):
            if incident_dir.name in answered or incident_dir.stat().st_mtime < started:
                continue
            records = Trail(incident_dir).records()
            waiting = any(
                r.step == "contact_support" and r.kind == "manual.waiting" for r in records
            )
            if not waiting:
                continue
            answered.add(incident_dir.name)
            ticket = f"DEMO-{incident_dir.name[-4:].upper()}"
            key = person_key(inventory.parent / "keys", "alice")
            _say(
                f"(as alice) mcp-ir record {incident_dir.name} contact_support --ticket {ticket} "
                f"--key {key}"
            )
            fields = {"ticket": ticket, "comment": "demo: vendor support contacted"}
            try:
                submit_manual(
                    settings,
                    incident_id=incident_dir.name,
                    step="contact_support",
                    by="alice",
                    fields=fields,
                    signer=cli_signer(
                        settings,
                        incident_id=incident_dir.name,
                        step="contact_support",
                        approver="alice",
                        decision="record",
                        key=str(key),
                        fields=fields,
                    ),
                )
            except McpIrError as exc:
                _say(f"could not record the ticket: {exc.detail}")
            except Exception as exc:  # noqa: BLE001 (the demo says what went wrong and goes on)
                _say(f"could not record the ticket: {type(exc).__name__}: {exc}")


def _breach(inventory: Path, evidence: str, target: str) -> int:
    """Runs breach-response on the demo target through the CLI, auto-approved."""
    from runbook.cli import main as cli_main

    done = threading.Event()
    helper = threading.Thread(
        target=_answer_support_step, args=(inventory, evidence, done), daemon=True
    )
    helper.start()
    try:
        return cli_main(
            [
                "--config",
                str(inventory),
                "--evidence-dir",
                evidence,
                "breach",
                "--target",
                target,
                "--as",
                "demo-oncall",
                "--policy",
                "auto-approve",
                "--trigger-json",
                '{"kind": "demo", "by": "mcp-ir demo"}',
            ]
        )
    finally:
        done.set()
        helper.join(5)


def _summary(evidence: str, state: dict[str, Any]) -> None:
    """Verification of the newest incident, and what the sandbox saw happen."""
    import httpx

    from runbook.prefect_server import drain_prefect_workers

    drain_prefect_workers()
    incident_dirs = sorted(Path(evidence).glob("INC-*"), key=lambda p: p.stat().st_mtime)
    if incident_dirs:
        from runbook.evidence_verify import verify_incident_dir

        for line in verify_incident_dir(incident_dirs[-1]).lines():
            _say(f"verify: {line}")
    base = state["urls"]["anthropic"]
    calls = httpx.get(f"{base}/_sandbox/calls", timeout=10).json()
    mutating = [c for c in calls if c.get("method") != "GET" and c["path"].startswith("/v1/")]
    _say(
        "mutating Tunnels/Agents API calls made: "
        + (", ".join(c["method"] + " " + c["path"] for c in mutating) or "none")
    )


def _after(box_dir: Path, kind: str, state: dict[str, Any]) -> None:
    """What is left of the stack after the procedure (restored with new credentials)."""
    import docker

    if kind == "compose":
        env = _load_env(box_dir)
        client = docker.DockerClient(base_url=env["DOCKER_HOST"])
        running = client.containers.list(
            filters={"label": f"com.docker.compose.project={state['compose_project']}"}
        )
        names = ", ".join(sorted(c.name for c in running))
        _say(
            f"stack after the procedure: {len(running)} container(s) running ({names}), "
            "restored with the new credentials"
            if running
            else "stack after the procedure: stopped"
        )
    else:
        from kubernetes import client as k8s
        from kubernetes import config as k8s_config

        api = k8s.CoreV1Api(k8s_config.new_client_from_config(str(box_dir / "kubeconfig")))
        pods = api.list_namespaced_pod("mcp-tunnel").items
        _say(
            f"release after the procedure: {len(pods)} pod(s) "
            f"({', '.join(sorted(p.metadata.name for p in pods)) or 'none'})"
        )


def _load_env(box_dir: Path) -> dict[str, str]:
    from runbook.commands.sandbox import load_env

    return load_env(box_dir)


def run_demo(workdir: Path, *, keep: bool = False, kind: str = "compose") -> int:
    """Brings the sandbox up in ``workdir/sandbox``, runs the procedure, and stops it
    (unless ``keep``)."""
    import json

    from runbook.commands.sandbox import down, up

    workdir = workdir.resolve()
    box_dir = workdir / "sandbox"
    started = time.monotonic()
    down(box_dir)  # a sandbox a previous demo left running is replaced, never reused
    up(box_dir, kinds=(kind,), quiet=True)
    try:
        env = _load_env(box_dir)
        evidence = os.environ.get("MCP_IR_EVIDENCE_DIR", "evidence")
        os.environ.update(env)
        os.environ["MCP_IR_EVIDENCE_DIR"] = evidence  # the demo's evidence stays in ./evidence
        state = json.loads((box_dir / "state.json").read_text())
        target = "sandbox" if kind == "compose" else "sandbox-helm"
        sessions = state.get("sessions") or []
        _say(
            f"target {target!r} on the sandbox; {len(sessions)} agent session(s) use its MCP "
            f"servers; Prefect UI {state['urls'].get('prefect_ui')}"
        )
        code = _breach(Path(env["MCP_IR_CONFIG"]), evidence, target)
        _summary(evidence, state)
        _after(box_dir, kind, state)
    finally:
        if not keep:
            down(box_dir)
    _say(
        f"done in {time.monotonic() - started:.1f}s"
        + (
            f" (sandbox left running: source {box_dir}/env; mcp-ir sandbox down --dir {box_dir})"
            if keep
            else ""
        )
    )
    return code
