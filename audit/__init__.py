"""The hardening audit: the seed's best practices checked, read-only, on every target.

``audit.engine`` runs the checks of one target (``audit.checks``) on facts read by
``audit.facts_compose`` / ``audit.facts_helm`` and the upstream MCP servers probed
by ``audit.mcp_probe``; ``audit.store`` keeps every result in the evidence store and
diffs it against the previous run (``audit.drift`` tells Slack about new failures);
``audit.report`` renders it; ``audit.metrics`` exposes it on ``/metrics``. Nothing
here changes a target: every call it makes is a read.
"""
