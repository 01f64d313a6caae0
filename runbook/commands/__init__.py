"""Extra ``mcp-ir`` subcommands, one module each (discovered by ``runbook.cli``).

A command module defines ``NAME``, ``HELP``, ``DESCRIPTION`` (optional),
``add_arguments(parser)`` and ``run(args, settings) -> int``. It raises
``ConfigError`` for bad input (exit 2) and ``McpIrError`` for a failed run (exit 1).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def discover() -> list[ModuleType]:
    modules = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            modules.append(importlib.import_module(f"{__name__}.{info.name}"))
    return modules
