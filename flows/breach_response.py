"""Flow: contain a possibly compromised MCP tunnel stack (playbook ``breach-response``)."""

from __future__ import annotations

from flows.playbook import playbook_entry

breach_response = playbook_entry("breach-response")
