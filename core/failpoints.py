"""Failpoints: named places where a test can make the process die at once, to prove
that a step killed at that exact point resumes without repeating its side effect.

``MCP_IR_FAILPOINT=<step>:<point>`` makes the process exit with status 137 (as if
SIGKILLed) when it reaches that point. Unset in production: a no-op.
"""

from __future__ import annotations

import os
import sys


def reach(step: str, point: str) -> None:
    if os.environ.get("MCP_IR_FAILPOINT") == f"{step}:{point}":
        sys.stderr.write(f"failpoint {step}:{point}: exiting as if killed\n")
        sys.stderr.flush()
        os._exit(137)
