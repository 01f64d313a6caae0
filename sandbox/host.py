"""The local sandbox, brought up in one process: what ``mcp-ir sandbox up`` leaves
running and what ``mcp-ir demo`` runs against.

:func:`bring_up` starts, in order: a Prefect server (SQLite, UI on), podman serving
the Docker API, the sandbox Tunnels + Managed Agents API (two sessions and one
agent that use the compose target's MCP servers), the OAuth authorization server,
moto (AWS), the Slack Web API, PagerDuty's Events API v2 and an SMTP server
(aiosmtpd) — then provisions the targets ``sandbox`` (Compose, in podman),
``sandbox-helm`` (the mcp-tunnel release in the sandbox Kubernetes API) and, for
``mcp-ir audit``, ``sandbox-hardened`` and ``sandbox-weak`` (sandbox/audit_sites.py). It writes
into the sandbox directory:

- ``inventory.yaml`` — the targets, people alice, bob, carol (oncall) and dave
  (security-leads), the standard policy, Slack/PagerDuty/email wired to the sandbox;
- ``env`` — ``export`` lines (PREFECT_API_URL, DOCKER_HOST, KUBECONFIG, MCP_IR_CONFIG,
  MCP_IR_EVIDENCE_DIR, the sandbox bearer token, AWS_*);
- ``keys/<person>`` — each person's SSH key (ed25519, made with ssh-keygen), and
  the engine's checkpoint key;
- ``kubeconfig`` — for kubectl and the Helm target;
- ``state.json`` — what runs where (pids, URLs), for ``sandbox down``.

Run as ``python -m sandbox.host --dir DIR``: brings the sandbox up, writes
``DIR/ready`` and stays until SIGTERM, then stops everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAILBOX = "mail"  # a Maildir (aiosmtpd's Mailbox handler)
SLACK_TOKEN_ENV = "MCP_IR_SANDBOX_SLACK_TOKEN"
SLACK_SIGNING_ENV = "MCP_IR_SANDBOX_SLACK_SIGNING_SECRET"
PAGERDUTY_KEY_ENV = "MCP_IR_SANDBOX_PAGERDUTY_ROUTING_KEY"


def _say(line: str) -> None:
    print(f"sandbox: {line}", flush=True)


@dataclass
class Sandbox:
    """Everything that runs; ``stop()`` ends it all, in reverse order."""

    dir: Path
    env: dict[str, str] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    anthropic_state: Any = None
    slack_state: Any = None
    pagerduty_state: Any = None
    mailbox: Path | None = None
    docker_client: Any = None
    compose_project: str | None = None
    sessions: list[str] = field(default_factory=list)
    intake: dict[str, Any] | None = None
    _stops: list[Callable[[], None]] = field(default_factory=list)

    def on_stop(self, fn: Callable[[], None]) -> None:
        self._stops.append(fn)

    def stop(self) -> None:
        while self._stops:
            fn = self._stops.pop()
            with contextlib.suppress(Exception):
                fn()

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.yaml"

    @property
    def evidence(self) -> Path:
        return self.dir / "evidence"


def bring_up(directory: Path, *, kinds: tuple[str, ...] = ("compose", "helm", "audit")) -> Sandbox:
    """Starts every sandbox service and writes the files described above. On any
    failure what was started is stopped again before the error propagates."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    box = Sandbox(dir=directory)
    try:
        _prefect(box)
        _apis(box)
        if "compose" in kinds:
            _compose_target(box)
        if "helm" in kinds:
            _helm_target(box)
        if "audit" in kinds and box.docker_client is not None:
            _audit_targets(box)
        _sessions(box)
        _write_files(box)
    except BaseException:
        box.stop()
        raise
    return box


def _prefect(box: Sandbox) -> None:
    from runbook.prefect_server import start_prefect_server

    _say("starting the Prefect server (SQLite, UI on; the first start migrates, ~30 s)…")
    server = start_prefect_server(box.dir / "prefect", ui=True)
    box.on_stop(server.stop)
    box.urls["prefect_api"] = server.url
    box.urls["prefect_ui"] = server.url.removesuffix("/api")
    box.pids["prefect"] = server.process.pid
    box.env["PREFECT_API_URL"] = server.url


def _apis(box: Sandbox) -> None:
    from sandbox.anthropic_api import create_app as anthropic_app
    from sandbox.anthropic_state import SandboxState
    from sandbox.pagerduty_events import PagerDutySandbox
    from sandbox.pagerduty_events import create_app as pagerduty_app
    from sandbox.serve import serve_in_thread
    from sandbox.site import TOKEN_ENV
    from sandbox.slack_api import DEFAULT_TOKEN, SlackSandbox
    from sandbox.slack_api import create_app as slack_app

    state = SandboxState()
    api = serve_in_thread(anthropic_app(state))
    box.on_stop(api.stop)
    box.anthropic_state = state
    box.urls["anthropic"] = api.url
    box.env[TOKEN_ENV] = state.workspace_token

    slack = SlackSandbox()
    slack.add_channel("C0INCIDENTS", "incidents", ("U0MCPIRBOT",))
    for uid, name in (
        ("U0ALICE", "alice"),
        ("U0BOB", "bob"),
        ("U0CAROL", "carol"),
        ("U0DAVE", "dave"),
    ):
        slack.add_user(uid, name)
    slack_api = serve_in_thread(slack_app(slack))
    box.on_stop(slack_api.stop)
    box.slack_state = slack
    box.urls["slack"] = slack_api.url + "/api/"
    box.env[SLACK_TOKEN_ENV] = DEFAULT_TOKEN
    box.env[SLACK_SIGNING_ENV] = secrets.token_hex(16)

    routing_key = secrets.token_hex(16)  # 32 characters, as PagerDuty's integration keys
    pagerduty = PagerDutySandbox(routing_keys={routing_key})
    pd_api = serve_in_thread(pagerduty_app(pagerduty))
    box.on_stop(pd_api.stop)
    box.pagerduty_state = pagerduty
    box.urls["pagerduty"] = pd_api.url
    box.env[PAGERDUTY_KEY_ENV] = routing_key

    _moto(box)

    box.mailbox = box.dir / MAILBOX
    smtp_host, smtp_port, stop_smtp = start_smtp(box.mailbox)
    box.on_stop(stop_smtp)
    box.urls["smtp"] = f"smtp://{smtp_host}:{smtp_port}"
    _say(
        f"APIs up: Tunnels/Agents {api.url}, Slack {slack_api.url}, PagerDuty {pd_api.url}, "
        f"SMTP {smtp_host}:{smtp_port} (mail to {box.mailbox})"
    )


def _moto(box: Sandbox) -> None:
    """moto's server (AWS Secrets Manager, S3) on a loopback port; boto3 finds it
    through AWS_ENDPOINT_URL."""
    from sandbox.moto import moto_env, start_moto

    log = open(box.dir / "moto.log", "wb")  # noqa: SIM115 (the child owns it)
    proc, url = start_moto(
        stdout=log, timeout_s=60, what=f"moto server (log {box.dir / 'moto.log'})"
    )
    box.on_stop(lambda: (proc.terminate(), proc.wait(10)))
    box.pids["moto"] = proc.pid
    box.urls["aws"] = url
    box.env.update(moto_env(url, "sandbox"))


def start_smtp(mailbox: Path) -> tuple[str, int, Callable[[], None]]:
    """A real SMTP server (aiosmtpd) on a loopback port that appends every message it
    stores every message it receives in the Maildir ``mailbox``."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Mailbox

    from sandbox.serve import free_port

    port = free_port()
    controller = Controller(Mailbox(str(mailbox)), hostname="127.0.0.1", port=port)
    controller.start()
    return "127.0.0.1", port, controller.stop


def _compose_target(box: Sandbox) -> None:
    from sandbox.engine import start_engine
    from sandbox.site import provision_compose_site
    from sandbox.stack import teardown_stack

    _say("starting the container engine (podman, Docker API)…")
    engine = start_engine(box.dir / "engine", timeout_s=120)
    box.on_stop(engine.stop)
    box.pids["podman"] = engine.pid
    client = engine.client()
    box.docker_client = client
    box.env["DOCKER_HOST"] = engine.docker_host
    site_root = box.dir / "site"
    shutil.rmtree(site_root, ignore_errors=True)
    site = provision_compose_site(
        name="sandbox",
        root=site_root,
        docker_client=client,
        docker_host=engine.docker_host,
        anthropic_state=box.anthropic_state,
        anthropic_url=box.urls["anthropic"],
    )
    box.on_stop(lambda: teardown_stack(client, site.project))
    box.compose_project = site.project
    box.targets["sandbox"] = site.target
    _say(f"target 'sandbox': compose project {site.project!r} on tunnel {site.tunnel_id}")


def _helm_target(box: Sandbox) -> None:
    from sandbox.site import provision_helm_site

    site_root = box.dir / "helm-site"
    shutil.rmtree(site_root, ignore_errors=True)
    site = provision_helm_site(
        name="sandbox-helm",
        root=site_root,
        anthropic_state=box.anthropic_state,
        anthropic_url=box.urls["anthropic"],
    )
    box.on_stop(site.served.stop)
    kubeconfig = box.dir / "kubeconfig"
    shutil.copyfile(site.kubeconfig, kubeconfig)
    box.env["KUBECONFIG"] = str(kubeconfig)
    box.targets["sandbox-helm"] = {
        **site.target,
        "helm": {**site.target["helm"], "kubeconfig": str(kubeconfig)},
    }
    box.urls["kubernetes"] = site.served.url
    _say(f"target 'sandbox-helm': release {site.release!r} on tunnel {site.tunnel_id}")


def _audit_targets(box: Sandbox) -> None:
    """``sandbox-hardened`` and ``sandbox-weak`` (sandbox/audit_sites.py), each with an
    upstream MCP server speaking real MCP over HTTP (the hardened one behind OAuth)."""
    from sandbox.audit_sites import provision_audit_sites
    from sandbox.oauth_server import create_app as oauth_app
    from sandbox.serve import serve_in_thread

    server_client = ("mcp-server", secrets.token_urlsafe(16))
    audit_client = ("mcp-ir-audit", secrets.token_urlsafe(16))
    oauth = serve_in_thread(oauth_app(dict([server_client, audit_client])))
    box.on_stop(oauth.stop)
    box.urls["oauth"] = oauth.url
    audit = provision_audit_sites(
        root=box.dir / "audit-sites",
        docker_client=box.docker_client,
        docker_host=box.env["DOCKER_HOST"],
        anthropic_state=box.anthropic_state,
        anthropic_url=box.urls["anthropic"],
        oauth_url=oauth.url,
        oauth_server_client=server_client,
        oauth_audit_client=audit_client[0],
        names=("sandbox-hardened", "sandbox-weak"),
    )
    from sandbox.stack import teardown_stack

    client = box.docker_client
    box.on_stop(audit.stop)
    for site in (audit.hardened, audit.weak):
        box.on_stop(lambda project=site.project: teardown_stack(client, project))
    box.targets.update(audit.targets)
    box.env.update(audit.env)
    box.intake = audit.intake
    _say("targets 'sandbox-hardened' and 'sandbox-weak' (mcp-ir audit --all) up")


def _sessions(box: Sandbox) -> None:
    """Two sessions and one agent that use the MCP servers behind the first target's
    tunnel: what ``detach_servers`` cuts off."""
    from sandbox.anthropic_api import seed_state

    target = next(iter(box.targets.values()), None)
    if target is None:
        return
    domain = target["tunnel"]["domain"]
    servers = [
        {"type": "url", "name": "files", "url": f"https://files.{domain}/mcp"},
        {"type": "url", "name": "tickets", "url": f"https://tickets.{domain}/mcp"},
    ]
    tools = [{"type": "mcp_toolset", "mcp_server_name": s["name"]} for s in servers]
    agent_def = {"name": "support agent", "mcp_servers": servers, "tools": tools}
    seeded = seed_state(box.anthropic_state, {"agents": [agent_def]})
    agent_id = seeded["agents"][0]["id"]
    sessions = seed_state(
        box.anthropic_state,
        {
            "sessions": [
                {"agent_id": agent_id, "status": "running", "title": "triage #1"},
                {"agent_id": agent_id, "status": "idle", "title": "triage #2"},
            ]
        },
    )
    box.sessions = [s["id"] for s in sessions["sessions"]]


def _write_files(box: Sandbox) -> None:
    """The inventory (people with their SSH keys, the engine's checkpoint key and
    Slack's receiver key, all generated into ``keys/`` by ``sandbox.site``), ``env``
    and ``state.json``."""
    from sandbox.site import write_inventory

    box.evidence.mkdir(exist_ok=True)
    targets = {name: {**t, "slack_channel": "C0INCIDENTS"} for name, t in box.targets.items()}
    extra: dict[str, Any] = {
        "slack": {
            "token_env": SLACK_TOKEN_ENV,
            "signing_secret_env": SLACK_SIGNING_ENV,
            "base_url": box.urls["slack"],
            "default_channel": "C0INCIDENTS",
        },
        "notifiers": {
            "pagerduty": {"routing_key_env": PAGERDUTY_KEY_ENV, "url": box.urls["pagerduty"]},
            "email": {
                "smtp_host": box.urls["smtp"].removeprefix("smtp://").rsplit(":", 1)[0],
                "smtp_port": int(box.urls["smtp"].rsplit(":", 1)[1]),
                "starttls": False,
                "sender": "mcp-ir@sandbox.example",
            },
        },
    }
    if box.intake:
        extra["intake"] = box.intake
    write_inventory(box.inventory, targets, **extra)
    box.env.update(
        {
            "MCP_IR_CONFIG": str(box.inventory),
            "MCP_IR_EVIDENCE_DIR": str(box.evidence),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    lines = [f"export {k}={_quote(v)}" for k, v in sorted(box.env.items())]
    env_path = box.dir / "env"
    env_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env_path.chmod(0o600)
    state = {
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "pids": box.pids,
        "urls": box.urls,
        "targets": sorted(box.targets),
        "compose_project": box.compose_project,
        "sessions": box.sessions,
    }
    (box.dir / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.host")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--kinds", default="compose,helm,audit", help="target kinds to provision")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    directory = Path(args.dir).resolve()
    (directory / "ready").unlink(missing_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        box = bring_up(directory, kinds=kinds)
    except Exception as exc:  # noqa: BLE001 (reported to the parent through the failed file)
        (directory / "failed").write_text(f"{type(exc).__name__}: {exc}\n", encoding="utf-8")
        _say(f"failed: {type(exc).__name__}: {exc}")
        return 1
    (directory / "ready").write_text("ready\n", encoding="utf-8")
    _say("ready")
    stop.wait()
    _say("stopping…")
    box.stop()
    (directory / "ready").unlink(missing_ok=True)
    _say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
