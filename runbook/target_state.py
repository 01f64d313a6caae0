"""Each target's current tunnel, domain, credential fingerprints and last rotation,
derived from the incidents' trails.

After ``rotate_credentials`` the inventory still names the archived tunnel: the
engine remembers the rotation here instead, so the next run targets the new
tunnel without anyone editing the inventory by hand. Every value says where it
came from (incident and seq).

The evidence directory may be writable by people who are not approvers, so a
trail counts only when it verifies (``core.trail.verify_dir``: chain, artifacts
and — once the trail is checkpointed — its signed checkpoints); the trails that
do not are listed as ``ignored`` with the reason, never silently used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.trail import Trail, verify_dir
from runbook.incident_index import incident_dirs
from runbook.incident_view import build_view


@dataclass(frozen=True)
class Sourced:
    """A value and the trail record it was read from."""

    value: Any
    incident: str
    seq: int
    ts: str

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "incident": self.incident, "seq": self.seq, "ts": self.ts}

    def origin(self) -> str:
        return f"{self.incident}#{self.seq}"


@dataclass
class TargetState:
    """What the trails say about one target (absent fields: no trail said anything)."""

    target: str
    tunnel_id: Sourced | None = None
    domain: Sourced | None = None
    token: Sourced | None = None
    ca: Sourced | None = None
    server_cert: Sourced | None = None
    last_rotation: Sourced | None = None
    archived_tunnels: dict[str, Sourced] = field(default_factory=dict)
    # archived tunnel id -> the tunnel a rotation replaced it with ({"id", "domain"})
    successors: dict[str, Sourced] = field(default_factory=dict)

    def current_for(self, tunnel_id: str) -> list[Sourced]:
        """The replacements of ``tunnel_id``, oldest first (empty: it is current)."""
        chain: list[Sourced] = []
        seen = {tunnel_id}
        while tunnel_id in self.successors:
            nxt = self.successors[tunnel_id]
            tunnel_id = nxt.value["id"]
            if tunnel_id in seen:
                break
            seen.add(tunnel_id)
            chain.append(nxt)
        return chain

    def is_archived(self, tunnel_id: str | None) -> Sourced | None:
        return self.archived_tunnels.get(tunnel_id) if tunnel_id else None

    def as_json(self) -> dict[str, Any]:
        def one(s: Sourced | None) -> dict[str, Any] | None:
            return s.as_json() if s else None

        return {
            "tunnel_id": one(self.tunnel_id),
            "domain": one(self.domain),
            "token_fingerprint": one(self.token),
            "ca_fingerprint": one(self.ca),
            "server_cert_fingerprint": one(self.server_cert),
            "last_rotation": one(self.last_rotation),
            "archived_tunnels": {k: v.as_json() for k, v in self.archived_tunnels.items()},
            "replaced_tunnels": {k: v.as_json() for k, v in self.successors.items()},
        }


@dataclass
class StateIndex:
    targets: dict[str, TargetState] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)  # incident -> why

    def get(self, target: str) -> TargetState:
        return self.targets.get(target) or TargetState(target)


def derive(evidence_dir: Path, only: list[Path] | None = None) -> StateIndex:
    """Reads every verifying trail (or those of ``only``), in the order the incidents
    were opened."""
    index = StateIndex()
    ordered = []
    for directory in incident_dirs(evidence_dir) if only is None else only:
        check = verify_dir(directory)
        if not check.ok:
            index.ignored[directory.name] = check.line()
            continue
        records = Trail(directory).records()
        view = build_view(records)
        ordered.append((view.incident.get("opened_at") or "", directory.name, view, records))
    ordered.sort(key=lambda item: (item[0], item[1]))
    for _, incident, view, records in ordered:
        target = view.incident.get("target")
        if not target:
            continue
        state = index.targets.setdefault(target, TargetState(target))
        archived_here: list[str] = []
        for rec in records:
            _apply(state, incident, rec, archived_here)
    return index


def _apply(state: TargetState, incident: str, rec: Any, archived_here: list[str]) -> None:
    def src(value: Any) -> Sourced:
        return Sourced(value, incident, rec.seq, rec.ts)

    data = rec.data
    if rec.kind == "tunnel.archived" and data.get("id"):
        state.archived_tunnels[data["id"]] = src(data.get("archived_at") or rec.ts)
        archived_here.append(data["id"])
    elif rec.kind == "rotation.completed":
        tunnel = data.get("tunnel") or {}
        if tunnel.get("id"):
            state.tunnel_id = src(tunnel["id"])
            state.domain = src(tunnel.get("domain"))
            for old in archived_here:
                if old != tunnel["id"]:
                    state.successors[old] = src(
                        {"id": tunnel["id"], "domain": tunnel.get("domain")}
                    )
        token = (data.get("token") or {}).get("token")
        if token:
            state.token = src(token)
        material = data.get("material") or {}
        if material.get("ca_fingerprint"):
            state.ca = src(material["ca_fingerprint"])
        if material.get("tls_fingerprint"):
            state.server_cert = src(material["tls_fingerprint"])
        state.last_rotation = src({"kind": "breach rotation", "at": rec.ts})
    elif rec.kind == "tunnel.token_rotated":
        token = data.get("token")
        if token:
            state.token = src(token)
        state.last_rotation = src({"kind": "token rotation (drill)", "at": rec.ts})
    elif rec.kind == "drill.cert.renewed" and data.get("fingerprint"):
        state.server_cert = src(data["fingerprint"])
        state.last_rotation = src({"kind": "server certificate renewal (drill)", "at": rec.ts})
    elif rec.kind == "drill.ca.deployed" and data.get("ca"):
        state.ca = src(data["ca"])
        state.last_rotation = src({"kind": "CA rotation (drill)", "at": rec.ts})


def apply_current_tunnels(inventory: Any, evidence_dir: Path) -> tuple[Any, list[str]]:
    """The inventory with each target whose tunnel a rotation replaced pointed at the
    current tunnel (following replacements in order), and what was changed.

    Only a tunnel the trails show archived AND replaced is followed, so an inventory
    naming a tunnel no trail knows is left as written.
    """
    from runbook.inventory import TunnelConfig

    # Only a trail that archived a tunnel can replace one: the others are not read
    # (nor verified) on every inventory load.
    archiving = [d for d in incident_dirs(evidence_dir) if _mentions_tunnels(d)]
    if not archiving:
        return inventory, []
    index = derive(evidence_dir, only=archiving)
    notes: list[str] = []
    targets = dict(inventory.targets)
    for name, target in inventory.targets.items():
        state = index.targets.get(name)
        if state is None:
            continue
        chain = state.current_for(target.tunnel.id)
        if not chain:
            continue
        last = chain[-1]
        current = TunnelConfig(id=last.value["id"], domain=last.value.get("domain"))
        targets[name] = target.model_copy(update={"tunnel": current})
        notes.append(
            f"target {name!r}: the inventory names tunnel {target.tunnel.id}, archived and "
            f"replaced by {current.id} ({current.domain}) in {last.origin()}; using {current.id}"
        )
    if not notes:
        return inventory, []
    return inventory.model_copy(update={"targets": targets}), notes


def _mentions_tunnels(directory: Path) -> bool:
    """Cheap pre-filter: only trails that archived a tunnel can replace one."""
    return b'"kind":"tunnel.archived"' in (directory / "trail.jsonl").read_bytes()
