"""Flow: run any playbook by name (custom playbooks in ``MCP_IR_PLAYBOOK_DIR``)."""

from __future__ import annotations

from flows.playbook import playbook_entry

run_playbook = playbook_entry(None)
