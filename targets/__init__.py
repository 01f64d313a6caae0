"""Target drivers, one package per kind of deployment, found in ONE registry.

``DRIVERS`` maps an inventory ``kind`` to the module that defines its driver (as
``module:attribute``); :func:`driver_for` imports it on first use. This is the only
place in the engine that lists the kinds: steps call ``ctx.driver`` and the playbook
check compares a step's ``needs`` with the driver's ``capabilities``. Adding a kind
is a package under ``targets/`` plus its inventory section (see docs/ENGINE.md).
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from core.errors import ConfigError

if TYPE_CHECKING:
    from targets.base import TargetDriver

DRIVERS: dict[str, str] = {
    "compose": "targets.compose:DRIVER",
    "helm": "targets.helm:DRIVER",
}


@cache
def driver_for(kind: str) -> TargetDriver:
    """The driver of ``kind``.

    Raises:
        ConfigError: no driver is registered for the kind.
    """
    ref = DRIVERS.get(kind)
    if ref is None:
        raise ConfigError(
            f"kind: no target driver for {kind!r} (known: {', '.join(sorted(DRIVERS))})"
        )
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)
