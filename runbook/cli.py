"""``mcp-ir``: incident-response runbooks for MCP tunnel deployments.

Exit codes: 0 success; 1 the run or check did not succeed (rejected, failed,
verification failed); 2 bad input (inventory, playbook, arguments).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from core.errors import ConfigError, McpIrError
from runbook import on_worker

EPILOG = """\
environment:
  MCP_IR_CONFIG        inventory file (instead of --config)
  MCP_IR_EVIDENCE_DIR  evidence directory (instead of --evidence-dir; default ./evidence)
  MCP_IR_USER          who you are, for --as (default: your login name)
  MCP_IR_SSH_KEY       your SSH key for signing decisions (instead of --key; else ssh-agent)
  MCP_IR_ENGINE_KEY    the engine's checkpoint key (instead of engine.checkpoint_key_file)
  MCP_IR_MODE          "production": runs belong on workers; every resume hint says --on-worker
  PREFECT_API_URL      the Prefect server (default: Prefect's local SQLite server)
  DOCKER_HOST, KUBECONFIG, ANTHROPIC_BASE_URL, AWS_ENDPOINT_URL are honoured.

exit codes: 0 success, 1 run/check did not succeed, 2 bad input.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _when(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _json_object(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc.msg}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return parsed


def _me() -> str:
    return os.environ.get("MCP_IR_USER") or getpass.getuser()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mcp-ir",
        description="Run the MCP tunnel breach-response procedure (and teardown, drills) as "
        "Prefect flows with approval gates and a tamper-evident evidence trail.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="inventory YAML (default: $MCP_IR_CONFIG)")
    parser.add_argument(
        "--evidence-dir", help="evidence directory (default: $MCP_IR_EVIDENCE_DIR or ./evidence)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show Prefect's own log lines too"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--target",
            help="target name from the inventory (required for a new incident; a resume "
            "reads it from the incident's trail)",
        )
        p.add_argument(
            "--incident",
            help="incident id; give an existing one to RESUME it (done steps are skipped)",
        )
        on_worker.add_argument(p)
        p.add_argument(
            "--as",
            dest="initiator",
            default=None,
            help="who starts it (default: $MCP_IR_USER or login)",
        )
        p.add_argument(
            "--severity", default="high", choices=["info", "low", "medium", "high", "critical"]
        )
        p.add_argument(
            "--window-start",
            type=_when,
            help="start of the suspected window (ISO-8601; default: 24h ago)",
        )
        p.add_argument(
            "--window-end", type=_when, help="end of the suspected window (ISO-8601; default: now)"
        )
        p.add_argument(
            "--trigger-json",
            type=_json_object,
            default=None,
            help="what triggered it, as a JSON object",
        )
        p.add_argument(
            "--policy",
            default="standard",
            choices=["standard", "auto-approve"],
            help="auto-approve passes every gate automatically; refused unless the target is a sandbox",
        )

    p = sub.add_parser(
        "breach",
        help="contain a possibly compromised tunnel stack (playbook breach-response)",
        description="Run the breach-response playbook against a target, in this process, "
        "printing progress (--on-worker: on a worker, through the breach-response deployment). "
        "Gates wait for approvals (mcp-ir approve, the Prefect UI, Slack). Resume an incident "
        "with --incident ID alone: the target comes from its trail.",
    )
    run_options(p)
    p = sub.add_parser("run", help="run any playbook by name (used by the intake)")
    p.add_argument("playbook")
    run_options(p)

    p = sub.add_parser("status", help="each step's state and what it waits for")
    p.add_argument("incident")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    for name, verb in (("approve", "approve"), ("reject", "reject")):
        p = sub.add_parser(
            name,
            help=f"{verb} a step that waits at its gate",
            description=f"{verb.capitalize()} STEP of INCIDENT. The decision is a statement over "
            "{incident, step, plan hash, decision, you, time, nonce} signed with your SSH key "
            "(ssh-keygen -Y sign), which the flow checks against people.<you>.ssh_keys: a key "
            "of somebody else counts for nobody. The gate rules apply: member of the step's "
            "group, one vote per person, the initiator may not approve their own step unless "
            "the playbook allows it. Without --plan-hash the plan is printed first and, on a "
            "terminal, you are asked to confirm (--yes for scripts).",
        )
        p.add_argument("incident")
        p.add_argument("step")
        p.add_argument(
            "--as",
            dest="approver",
            default=None,
            help="your identity in the inventory's people (default: $MCP_IR_USER or login)",
        )
        p.add_argument("--comment", default="")
        p.add_argument(
            "--plan-hash",
            default=None,
            help="the plan hash you reviewed (default: the step's current plan, shown first)",
        )
        p.add_argument(
            "--key",
            default=None,
            metavar="PATH",
            help="your SSH private key (or a .pub whose key is in ssh-agent); default: "
            "$MCP_IR_SSH_KEY, else ssh-agent",
        )
        p.add_argument(
            "--yes",
            action="store_true",
            help="do not ask before signing the plan shown (for scripts)",
        )

    p = sub.add_parser(
        "verify",
        help="verify an evidence trail offline",
        description="Check, offline, every record's hash and link, the sequence and every "
        "artifact; the signed checkpoints (a deleted tail, a deleted checkpoint file or a "
        "chain re-hashed after an edit fail); and every approval's signature against the "
        "keys snapshotted when the incident opened. With an inventory, checkpoints are "
        "checked against its engine key. Prints 'ok: N records' and what is proven (exit 0), "
        "or each problem with its seq (exit 1). A trail without checkpoints is reported "
        "'not checkpointed'.",
    )
    p.add_argument(
        "path",
        help="incident evidence directory (e.g. evidence/INC-…) or its WORM copy "
        "s3://BUCKET/PREFIX/INC-… (compared with the local copy when present)",
    )

    p = sub.add_parser("report", help="render the post-incident report from the trail")
    p.add_argument("incident")
    p.add_argument("--format", choices=["md", "html"], default="md")
    p.add_argument("--output", help="write to this file instead of stdout")

    p = sub.add_parser(
        "plan", help="show what a playbook would do against a target, without doing it"
    )
    p.add_argument("playbook")
    p.add_argument("--target", required=True)
    p.add_argument("--policy", default="standard", choices=["standard", "auto-approve"])
    p.add_argument(
        "--window-start",
        type=_when,
        help="start of the suspected window, as for run (default: 24h before the end); "
        "the same window gives the same plan hashes as the run's gates",
    )
    p.add_argument("--window-end", type=_when, help="end of the suspected window (default: now)")

    p = sub.add_parser(
        "demo",
        help="run breach-response against a local sandbox stack, end to end",
        description="Starts podman, the sandbox Tunnels API and a local Prefect server "
        "(SQLite), deploys a simulated MCP tunnel stack, runs breach-response with an "
        "auto-approve policy, prints the incident id, evidence dir and report, and stops it all.",
    )
    p.add_argument(
        "--workdir",
        default=".mcp-ir/demo",
        help="where the demo keeps its state (default .mcp-ir/demo)",
    )
    p.add_argument(
        "--keep", action="store_true", help="leave the sandbox and Prefect server running"
    )
    p.add_argument(
        "--kind",
        choices=["compose", "helm"],
        default="compose",
        help="compose: a simulated stack in podman (default); helm: the mcp-tunnel Helm "
        "release in the sandbox Kubernetes API (no container engine needed)",
    )
    from runbook.commands import discover  # more subcommands, one module each

    for module in discover():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(p)
        p.set_defaults(_command_module=module)
    return parser


def _settings(args: argparse.Namespace) -> Any:
    from runbook.settings import Settings

    return Settings.from_env(args.config, args.evidence_dir)


def _quiet_prefect_console(verbose: bool) -> None:
    if verbose:
        return
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL", "WARNING")


def _prefect_follows_environment() -> None:
    """Prefect fixes its settings and logging from the environment when it is
    imported. When it was imported before ``main`` ran (a program that embeds
    mcp-ir, or the tests' pre-forked CLI process), make it take this process's
    environment, including the defaults above."""
    if "prefect.context" not in sys.modules:
        return
    from prefect.context import refresh_global_settings_context
    from prefect.logging.configuration import setup_logging

    refresh_global_settings_context()
    setup_logging(incremental=False)


def cmd_run(args: argparse.Namespace, playbook: str) -> int:
    from flows.runner import RunEnded
    from runbook.launch import launch_incident, new_incident_id

    settings = _settings(args)
    trigger = args.trigger_json or {"kind": "manual", "by": args.initiator or _me()}
    if args.on_worker:
        return on_worker.launch(
            settings,
            playbook,
            incident_id=args.incident,
            target=args.target,
            parameters={
                "initiator": args.initiator or _me(),
                "trigger": trigger,
                "severity": args.severity,
                "window_start": args.window_start.isoformat() if args.window_start else None,
                "window_end": args.window_end.isoformat() if args.window_end else None,
                "policy": args.policy,
            },
        )
    target = on_worker.target_of(settings, args.incident, args.target)
    incident_id = args.incident or new_incident_id()
    try:
        launch_incident(
            settings,
            target=target,
            playbook=playbook,
            incident_id=incident_id,
            initiator=args.initiator or _me(),
            trigger=trigger,
            severity=args.severity,
            window_start=args.window_start,
            window_end=args.window_end,
            policy=args.policy,
            wait=True,
        )
    except RunEnded as exc:
        _print_outcome(settings, exc.result)
        return 1
    _print_outcome(
        settings,
        {
            "incident_id": incident_id,
            "status": "succeeded",
            "evidence_dir": str(settings.incident_dir(incident_id)),
            "report_path": str(settings.incident_dir(incident_id) / "report.md"),
        },
    )
    return 0


def _print_outcome(settings: Any, result: dict[str, Any]) -> None:
    from runbook.commands._outcome import print_outcome

    print_outcome(result)
    _print_readable(Path(result["evidence_dir"]))


def _print_readable(incident_dir: Path) -> None:
    """The paths of what a person must read (support report, findings, …)."""
    from core.trail import Trail
    from runbook.readable import export

    if not (incident_dir / "trail.jsonl").exists():
        return
    for label, path in export(Trail(incident_dir)):
        print(f"{label + ':':<10}{path}")


def cmd_status(args: argparse.Namespace) -> int:
    from core.errors import ApprovalRefused
    from core.trail import run_owner
    from runbook.approvals import open_trail
    from runbook.deployment_runs import resume_command
    from runbook.incident_view import build_view, record_command
    from runbook.plan_text import plan_lines, warnings

    try:
        trail = open_trail(_settings(args), args.incident)
    except ApprovalRefused as exc:
        raise ConfigError(exc.detail) from None
    records = trail.records()
    view = build_view(records, run_owner(trail.dir))
    steps = list(view.steps.values())
    resume = resume_command(view.id, records) if view.status == "dead" else None
    if args.json:
        print(
            json.dumps(
                {
                    "incident": view.incident,
                    "status": view.status,
                    "detail": view.status_detail,
                    "resume": resume,
                    "steps": [
                        {
                            "key": s.key,
                            "state": s.state,
                            "error": s.error,
                            "waiting_for": s.gate.remaining
                            if s.gate and s.gate.status in ("open", "waiting")
                            else 0,
                            "group": s.gate.group if s.gate else None,
                            "approvals": s.gate.approvals if s.gate else [],
                            "plan_hash": s.gate.plan_hash if s.gate else (s.plan or {}).get("hash"),
                            "record": record_command(view.id, s.key, s.record_fields)
                            if s.record_fields is not None
                            else None,
                        }
                        for s in steps
                    ],
                    "alerts": view.alerts,
                    "waiting_plans": {
                        s.key: s.plan
                        for s in steps
                        if s.gate and s.gate.status in ("open", "waiting")
                    },
                    "warnings": warnings(records),
                },
                indent=2,
                default=str,
            )
        )
        return 0
    inc = view.incident
    print(
        f"incident {view.id}  target {inc.get('target')}  playbook {inc.get('playbook')}  "
        f"started by {inc.get('initiator')}  status {view.status}"
        + (f" ({view.status_detail})" if view.status_detail else "")
    )
    for s in steps:
        line = f"  {s.key:<20} {s.state}"
        if s.gate and s.gate.status in ("open", "waiting"):
            line += (
                f" — needs {s.gate.remaining} more from group {s.gate.group!r}"
                f" (approved: {', '.join(s.gate.approvals) or 'nobody yet'})"
            )
            print(line)
            for detail in plan_lines(s.plan, indent="      "):
                print(detail)
            print(
                f"      approve:   mcp-ir approve {view.id} {s.key} --plan-hash {s.gate.plan_hash}"
            )
            continue
        elif s.record_fields is not None:
            line += f" — a person must record it: {record_command(view.id, s.key, s.record_fields)}"
        elif s.error:
            line += f" — {s.error}"
        print(line)
    for alert in view.alerts:
        verb = "RESOLVED by the sender" if alert["kind"] == "alert.resolved" else "joined"
        print(
            f"  alert {verb}: {alert.get('title')!r} from {alert.get('source')}"
            f" ({alert.get('alert_id')}) at {alert.get('ts')} — the run goes on, people decide"
        )
    for warning in warnings(records):
        print(f"  warning: {warning}")
    _print_readable(trail.dir)
    if resume:
        print(f"  resume it with: {resume}")
    remote = _remote_copy_line(_settings(args), trail)
    if remote:
        print(remote)
    return 0


def cmd_decide(args: argparse.Namespace, decision: str) -> int:
    from runbook.approvals import cli_signer, submit_decision
    from runbook.plan_confirm import confirmer

    settings = _settings(args)
    approver = args.approver or _me()
    confirm = None
    if args.plan_hash is None:
        confirm = confirmer(
            settings, args.incident, args.step, f"{decision} as {approver}", assume_yes=args.yes
        )
    # Who decides what: the same for the signed statement and the decision it signs.
    who: dict[str, Any] = {
        "incident_id": args.incident,
        "step": args.step,
        "approver": approver,
        "decision": decision,
    }
    signer = cli_signer(settings, key=args.key, confirm=confirm, **who)
    result = submit_decision(
        settings,
        comment=args.comment,
        plan_hash=args.plan_hash,
        source="cli",
        signer=signer,
        **who,
    )
    print(
        result.detail
        + (
            f"; {result.remaining} more approval(s) needed"
            if result.remaining and decision == "approve"
            else ""
        )
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from runbook.evidence_verify import verify_incident_dir

    if args.path.startswith("s3://"):
        return _verify_remote(args)
    path = Path(args.path)
    if not path.is_dir():
        raise ConfigError(f"{path}: not a directory (give an incident's evidence directory)")
    report = verify_incident_dir(path, engine_key=_engine_public_key(args))
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def _engine_public_key(args: argparse.Namespace) -> str | None:
    """The inventory's engine key, when an inventory is given (the trust anchor of the
    checkpoints); verification stays offline either way."""
    settings = _settings(args)
    if settings.config_path is None:
        return None
    engine = settings.inventory().engine
    return engine.checkpoint_public_key if engine else None


def _verify_remote(args: argparse.Namespace) -> int:
    from runbook.worm_verify import parse_s3_url, verify_remote

    loc = parse_s3_url(args.path)
    local = _settings(args).incident_dir(loc.incident_id)
    report = verify_remote(
        args.path, local if local.is_dir() else None, engine_key=_engine_public_key(args)
    )
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def _remote_copy_line(settings: Any, trail: Any) -> str | None:
    """Retries the WORM copy's outbox once and says how complete the copy is."""
    from runbook.worm import catch_up

    if settings.config_path is None:
        return None  # the WORM settings live in the inventory; without one, nothing to retry
    status = catch_up(settings.inventory(), trail.dir)
    return None if status is None else f"remote copy: {status.line()}"


def cmd_report(args: argparse.Namespace) -> int:
    from core.errors import ApprovalRefused
    from runbook.approvals import open_trail
    from runbook.report import render_markdown

    try:
        trail = open_trail(_settings(args), args.incident)
    except ApprovalRefused as exc:
        raise ConfigError(exc.detail) from None
    _remote_copy_line(_settings(args), trail)
    if args.format == "html":
        from runbook.report_html import render_html

        text = render_html(trail)
    else:
        text = render_markdown(trail)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(args.output)
    else:
        print(text)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from runbook.plan_preview import preview

    print(
        preview(
            _settings(args),
            args.playbook,
            args.target,
            policy=args.policy,
            window=(args.window_start, args.window_end),
        )
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from runbook.demo import run_demo

    return run_demo(Path(args.workdir), keep=args.keep, kind=args.kind)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_prefect_console(args.verbose)
    _prefect_follows_environment()
    try:
        module = getattr(args, "_command_module", None)
        if module is not None:
            return int(module.run(args, _settings(args)))
        if args.command == "breach":
            return cmd_run(args, "breach-response")
        if args.command == "run":
            return cmd_run(args, args.playbook)
        if args.command == "status":
            return cmd_status(args)
        if args.command in ("approve", "reject"):
            return cmd_decide(args, args.command)
        if args.command == "verify":
            return cmd_verify(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "plan":
            return cmd_plan(args)
        if args.command == "demo":
            return cmd_demo(args)
    except ConfigError as exc:
        print(f"mcp-ir: error: {exc.detail}", file=sys.stderr)
        return 2
    except McpIrError as exc:
        print(f"mcp-ir: {exc.detail}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
