"""``mcp-ir demo``: the breach procedure end to end against a local sandbox.

Starts a local Prefect server (SQLite), the container engine (podman serving the
Docker API), the sandbox Tunnels API, deploys a simulated MCP tunnel stack, runs
breach-response on it with the auto-approve policy (allowed only because the
target is a sandbox), prints where the evidence and the report are, and stops
everything it started.

``--kind helm`` runs the same procedure against the sandbox Kubernetes API with the
mcp-tunnel Helm release installed (no container engine needed): the release is
isolated, captured and uninstalled through the real ``kubernetes`` client.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from core.trail import verify_dir


def _say(line: str) -> None:
    print(f"demo: {line}", flush=True)


def _answer_support_step(inventory: Path, evidence: str, done: threading.Event) -> None:
    """Plays the on-call engineer at ``contact_support``: once the step waits for
    the vendor ticket, records one as ``mcp-ir record … --ticket`` would (the gates
    are auto-approved in the demo; this step's gate is a person's record)."""
    from core.errors import McpIrError
    from core.trail import Trail
    from runbook.manual import submit_manual
    from runbook.settings import Settings

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
            _say(f"(as alice) mcp-ir record {incident_dir.name} contact_support --ticket {ticket}")
            try:
                submit_manual(
                    settings,
                    incident_id=incident_dir.name,
                    step="contact_support",
                    by="alice",
                    fields={"ticket": ticket, "comment": "demo: vendor support contacted"},
                )
            except McpIrError as exc:
                _say(f"could not record the ticket: {exc.detail}")
            except Exception as exc:  # noqa: BLE001 (the demo says what went wrong and goes on)
                _say(f"could not record the ticket: {type(exc).__name__}: {exc}")


def _breach(inventory: Path, evidence: str) -> int:
    """Runs breach-response on the demo target through the CLI, auto-approved."""
    from runbook.cli import main as cli_main

    done = threading.Event()
    helper = threading.Thread(
        target=_answer_support_step, args=(inventory, evidence, done), daemon=True
    )
    helper.start()
    try:
        return _breach_cli(cli_main, inventory, evidence)
    finally:
        done.set()
        helper.join(5)


def _breach_cli(cli_main: Any, inventory: Path, evidence: str) -> int:
    return cli_main(
        [
            "--config",
            str(inventory),
            "--evidence-dir",
            evidence,
            "breach",
            "--target",
            "demo",
            "--as",
            "demo-oncall",
            "--policy",
            "auto-approve",
            "--trigger-json",
            '{"kind": "demo", "by": "mcp-ir demo"}',
        ]
    )


def _summary(evidence: str, state: Any) -> None:
    """Verification of the newest incident and the mutating Tunnels API calls."""
    from runbook.prefect_server import drain_prefect_workers

    drain_prefect_workers()
    incident_dirs = sorted(Path(evidence).glob("INC-*"), key=lambda p: p.stat().st_mtime)
    if incident_dirs:
        _say(f"verify: {verify_dir(incident_dirs[-1]).line()}")
        calls = [
            c for c in state.calls if c.get("method") != "GET" and c["path"].startswith("/v1/")
        ]
        _say(
            f"mutating Tunnels API calls made: {', '.join(c['method'] + ' ' + c['path'] for c in calls) or 'none'}"
        )


def _start_prefect(stack: contextlib.ExitStack, workdir: Path, keep: bool) -> None:
    """The local Prefect server (SQLite) the demo's runs report to."""
    from runbook.prefect_server import start_prefect_server

    _say("starting the local Prefect server (SQLite; first start runs migrations, ~30 s)…")
    server = start_prefect_server(workdir / "prefect")
    if not keep:
        stack.callback(server.stop)
    os.environ["PREFECT_API_URL"] = server.url
    _say(f"Prefect API at {server.url}")


def _start_tunnels_api(stack: contextlib.ExitStack, keep: bool) -> tuple[Any, Any]:
    """The sandbox Tunnels/Managed Agents API, and the bearer token the demo uses."""
    from sandbox.anthropic_api import create_app
    from sandbox.anthropic_state import SandboxState
    from sandbox.serve import serve_in_thread
    from sandbox.site import TOKEN_ENV

    state = SandboxState()
    api = serve_in_thread(create_app(state))
    if not keep:
        stack.callback(api.stop)
    os.environ[TOKEN_ENV] = state.workspace_token
    _say(f"sandbox Tunnels API at {api.url}")
    return state, api


def run_helm_demo(workdir: Path, *, keep: bool = False) -> int:
    """The demo against the sandbox Kubernetes API (``mcp-ir demo --kind helm``)."""
    from sandbox.site import provision_helm_site, write_inventory

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        _start_prefect(stack, workdir, keep)

        state, api = _start_tunnels_api(stack, keep)

        site_root = workdir / "helm-site"
        shutil.rmtree(site_root, ignore_errors=True)
        site = provision_helm_site(
            name="demo", root=site_root, anthropic_state=state, anthropic_url=api.url
        )
        if not keep:
            stack.callback(site.served.stop)
        inventory = write_inventory(workdir / "inventory.yaml", {"demo": site.target})
        _say(
            f"sandbox Kubernetes API at {site.served.url}: Helm release {site.release!r} in "
            f"namespace {site.namespace!r} ({len(site.seeded.pods)} pods: mcp-proxy, "
            f"cloudflared) on tunnel {site.tunnel_id}"
        )
        _say(f"kubeconfig: {site.kubeconfig}")
        _say(f"inventory: {inventory}")

        evidence = os.environ.get("MCP_IR_EVIDENCE_DIR", "evidence")
        code = _breach(inventory, evidence)
        _summary(evidence, state)
        from sandbox.k8s_store import RESOURCES

        cluster = site.served.cluster
        left = [
            f"{res.kind}/{o['metadata']['name']}"
            for res in RESOURCES.values()
            for o in cluster.store.list(
                res, site.namespace, f"app.kubernetes.io/instance={site.release}"
            )
            if "helm.sh/hook" not in (o["metadata"].get("annotations") or {})
        ]
        left += [
            f"Secret/{o['metadata']['name']}"
            for o in cluster.store.list(
                RESOURCES[("", "secrets")], site.namespace, f"owner=helm,name={site.release}"
            )
        ]
        _say(
            f"release after the procedure (restored with the new credentials): {len(left)} object(s)"
            + (f" ({', '.join(left)})" if left else "")
        )
        _say(
            f"done in {time.monotonic() - started:.1f}s"
            + (" (sandbox left running: --keep)" if keep else "")
        )
        return code


def run_demo(workdir: Path, *, keep: bool = False, kind: str = "compose") -> int:
    if kind == "helm":
        return run_helm_demo(workdir, keep=keep)
    from sandbox.engine import start_engine
    from sandbox.site import provision_compose_site, write_inventory
    from sandbox.stack import teardown_stack

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        _start_prefect(stack, workdir, keep)

        _say("starting the container engine (podman, Docker API)…")
        engine = start_engine(workdir / "engine")
        if not keep:
            stack.callback(engine.stop)
        client = engine.client()

        state, api = _start_tunnels_api(stack, keep)

        site_root = workdir / "site"
        shutil.rmtree(site_root, ignore_errors=True)
        site = provision_compose_site(
            name="demo",
            root=site_root,
            docker_client=client,
            docker_host=engine.docker_host,
            anthropic_state=state,
            anthropic_url=api.url,
        )
        if not keep:
            stack.callback(lambda: teardown_stack(client, site.project))
        inventory = write_inventory(workdir / "inventory.yaml", {"demo": site.target})
        _say(
            f"simulated stack {site.project!r} up (mcp-proxy, cloudflared) on tunnel {site.tunnel_id}"
        )
        _say(f"inventory: {inventory}")

        evidence = os.environ.get("MCP_IR_EVIDENCE_DIR", "evidence")
        code = _breach(inventory, evidence)
        _summary(evidence, state)
        running = client.containers.list(
            filters={"label": f"com.docker.compose.project={site.project}"}
        )
        names = ", ".join(sorted(c.name for c in running))
        _say(
            f"stack after the procedure: {len(running)} container(s) running ({names}), "
            "restored with the new credentials"
            if running
            else "stack after the procedure: stopped"
        )
        _say(
            f"done in {time.monotonic() - started:.1f}s"
            + (" (sandbox left running: --keep)" if keep else "")
        )
        return code
