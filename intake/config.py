"""Intake configuration: the inventory YAML's top-level ``intake:`` key.

The model only names environment variables for secrets; values are resolved by
:func:`load_intake` when a command runs (never at import), and a missing variable is
a :class:`~core.errors.ConfigError` naming it. Resolved secrets live in
:class:`SourceSecrets`, whose repr shows fingerprints only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.durations import parse_duration
from core.errors import ConfigError, CredentialsError
from core.redact import fingerprint
from intake.models import Severity

FORMATS = ("generic", "splunk", "datadog", "pagerduty", "sentinel")
# Fields of a NormalizedAlert a rule may match on; ``raw.<dotted.path>`` reaches into
# the payload as received.
MATCHABLE_FIELDS = ("format", "alert_id", "title", "severity", "description", "link")


class SettingsLike(Protocol):
    """What intake needs from ``runbook.settings.Settings``."""

    evidence_dir: Path

    def inventory(self) -> Any: ...


class Rule(BaseModel):
    """Maps a normalized alert to a target, a severity and a suspected window.

    ``match`` holds shell-style globs (case-sensitive) keyed by a normalized field
    name or ``raw.<path>``; every glob must match. The first matching rule wins.
    """

    model_config = ConfigDict(extra="forbid")

    match: dict[str, str] = Field(default_factory=dict)
    target: str = Field(min_length=1)
    severity: Severity | None = None
    window_before: timedelta = timedelta(hours=1)
    window_after: timedelta = timedelta(0)

    @field_validator("window_before", "window_after", mode="before")
    @classmethod
    def _duration(cls, value: object) -> timedelta:
        return value if isinstance(value, timedelta) else timedelta(seconds=parse_duration(value))

    @field_validator("match")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name not in MATCHABLE_FIELDS and not (name.startswith("raw.") and len(name) > 4):
                raise ValueError(
                    f"cannot match on {name!r}: use one of {', '.join(MATCHABLE_FIELDS)} "
                    "or raw.<path>"
                )
        return value


class SourceConfig(BaseModel):
    """One sender of alerts (a SIEM instance), reached at ``POST /alerts/{name}``."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["generic", "splunk", "datadog", "pagerduty", "sentinel"]
    auth: Literal["hmac", "bearer"] = "hmac"
    secrets_env: list[str] = Field(min_length=1)
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("secrets_env")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or not name.replace("_", "").isalnum():
                raise ValueError(f"{name!r} is not an environment variable name")
        return value


class IntakeConfig(BaseModel):
    """The ``intake:`` section of the inventory."""

    model_config = ConfigDict(extra="forbid")

    store: Path | None = None
    dedup_window: timedelta = timedelta(hours=1)
    auto_contain_at: Severity = Severity.high
    max_body_bytes: int = Field(default=256 * 1024, gt=0)
    timestamp_tolerance_s: int = Field(default=300, gt=0)
    sources: dict[str, SourceConfig] = Field(default_factory=dict)

    @field_validator("dedup_window", mode="before")
    @classmethod
    def _duration(cls, value: object) -> timedelta:
        return value if isinstance(value, timedelta) else timedelta(seconds=parse_duration(value))

    @field_validator("sources")
    @classmethod
    def _source_names(cls, value: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        for name in value:
            if not name or not all(c.isalnum() or c in "-_" for c in name):
                raise ValueError(f"source name {name!r} may hold only letters, digits, '-' and '_'")
        return value

    def store_path(self, evidence_dir: Path) -> Path:
        """Where the SQLite store lives: ``store`` or ``<evidence>/_intake/alerts.sqlite``."""
        return self.store if self.store is not None else evidence_dir / "_intake" / "alerts.sqlite"


@dataclass(frozen=True)
class SourceSecrets:
    """The active secrets of one source (several during a rotation).

    The repr shows fingerprints, never values.
    """

    values: tuple[bytes, ...] = field(repr=False)

    def __repr__(self) -> str:
        prints = ", ".join(fingerprint(v) for v in self.values)
        return f"SourceSecrets([{prints}])"


@dataclass(frozen=True)
class IntakeRuntime:
    """Configuration plus what was resolved when the command ran."""

    config: IntakeConfig
    secrets: Mapping[str, SourceSecrets]
    store_path: Path


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in ("intake", *item["loc"]))
        parts.append(f"{loc}: {item['msg']}")
    return "; ".join(parts)


def parse_intake_config(section: Any, known_targets: Iterable[str] | None = None) -> IntakeConfig:
    """Validates an ``intake:`` mapping.

    Args:
        section: the parsed YAML value of the ``intake`` key (None means no sources),
            or the inventory's already validated :class:`IntakeConfig`.
        known_targets: target names of the inventory; when given, a rule naming any
            other target is refused.

    Raises:
        ConfigError: naming the field and the problem.
    """
    if section is None:
        section = {}
    if isinstance(section, IntakeConfig):
        config = section  # already validated as part of the inventory
    elif not isinstance(section, dict):
        raise ConfigError("intake: must be a mapping")
    else:
        try:
            config = IntakeConfig.model_validate(section)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None
    if known_targets is not None:
        targets = set(known_targets)
        for name, source in config.sources.items():
            for i, rule in enumerate(source.rules):
                if rule.target not in targets:
                    raise ConfigError(
                        f"intake.sources.{name}.rules.{i}.target: unknown target "
                        f"{rule.target!r} (inventory has: {', '.join(sorted(targets)) or 'none'})"
                    )
    return config


def resolve_secrets(
    config: IntakeConfig, environ: Mapping[str, str] | None = None
) -> dict[str, SourceSecrets]:
    """Reads every source's secrets from the environment variables it names.

    Raises:
        CredentialsError: a named variable is unset or empty (the variable is named,
            its value never is).
    """
    env = os.environ if environ is None else environ
    resolved: dict[str, SourceSecrets] = {}
    for name, source in config.sources.items():
        values = []
        for var in source.secrets_env:
            value = env.get(var)
            if not value:
                raise CredentialsError(
                    f"intake.sources.{name}.secrets_env: environment variable {var} is "
                    + ("empty" if value == "" else "not set")
                )
            values.append(value.encode())
        resolved[name] = SourceSecrets(tuple(values))
    return resolved


def load_intake(settings: SettingsLike, environ: Mapping[str, str] | None = None) -> IntakeRuntime:
    """Validates the inventory's ``intake:`` section and resolves the source secrets.

    Args:
        settings: ``runbook.settings.Settings`` (its inventory gives the section and
            the target names rules may use).
        environ: where secrets are read (default ``os.environ``).

    Raises:
        ConfigError: the inventory or the section is invalid, or a secret variable is
            unset (the message names the field or the variable).
    """
    inventory = settings.inventory()
    config = parse_intake_config(getattr(inventory, "intake", None), list(inventory.targets))
    secrets = resolve_secrets(config, environ)
    return IntakeRuntime(config, secrets, config.store_path(Path(settings.evidence_dir)))
