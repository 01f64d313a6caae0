"""Notifier plugins: one role, one interface. A new notifier is one module and one
entry point; it touches no core file.

A plugin is registered in the entry-point group ``mcp_ir.notifiers`` (see
pyproject.toml) as a :class:`NotifierPlugin` object. The inventory configures it
under ``notifiers: {<name>: {...}}``; the plugin validates its own section with its
own pydantic ``config_model`` when the inventory is loaded (an error names
``notifiers.<name>.<field>``), and builds one trail observer per run
(``runbook/observers.py`` calls :func:`build_observers`). An unknown name is an
error naming the known ones.

Observers must never block or fail a step: they queue what they send in a durable
outbox (:mod:`notifications.delivery`) and deliver it in the background.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ValidationError

from core.errors import ConfigError
from core.trail import Record, Trail

GROUP = "mcp_ir.notifiers"


@dataclass(frozen=True)
class NotifierContext:
    """What a plugin may use to build its observer for one run."""

    incident: str
    target: str
    trail: Trail
    evidence_dir: Path
    emails: dict[str, str]  # person -> email, from the inventory's people


class Observer(Protocol):
    def on_record(self, record: Record) -> None: ...

    def close(self) -> None: ...


class NotifierPlugin(Protocol):
    name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]

    def build(self, config: Any, ctx: NotifierContext) -> Observer: ...


@cache
def registry() -> dict[str, NotifierPlugin]:
    """Every installed notifier plugin, by name (entry points of :data:`GROUP`)."""
    plugins: dict[str, NotifierPlugin] = {}
    for ep in entry_points(group=GROUP):
        plugin = ep.load()
        plugins[ep.name] = plugin
    return plugins


def validate(notifiers: dict[str, Any]) -> dict[str, BaseModel]:
    """Each section checked by its plugin's own model.

    Raises:
        ConfigError: an unknown notifier, or a section its plugin refuses (the message
            names ``notifiers.<name>.<field>``).
    """
    plugins = registry()
    out: dict[str, BaseModel] = {}
    for name, section in (notifiers or {}).items():
        if name not in plugins:
            known = ", ".join(sorted(plugins)) or "none installed"
            raise ConfigError(f"notifiers.{name}: unknown notifier (known: {known})")
        try:
            out[name] = plugins[name].config_model.model_validate(section or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(
                f"notifiers.{name}{'.' + where if where else ''}: {first['msg']}"
            ) from None
    return out


def build_observers(runner: Any) -> list[Observer]:
    """One observer per configured notifier for ``runner``'s incident."""
    sections = getattr(runner.inventory, "notifiers", None) or {}
    if not sections:
        return []
    configs = validate(sections)
    ctx = NotifierContext(
        incident=runner.incident.id,
        target=runner.incident.target,
        trail=runner.trail,
        evidence_dir=Path(runner.settings.evidence_dir),
        emails={n: p.email for n, p in runner.inventory.people.items() if p.email},
    )
    plugins = registry()
    return [plugins[name].build(config, ctx) for name, config in configs.items()]


class _Fanout:
    """The observers of every configured notifier, as one observer."""

    def __init__(self, observers: list[Observer]) -> None:
        self.observers = observers

    def on_record(self, record: Record) -> None:
        for observer in self.observers:
            observer.on_record(record)

    def close(self) -> None:
        for observer in self.observers:
            observer.close()


def build(runner: Any) -> _Fanout | None:
    """Factory for ``runbook.observers.FACTORIES``."""
    observers = build_observers(runner)
    return _Fanout(observers) if observers else None
