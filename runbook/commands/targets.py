"""``mcp-ir targets``: each target's current tunnel, domain, credential
fingerprints and last rotation, derived from the trails, with where each value
came from; warns where the inventory still names an archived tunnel."""

from __future__ import annotations

import argparse
import json
from typing import Any

from runbook.target_state import Sourced, TargetState, derive

NAME = "targets"
HELP = "each target's current tunnel and credentials, as the trails say"
DESCRIPTION = (
    "Show every target's current tunnel id and domain, credential fingerprints and last "
    "rotation, derived from the incidents' trails (a rotation replaces the tunnel; runs "
    "use the current one), and where each value came from (incident#seq). Targets of the "
    "inventory are listed when one is given; a warning names each target whose inventory "
    "entry points at an archived tunnel. Trails that do not verify are ignored and listed."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _inventory_tunnels(settings: Any) -> dict[str, str | None]:
    """The tunnels as the inventory FILE names them (settings.inventory() already
    points replaced tunnels at their successors)."""
    from runbook.inventory import load_inventory

    if settings.config_path is None:
        return {}
    inventory = load_inventory(settings.config_path)
    return {name: t.tunnel.id for name, t in inventory.targets.items()}


def run(args: argparse.Namespace, settings: Any) -> int:
    index = derive(settings.evidence_dir)
    configured = _inventory_tunnels(settings)
    names = sorted(set(configured) | set(index.targets))
    report: dict[str, Any] = {}
    warnings: list[str] = []
    for name in names:
        state = index.get(name)
        inv_tunnel = configured.get(name)
        entry = {"inventory_tunnel_id": inv_tunnel, **state.as_json()}
        archived = state.is_archived(inv_tunnel)
        if archived and name in configured:
            current = state.tunnel_id.value if state.tunnel_id else None
            warnings.append(
                f"target {name!r}: the inventory names tunnel {inv_tunnel}, archived by "
                f"{archived.origin()}"
                + (f"; runs use the current tunnel {current}" if current else "")
            )
        report[name] = entry
    if args.json:
        print(
            json.dumps(
                {"targets": report, "warnings": warnings, "ignored_trails": index.ignored},
                indent=2,
            )
        )
        return 0
    if not names:
        print(f"no targets: no inventory and no trails under {settings.evidence_dir}")
    for name in names:
        _print_target(name, configured.get(name), index.get(name))
    for incident, why in index.ignored.items():
        print(f"ignored trail {incident}: {why}")
    for w in warnings:
        print(f"warning: {w}")
    return 0


def _print_target(name: str, inv_tunnel: str | None, state: TargetState) -> None:
    def show(label: str, s: Sourced | None, fallback: str = "-") -> None:
        if s is None:
            print(f"  {label:<18} {fallback}")
        else:
            value = s.value if not isinstance(s.value, dict) else s.value.get("kind")
            when = f" at {s.value['at']}" if isinstance(s.value, dict) else ""
            print(f"  {label:<18} {value}{when}  (from {s.origin()})")

    print(name)
    show("tunnel", state.tunnel_id, f"{inv_tunnel or '-'}  (from the inventory)")
    show("domain", state.domain)
    show("token", state.token)
    show("CA", state.ca)
    show("server cert", state.server_cert)
    show("last rotation", state.last_rotation)
    for tunnel, s in state.archived_tunnels.items():
        print(f"  {'archived':<18} {tunnel}  (from {s.origin()})")
