"""Where the engine finds its inventory and writes its evidence.

Resolved when a command runs (never at import): explicit argument, then the
environment (``MCP_IR_CONFIG``, ``MCP_IR_EVIDENCE_DIR``), then the default.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ConfigError

if TYPE_CHECKING:
    from runbook.inventory import Inventory

DEFAULT_EVIDENCE_DIR = Path("evidence")


@dataclass
class Settings:
    """The two paths every command needs. The inventory is parsed lazily, once."""

    config_path: Path | None
    evidence_dir: Path
    _inventory: Inventory | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_env(
        cls, config: str | Path | None = None, evidence_dir: str | Path | None = None
    ) -> Settings:
        cfg = config or os.environ.get("MCP_IR_CONFIG")
        ev = evidence_dir or os.environ.get("MCP_IR_EVIDENCE_DIR") or DEFAULT_EVIDENCE_DIR
        return cls(config_path=Path(cfg) if cfg else None, evidence_dir=Path(ev).resolve())

    def inventory(self) -> Inventory:
        """The parsed inventory.

        Raises:
            ConfigError: no inventory was given, or it is invalid.
        """
        if self._inventory is None:
            from runbook.inventory import load_inventory

            if self.config_path is None:
                raise ConfigError(
                    "no inventory: pass --config PATH or set MCP_IR_CONFIG "
                    "(see README, 'Inventory reference')"
                )
            from runbook.target_state import apply_current_tunnels

            inventory, notes = apply_current_tunnels(
                load_inventory(self.config_path), self.evidence_dir
            )
            for note in notes:
                print(f"mcp-ir: warning: {note}", file=sys.stderr)
            self._inventory = inventory
        return self._inventory

    def incident_dir(self, incident_id: str) -> Path:
        return self.evidence_dir / incident_id
