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
import time
from pathlib import Path
from typing import Any

from runbook.trail import verify_dir


def _say(line: str) -> None:
    print(f"demo: {line}", flush=True)


def _breach(inventory: Path, evidence: str) -> int:
    """Runs breach-response on the demo target through the CLI, auto-approved."""
    from runbook.cli import main as cli_main

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


def run_helm_demo(workdir: Path, *, keep: bool = False) -> int:
    """The demo against the sandbox Kubernetes API (``mcp-ir demo --kind helm``)."""
    from runbook.prefect_server import start_prefect_server
    from sandbox.anthropic_api import create_app
    from sandbox.anthropic_state import SandboxState
    from sandbox.serve import serve_in_thread
    from sandbox.site import TOKEN_ENV, provision_helm_site, write_inventory

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        _say("starting the local Prefect server (SQLite; first start runs migrations, ~30 s)…")
        server = start_prefect_server(workdir / "prefect")
        if not keep:
            stack.callback(server.stop)
        os.environ["PREFECT_API_URL"] = server.url
        _say(f"Prefect API at {server.url}")

        state = SandboxState()
        api = serve_in_thread(create_app(state))
        if not keep:
            stack.callback(api.stop)
        os.environ[TOKEN_ENV] = state.workspace_token
        _say(f"sandbox Tunnels API at {api.url}")

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
            f"left: {len(left)} object(s) of the release"
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
    from runbook.prefect_server import start_prefect_server
    from sandbox.anthropic_api import create_app
    from sandbox.anthropic_state import SandboxState
    from sandbox.engine import start_engine
    from sandbox.serve import serve_in_thread
    from sandbox.site import TOKEN_ENV, provision_compose_site, write_inventory
    from sandbox.stack import teardown_stack

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        _say("starting the local Prefect server (SQLite; first start runs migrations, ~30 s)…")
        server = start_prefect_server(workdir / "prefect")
        if not keep:
            stack.callback(server.stop)
        os.environ["PREFECT_API_URL"] = server.url
        _say(f"Prefect API at {server.url}")

        _say("starting the container engine (podman, Docker API)…")
        engine = start_engine(workdir / "engine")
        if not keep:
            stack.callback(engine.stop)
        client = engine.client()

        state = SandboxState()
        api = serve_in_thread(create_app(state))
        if not keep:
            stack.callback(api.stop)
        os.environ[TOKEN_ENV] = state.workspace_token
        _say(f"sandbox Tunnels API at {api.url}")

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

        from runbook.cli import main as cli_main

        evidence = os.environ.get("MCP_IR_EVIDENCE_DIR", "evidence")
        code = cli_main(
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
        from runbook.prefect_server import drain_prefect_workers

        drain_prefect_workers()
        incident_dirs = sorted(Path(evidence).glob("INC-*"), key=lambda p: p.stat().st_mtime)
        if incident_dirs:
            latest = incident_dirs[-1]
            _say(f"verify: {verify_dir(latest).line()}")
            calls = [
                c for c in state.calls if c.get("method") != "GET" and c["path"].startswith("/v1/")
            ]
            _say(
                f"mutating Tunnels API calls made: {', '.join(c['method'] + ' ' + c['path'] for c in calls) or 'none'}"
            )
            _say(
                f"left: {len(client.containers.list(all=True, filters={'label': f'com.docker.compose.project={site.project}'}))} container(s) of the stack"
            )
        _say(
            f"done in {time.monotonic() - started:.1f}s"
            + (" (sandbox left running: --keep)" if keep else "")
        )
        return code
