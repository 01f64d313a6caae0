"""Observers of a run's trail: things that react to every record the flow writes
(the Slack thread, the WORM copy in S3, metrics). Each is built by a factory
named here; a factory returns None when its feature is not configured.

An observer has ``on_record(record)`` (must not raise, must not block for long)
and ``close()`` (flush what is pending; called when the run ends).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Protocol

from core.trail import Record

# "module:function" factories, each ``factory(runner) -> Observer | None``.
FACTORIES: list[str] = [
    "runbook.checkpointing:build",
    "runbook.worm:build",
    "notifications.plugins:build",
]


class Observer(Protocol):
    def on_record(self, record: Record) -> None: ...

    def close(self) -> None: ...


def attach(runner: Any) -> list[Observer]:
    """Builds every configured observer and subscribes it to the runner's trail."""
    observers: list[Observer] = []
    for spec in FACTORIES:
        module_name, _, name = spec.partition(":")
        factory = getattr(importlib.import_module(module_name), name)
        observer = factory(runner)
        if observer is not None:
            runner.trail.subscribe(observer.on_record)
            observers.append(observer)
    return observers


def close_all(observers: list[Observer]) -> None:
    for observer in observers:
        try:
            observer.close()
        except Exception:  # noqa: BLE001 (closing an observer never fails the run)
            logging.getLogger("mcp_ir.observers").exception("observer close failed")
