"""The target inventory: one YAML file listing the stacks mcp-ir may act on.

Validation errors name the file, the target and the field. Secrets are never
written in the file: it names environment variables (or a Prefect Secret block,
or Workload Identity Federation) that hold them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from audit.config import AuditSettings
from core.errors import ConfigError
from core.yamlfile import read_yaml
from intake.config import IntakeConfig
from tasks.logs.config import ReviewConfig
from tasks.oauth_tokens import UpstreamServer

_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(_Model):
    """Someone who may decide at a gate. ``ssh_keys`` are the OpenSSH public keys
    (``ssh-ed25519 …`` or ``ssh-rsa …``) whose signatures count as this person's
    decisions from the CLI (``mcp-ir approve|reject|record``)."""

    slack_user_id: str | None = None
    email: str | None = None
    ssh_keys: list[str] = Field(default_factory=list)

    @field_validator("ssh_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        from runbook.signing import normalize_key

        out = []
        for i, line in enumerate(keys):
            try:
                out.append(normalize_key(line))
            except ValueError as exc:
                raise ValueError(f"entry {i}: {exc}") from None
        if len(set(out)) != len(out):
            raise ValueError("a key is listed twice")
        return out


class ComposeConfig(_Model):
    project: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    docker_host: str | None = None
    data_dir: Path
    config_dir: Path | None = None
    compose_file: Path | None = None
    data_uid: int = 65532
    data_gid: int = 65532


class HelmConfig(_Model):
    release: str = "mcp-tunnel"
    namespace: str = "mcp-tunnel"
    deployment: str = "mcp-tunnel"
    kubeconfig: str | None = None
    context: str | None = None


class WorkloadIdentity(_Model):
    identity_token_file: str
    federation_rule_id: str = Field(pattern=r"^fdrl_")
    organization_id: str
    service_account_id: str = Field(pattern=r"^svac_")
    workspace_id: str | None = None


class AnthropicCredentials(_Model):
    bearer_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    workload_identity: WorkloadIdentity | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> AnthropicCredentials:
        if bool(self.bearer_env) == bool(self.workload_identity):
            raise ValueError("set exactly one of bearer_env or workload_identity")
        return self


class AnthropicConfig(_Model):
    base_url: str | None = None
    credentials: AnthropicCredentials


class TunnelConfig(_Model):
    id: str = Field(pattern=r"^tnl_[A-Za-z0-9]+$")
    domain: str | None = None


class SecretsManagerConfig(_Model):
    """AWS Secrets Manager secrets that hold the tunnel credentials (values written by
    ``rotate_credentials`` as a new version; the old one is staged ``AWSPREVIOUS``).

    Attributes:
        token_secret_id: Holds the tunnel token as a plain string (``TUNNEL_TOKEN``).
        ca_secret_id: Optional; holds JSON ``{"ca.crt": PEM, "ca.key": PEM}``.
        tls_secret_id: Optional; holds JSON ``{"tls.crt": PEM, "tls.key": PEM}``.
    """

    token_secret_id: str = Field(min_length=1, max_length=2048)
    ca_secret_id: str | None = Field(default=None, min_length=1, max_length=2048)
    tls_secret_id: str | None = Field(default=None, min_length=1, max_length=2048)


class AwsConfig(_Model):
    """AWS settings of a target. Credentials and endpoint come from the standard
    ``AWS_*`` environment (``AWS_ENDPOINT_URL`` included); ``region`` overrides
    ``AWS_DEFAULT_REGION``."""

    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")
    secrets_manager: SecretsManagerConfig | None = None


class LogFileSource(_Model):
    """A log file (and its rotated set) the review reads besides the containers."""

    name: str = Field(min_length=1)
    path: Path
    kind: Literal["auto", "cloudflared", "proxy", "mcp"] = "auto"
    mcp_server: str | None = None


class LogGroupSource(_Model):
    """A CloudWatch Logs group the review reads (``filter_log_events``)."""

    log_group: str = Field(min_length=1, max_length=512)
    name: str | None = None
    streams: list[str] = Field(default_factory=list)
    kind: Literal["auto", "cloudflared", "proxy", "mcp"] = "auto"
    mcp_server: str | None = None


class TargetReview(ReviewConfig):
    """The log review's configuration (``tasks.logs.ReviewConfig``) plus the sources
    beyond the stack's own containers."""

    files: list[LogFileSource] = Field(default_factory=list)
    cloudwatch: list[LogGroupSource] = Field(default_factory=list)


class Target(_Model):
    kind: Literal["compose", "helm"]
    sandbox: bool = False
    # A drill target: rotation drills may run on it unattended (their irreversible
    # steps pass automatically); every other playbook keeps its human gates.
    drill: bool = False
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    slack_channel: str | None = None
    compose: ComposeConfig | None = None
    helm: HelmConfig | None = None
    tunnel: TunnelConfig
    anthropic: AnthropicConfig
    groups: dict[str, list[str]] = Field(default_factory=dict)
    secrets_env: list[str] = Field(default_factory=list)
    upstream_servers: list[UpstreamServer] = Field(default_factory=list)
    review: TargetReview = Field(default_factory=TargetReview)
    aws: AwsConfig | None = None
    # The hardening audit's settings (audit/config.py; docs/audit.md).
    audit: AuditSettings = Field(default_factory=AuditSettings)

    @field_validator("upstream_servers")
    @classmethod
    def _unique_upstream_names(cls, servers: list[UpstreamServer]) -> list[UpstreamServer]:
        names = [s.name for s in servers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate upstream server name(s) {dupes}")
        return servers

    @model_validator(mode="after")
    def _kind_section(self) -> Target:
        if self.kind == "compose" and self.compose is None:
            raise ValueError("kind 'compose' needs a 'compose' section")
        if self.kind == "helm" and self.helm is None:
            raise ValueError("kind 'helm' needs a 'helm' section")
        return self


class WormS3Config(_Model):
    """The WORM copy of every trail record and artifact in S3 with Object Lock.

    The bucket must have been created with Object Lock enabled; credentials and the
    endpoint come from the standard ``AWS_*`` environment.

    Attributes:
        bucket: An S3 bucket created with Object Lock enabled.
        prefix: Key prefix; objects go under ``<prefix>/<incident>/``.
        mode: ``GOVERNANCE`` (privileged users may bypass) or ``COMPLIANCE`` (nobody may).
        retention_days: How long each object version is locked.
        region: Overrides ``AWS_DEFAULT_REGION``.
    """

    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = Field(default="mcp-ir", pattern=r"^[A-Za-z0-9!_.*'()/-]*$", max_length=512)
    mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE"
    retention_days: int = Field(ge=1, le=36500)
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")


class EvidenceConfig(_Model):
    """Where evidence is copied besides the local evidence directory."""

    s3: WormS3Config | None = None


class EngineConfig(_Model):
    """The engine's own Ed25519 key, which signs the trail checkpoints.

    Attributes:
        checkpoint_public_key: ``ssh-ed25519 AAAA…``; what ``mcp-ir verify`` and the
            WORM copy check checkpoints against.
        checkpoint_key_file: Where the private key is (readable only by the engine's
            user); ``$MCP_IR_ENGINE_KEY`` overrides it. Needed only by processes that
            run incidents.
        checkpoint_every_records: Also checkpoint after this many records.
        checkpoint_every_s: ... or when this many seconds passed since the last one.
    """

    checkpoint_public_key: str
    checkpoint_key_file: Path | None = None
    checkpoint_every_records: int = Field(default=100, ge=1, le=100_000)
    checkpoint_every_s: float = Field(default=60.0, gt=0, le=86_400)

    @field_validator("checkpoint_public_key")
    @classmethod
    def _public(cls, line: str) -> str:
        from core.checkpoints import load_public_key

        try:
            load_public_key(line)
        except ConfigError as exc:
            raise ValueError(exc.detail.removeprefix("engine key: ")) from None
        return " ".join(line.split()[:2])


class Inventory(_Model):
    people: dict[str, Person] = Field(default_factory=dict)
    engine: EngineConfig | None = None
    groups: dict[str, list[str]] = Field(default_factory=dict)
    # Notifier plugins by name (notifications/plugins.py), each section checked by its
    # plugin's own model: e.g. slack: {token_env: …}, pagerduty: {routing_key_env: …},
    # email: {smtp_host: …}. The top-level ``slack:`` of older inventories is
    # ``notifiers.slack``.
    notifiers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    intake: IntakeConfig | None = None
    evidence: EvidenceConfig | None = None
    targets: dict[str, Target]
    source: Path | None = None

    @field_validator("targets")
    @classmethod
    def _target_names(cls, targets: dict[str, Target]) -> dict[str, Target]:
        for name in targets:
            if not re.match(_NAME, name):
                raise ValueError(f"target name {name!r} must match {_NAME}")
        if not targets:
            raise ValueError("at least one target is required")
        return targets

    @model_validator(mode="before")
    @classmethod
    def _legacy_slack(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("slack") is not None:
            raw = dict(raw)
            notifiers = dict(raw.get("notifiers") or {})
            if "slack" in notifiers:
                raise ValueError("give Slack's settings once: 'slack' or 'notifiers.slack'")
            notifiers["slack"] = raw.pop("slack")
            raw["notifiers"] = notifiers
        elif isinstance(raw, dict) and "slack" in raw:
            raw = {k: v for k, v in raw.items() if k != "slack"}
        return raw

    @field_validator("notifiers")
    @classmethod
    def _known_notifiers(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from core.errors import ConfigError
        from notifications.plugins import validate

        try:
            validate(value)
        except ConfigError as exc:
            raise ValueError(exc.detail) from None
        return value

    def target(self, name: str) -> Target:
        from core.errors import UnknownTargetError

        if name not in self.targets:
            known = ", ".join(sorted(self.targets)) or "none"
            raise UnknownTargetError(f"unknown target {name!r} (known: {known})")
        return self.targets[name]

    def group_members(self, target: str, group: str) -> list[str]:
        """Members of an approver group, the target's own definition winning."""
        t = self.target(target)
        if group in t.groups:
            return list(t.groups[group])
        return list(self.groups.get(group, []))

    def has_group(self, target: str, group: str) -> bool:
        return group in self.target(target).groups or group in self.groups


_SECRET_KEYS = re.compile(r"(?i)(^|_)(token|secret|password|api_key|apikey|private_key)$")


def _literal_secrets(node: Any, path: tuple[str, ...] = ()) -> list[str]:
    """Keys that look like they hold a literal secret (``token: abc``)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            sub = (*path, str(key))
            if isinstance(value, str) and _SECRET_KEYS.search(str(key)):
                found.append(".".join(sub))
            found.extend(_literal_secrets(value, sub))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_literal_secrets(value, (*path, str(i))))
    return found


def _describe(file: Path, loc: tuple[Any, ...], msg: str) -> str:
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] == "targets":
        field = ".".join(parts[2:]) or "(target)"
        return f"{file}: target '{parts[1]}': field '{field}': {msg}"
    return f"{file}: field '{'.'.join(parts) or '(top level)'}': {msg}"


def parse_inventory(raw: Any, file: Path) -> Inventory:
    """Validates an already-loaded YAML document.

    Raises:
        ConfigError: naming the file, the target and the field.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: the inventory must be a mapping with a 'targets' key")
    literal = _literal_secrets(raw)
    if literal:
        raise ConfigError(
            f"{file}: field '{literal[0]}' holds a literal secret; name an environment "
            "variable instead (e.g. token_env: MY_TOKEN)"
        )
    try:
        inv = Inventory.model_validate({**raw, "source": file})
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(_describe(file, tuple(err["loc"]), msg)) from None
    _check_groups(inv, file)
    return inv


def _check_groups(inv: Inventory, file: Path) -> None:
    scopes: list[tuple[str | None, dict[str, list[str]]]] = [(None, inv.groups)]
    scopes += [(name, t.groups) for name, t in inv.targets.items()]
    for target, groups in scopes:
        for group, members in groups.items():
            where = (
                f"target '{target}': field 'groups.{group}'"
                if target
                else f"field 'groups.{group}'"
            )
            if not members:
                raise ConfigError(f"{file}: {where}: an approver group cannot be empty")
            unknown = [m for m in members if m not in inv.people]
            if unknown:
                raise ConfigError(
                    f"{file}: {where}: unknown person {unknown[0]!r} (add it to 'people')"
                )
            if len(set(members)) != len(members):
                raise ConfigError(f"{file}: {where}: a person is listed twice")


def load_inventory(path: str | Path) -> Inventory:
    """Reads and validates the inventory file.

    Raises:
        ConfigError: the file is missing, not YAML, or invalid (the message names
            the file, the target and the field).
    """
    file = Path(path)
    return parse_inventory(read_yaml(file, "inventory file", ConfigError), file)
