"""The kernel: errors, redaction, trail primitives, durations, failpoints, process
liveness and file locks (``processes``), dataclasses from SQLite rows (``rows``), the
user's YAML files (``yamlfile``) and the X.509 builders (``certbuild``) the product,
the sandboxes and the tests share.

Everything else may import it; it imports nothing of the engine, the adapters or
the app shell.
"""
