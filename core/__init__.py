"""The kernel: errors, redaction, trail primitives, durations and failpoints.

Everything else may import it; it imports nothing of the engine, the adapters or
the app shell.
"""
