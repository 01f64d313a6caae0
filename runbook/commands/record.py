"""``mcp-ir record INCIDENT STEP --as NAME [--ticket REF] [--comment TEXT] [--field K=V]``:
record what a person did outside the engine for a step that waits for it (e.g.
``contact_support``: the vendor's ticket reference). The values go to the paused
flow run, which validates and records them; this prints the trail record."""

from __future__ import annotations

import argparse
import re
from typing import Any

from core.errors import ConfigError

NAME = "record"
HELP = "record what a person did for a step that waits for it (e.g. the support ticket)"
DESCRIPTION = (
    "Deliver a person's record to STEP of INCIDENT while the step waits for it, e.g. "
    "`mcp-ir record INC-… contact_support --ticket SUP-1234 --as alice`. The record is a "
    "statement over the step's plan hash and the fields, signed with your SSH key (--key, "
    "$MCP_IR_SSH_KEY or ssh-agent) and checked against people.<NAME>.ssh_keys. The flow checks "
    "that NAME is a person in the inventory and the step's own rules (contact_support: a "
    "non-empty, one-line ticket of at most 200 characters), then records it in the trail. "
    "Exit 0 when recorded, 1 when refused (the reason is printed), 2 for bad arguments."
)

_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_RESERVED = frozenset({"by", "source", "proof"})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("incident", help="incident id (INC-…)")
    p.add_argument("step", help="the step waiting for the record (e.g. contact_support)")
    p.add_argument(
        "--as",
        dest="by",
        default=None,
        metavar="NAME",
        help="who did it: a person in the inventory (default: $MCP_IR_USER or login)",
    )
    p.add_argument("--ticket", default=None, help="the vendor's ticket reference (shortcut)")
    p.add_argument("--comment", default=None, help="free text kept with the record")
    p.add_argument(
        "--key",
        default=None,
        metavar="PATH",
        help="your SSH private key to sign the record (default: $MCP_IR_SSH_KEY, else ssh-agent)",
    )
    p.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another field of the step's form (repeatable)",
    )


def parse_fields(args: argparse.Namespace) -> dict[str, str]:
    """The form fields from ``--field`` pairs and the ``--ticket``/``--comment`` shortcuts.

    Raises:
        ConfigError: a malformed, reserved or repeated field (naming it).
    """
    fields: dict[str, str] = {}
    for pair in args.field:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not _FIELD_NAME.match(key):
            raise ConfigError(
                f"--field {pair!r}: expected KEY=VALUE with a lower-case KEY (e.g. ticket=SUP-1)"
            )
        if key in _RESERVED:
            raise ConfigError(f"--field {key}: set by the command itself (use --as for 'by')")
        if key in fields:
            raise ConfigError(f"--field {key}: given twice")
        fields[key] = value
    for key in ("ticket", "comment"):
        value = getattr(args, key)
        if value is None:
            continue
        if key in fields:
            raise ConfigError(f"--{key}: also given as --field {key}=…; give it once")
        fields[key] = value
    if "ticket" in fields and not fields["ticket"].strip():
        raise ConfigError("--ticket: must not be empty")
    return fields


def signed_fields(form: Any, fields: dict[str, str]) -> dict[str, str]:
    """Every field of the step's form the record will keep (given or default), as the
    step keeps it (stripped), so the signature covers exactly what is recorded."""
    out: dict[str, str] = {}
    for name, info in form.model_fields.items():
        if name in _RESERVED or name == "proof":
            continue
        if name in fields:
            out[name] = fields[name].strip()
        elif not info.is_required():
            out[name] = "" if info.default is None else str(info.default)
    return out


def run(args: argparse.Namespace, settings: Any) -> int:
    import getpass
    import os

    from core.errors import ApprovalRefused
    from runbook.approvals import cli_signer, open_trail
    from runbook.manual import submit_manual
    from runbook.registry import load_steps

    by = args.by or os.environ.get("MCP_IR_USER") or getpass.getuser()
    fields = parse_fields(args)
    step = load_steps().get(args.step)
    if step is None:
        raise ConfigError(f"step: unknown step {args.step!r}")
    if step.manual_input is None:
        raise ConfigError(f"step: {args.step!r} takes no manual record (nothing to record)")
    unknown = set(fields) - set(step.manual_input.model_fields)
    if unknown:
        raise ConfigError(
            f"--field {sorted(unknown)[0]}: not a field of {args.step!r} "
            f"(fields: {', '.join(sorted(set(step.manual_input.model_fields) - _RESERVED))})"
        )
    try:
        open_trail(settings, args.incident)
    except ApprovalRefused as exc:
        raise ConfigError(f"incident: {exc.detail}") from None
    signed = signed_fields(step.manual_input, fields)
    signer = cli_signer(
        settings,
        incident_id=args.incident,
        step=args.step,
        approver=by,
        decision="record",
        key=args.key,
        fields=signed,
    )
    record = submit_manual(
        settings,
        incident_id=args.incident,
        step=args.step,
        by=by,
        fields=signed,
        signer=signer,
    )
    shown = ", ".join(
        f"{k}={record.data[k]}" for k in sorted(fields) if k in record.data and k != "comment"
    )
    print(f"recorded by {by} for {args.step} of {args.incident}" + (f": {shown}" if shown else ""))
    return 0
