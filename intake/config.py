"""Intake configuration: the inventory YAML's top-level ``intake:`` key.

The model only names environment variables for secrets; values are resolved by
:func:`load_intake` when a command runs (never at import), and a missing variable is
a :class:`~core.errors.ConfigError` naming it. Resolved secrets live in
:class:`SourceSecrets`, whose repr shows fingerprints only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from core.durations import parse_duration
from core.errors import ConfigError, CredentialsError
from core.redact import fingerprint
from intake.models import Severity

FormatName = Literal[
    "generic",
    "splunk",
    "datadog",
    "elastic",
    "azure-monitor",
    "sentinel",
    "pagerduty",
    "alertmanager",
    "grafana",
]
AuthMode = Literal[
    "hmac",
    "bearer",
    "basic",
    "url-token",
    "pagerduty",
    "grafana",
    "standard-webhooks",
    "entra-id",
]
# The same names as tuples, for messages and loops (one list: the Literal types).
FORMATS: tuple[str, ...] = get_args(FormatName)
AUTH_MODES: tuple[str, ...] = get_args(AuthMode)


def _as_timedelta(value: object) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=parse_duration(value))


# A duration field: ``90``, ``30s``, ``15m``, ``2h`` or a timedelta (core.durations).
Duration = Annotated[timedelta, BeforeValidator(_as_timedelta)]
MAPPABLE = ("title", "alert_id", "severity", "status", "time", "description", "link")
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
    window_before: Duration = timedelta(hours=1)
    window_after: Duration = timedelta(0)

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


class EntraIdConfig(BaseModel):
    """``entra_id:`` of an ``auth: entra-id`` source (Azure Monitor secure webhook).

    Exactly one of ``jwks_url`` (the tenant's keys, e.g.
    ``https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys``) or
    ``jwks_file`` (a JWKS document on disk, for hosts without egress).
    """

    model_config = ConfigDict(extra="forbid")

    jwks_url: str | None = None
    jwks_file: Path | None = None
    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256"], min_length=1)

    @model_validator(mode="after")
    def _one_key_source(self) -> EntraIdConfig:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("give exactly one of jwks_url or jwks_file")
        if self.jwks_url is not None and not self.jwks_url.startswith(("https://", "http://")):
            raise ValueError("jwks_url must be an http(s) URL")
        return self


class SourceConfig(BaseModel):
    """One sender of alerts (a SIEM instance), reached at ``POST /alerts/{name}``
    (or ``POST /alerts/{name}/{token}`` with ``auth: url-token``).

    Attributes:
        format: the payload format (see :data:`FORMATS`).
        auth: how requests authenticate (see :data:`AUTH_MODES`, docs/intake.md).
        secrets_env: environment variables holding the active secrets (several
            during a rotation): HMAC keys, bearer tokens, basic-auth passwords, URL
            tokens, PagerDuty / Grafana signing secrets or Standard Webhooks
            ``whsec_`` secrets, by mode. Not used by ``entra-id``.
        signature_secrets_env: secrets to check a vendor signature header with when
            it is present on a source whose mode is not that vendor's (default:
            ``secrets_env``). A present but wrong vendor signature is always 401.
        username: the basic-auth user name (``auth: basic``).
        timestamp_header: Grafana's optional timestamp header (``auth: grafana``).
        entra_id: JWT settings (``auth: entra-id``).
        mode: ``launch`` (default) starts runs; ``observe`` stores each alert with
            the decision launch mode would have taken and starts nothing.
        fields: dotted paths for ``title``, ``alert_id``, ``severity``, ``status``,
            ``time``, ``description``, ``link`` (unknown payload fields are kept).
        severity_map: the sender's severity values -> ours.
        rules: first match gives the target.
    """

    model_config = ConfigDict(extra="forbid")

    format: FormatName
    auth: AuthMode = "hmac"
    secrets_env: list[str] = Field(default_factory=list)
    signature_secrets_env: list[str] = Field(default_factory=list)
    username: str | None = Field(default=None, min_length=1)
    timestamp_header: str | None = Field(default=None, min_length=1)
    entra_id: EntraIdConfig | None = None
    mode: Literal["launch", "observe"] = "launch"
    fields: dict[str, str] = Field(default_factory=dict)
    severity_map: dict[str, Severity] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("secrets_env", "signature_secrets_env")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or not name.replace("_", "").isalnum():
                raise ValueError(f"{name!r} is not an environment variable name")
        return value

    @field_validator("fields")
    @classmethod
    def _mappable(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if name not in MAPPABLE:
                raise ValueError(f"cannot map {name!r}: use one of {', '.join(MAPPABLE)}")
            if not path or any(not part for part in path.split(".")):
                raise ValueError(f"{name}: {path!r} is not a dotted path")
        return value

    @model_validator(mode="after")
    def _mode_needs(self) -> SourceConfig:
        if self.auth == "entra-id":
            if self.entra_id is None:
                raise ValueError("entra_id: auth entra-id needs an entra_id section")
        elif not self.secrets_env:
            raise ValueError(f"secrets_env: auth {self.auth} needs at least one variable")
        if self.auth == "basic" and self.username is None:
            raise ValueError("auth: basic needs username (the password is in secrets_env)")
        if self.fields and self.format in ("alertmanager", "grafana") and "alert_id" in self.fields:
            raise ValueError("fields: alert_id cannot be mapped, grouped formats use fingerprint")
        return self


class IntakeConfig(BaseModel):
    """The ``intake:`` section of the inventory."""

    model_config = ConfigDict(extra="forbid")

    store: Path | None = None
    dedup_window: Duration = timedelta(hours=1)
    auto_contain_at: Severity = Severity.high
    max_body_bytes: int = Field(default=256 * 1024, gt=0)
    timestamp_tolerance_s: int = Field(default=300, gt=0)
    launch_attempts: int = Field(default=5, ge=1, le=50)
    launch_backoff: Duration = timedelta(seconds=2)
    launch_backoff_max: Duration = timedelta(minutes=5)
    launch_confirm_timeout: Duration = timedelta(minutes=5)
    sources: dict[str, SourceConfig] = Field(default_factory=dict)

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
    """The active secrets of one source (several during a rotation), and those that
    check a foreign vendor signature header (default: the same).

    The repr shows fingerprints, never values.
    """

    values: tuple[bytes, ...] = field(repr=False)
    signature_values: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def signing(self) -> tuple[bytes, ...]:
        """Secrets for a vendor signature header on a source of another mode."""
        return self.signature_values or self.values

    def __repr__(self) -> str:
        prints = ", ".join(fingerprint(v) for v in self.values)
        return f"SourceSecrets([{prints}])"


@dataclass(frozen=True)
class IntakeRuntime:
    """Configuration plus what was resolved when the command ran."""

    config: IntakeConfig
    secrets: Mapping[str, SourceSecrets]
    store_path: Path


_FIELD_MESSAGE = re.compile(r"^Value error, ([a-z_]+): (.*)$", re.DOTALL)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = [str(p) for p in ("intake", *item["loc"])]
        message = item["msg"]
        named = _FIELD_MESSAGE.match(message)
        if named:  # a model-level check naming its field: put the field in the path
            loc.append(named.group(1))
            message = named.group(2)
        parts.append(f"{'.'.join(loc)}: {message}")
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
        lists: dict[str, list[bytes]] = {}
        for key in ("secrets_env", "signature_secrets_env"):
            lists[key] = []
            for var in getattr(source, key):
                value = env.get(var)
                if not value:
                    raise CredentialsError(
                        f"intake.sources.{name}.{key}: environment variable {var} is "
                        + ("empty" if value == "" else "not set")
                    )
                lists[key].append(value.encode())
        resolved[name] = SourceSecrets(
            tuple(lists["secrets_env"]), tuple(lists["signature_secrets_env"])
        )
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
