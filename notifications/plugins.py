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

Two optional methods, for channels that need them:

- ``notifier(config, *, inventory, target_name, record, state_dir, redactor)``
  returns a :class:`notifications.base.Notifier` (the per-event interface Slack
  implements), which :func:`notifications.base.build_notifier` hands to callers
  outside a run (the audit's drift report);
- ``drain(config, *, settings, timeout_s)`` delivers what ended runs left in the
  plugin's outbox (``mcp-ir serve`` calls :func:`drain_all` on a timer) and returns
  ``{"incidents": n, "left": m}``.

A plugin keeps durable state under :func:`state_dir` (``<evidence>/_<name>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ValidationError

from core.errors import ConfigError
from core.trail import Record, Trail

GROUP = "mcp_ir.notifiers"
# Plugins this distribution ships, found even when an editable install predates
# their entry point (its metadata is only rewritten by the next ``pip install -e .``).
_SHIPPED = {"slack": "notifications.slack_plugin:plugin"}


@dataclass(frozen=True)
class NotifierContext:
    """What a plugin may use to build its observer for one run."""

    incident: str
    target: str
    trail: Trail
    evidence_dir: Path
    emails: dict[str, str]  # person -> email, from the inventory's people
    inventory: Any = None  # the parsed inventory (targets, people, groups)
    settings: Any = None  # runbook.settings.Settings of the run


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
    for name, value in _SHIPPED.items():
        if name not in plugins:
            module, _, attr = value.partition(":")
            plugins[name] = getattr(import_module(module), attr)
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
        inventory=runner.inventory,
        settings=runner.settings,
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


def configured(inventory: Any) -> list[tuple[NotifierPlugin, BaseModel]]:
    """The plugins the inventory configures, each with its validated section."""
    plugins = registry()
    configs = validate(getattr(inventory, "notifiers", None) or {})
    return [(plugins[name], config) for name, config in configs.items()]


def config_of(inventory: Any, name: str) -> Any:
    """The validated ``notifiers.<name>`` section, or None when not configured."""
    section = (getattr(inventory, "notifiers", None) or {}).get(name)
    return None if section is None else validate({name: section})[name]


def state_dir(evidence_dir: Path, name: str) -> Path:
    """Where plugin ``name`` keeps durable state beside the evidence."""
    return Path(evidence_dir) / f"_{name}"


def drain_all(settings: Any, timeout_s: float = 10.0) -> dict[str, int]:
    """Every configured plugin with a ``drain`` delivers what ended runs left queued.

    Returns:
        ``{"incidents": n, "left": m}`` summed over the plugins.
    """
    total = {"incidents": 0, "left": 0}
    for plugin, config in configured(settings.inventory()):
        drain = getattr(plugin, "drain", None)
        if drain is not None:
            done = drain(config, settings=settings, timeout_s=timeout_s)
            total = {k: total[k] + int(done.get(k, 0)) for k in total}
    return total
