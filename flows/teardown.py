"""Flow: retire a tunnel stack (playbook ``teardown``): stop it, archive the tunnel,
destroy its stored credentials, verify nothing is left. ``options={"remove_config":
true}`` also deletes ``config/`` and the compose file; it is kept in the incident's
trigger, so a resume honours it."""

from __future__ import annotations

from flows.playbook import Profile, playbook_entry

teardown = playbook_entry("teardown", Profile(trigger_kind="teardown", severity="info"))
