"""The engine's steps, one module each; importing this package registers them all.

Steps never import each other and never ask what kind their target is: the
target's driver (``ctx.driver``, ``targets/``) does the kind-specific work. Modules
whose name starts with ``_`` are helpers.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
