"""The engine's steps, one module each; importing this package registers them.

Steps never import each other. Each knows which adapter in ``tasks/`` does the
work for each target kind.
"""

from runbook.steps import archive_tunnel, capture_evidence, stop_stack

__all__ = ["archive_tunnel", "capture_evidence", "stop_stack"]
