"""The ``audit:`` section of a target in the inventory (every field optional).

Example::

    audit:
      mcp_path: /mcp                  # the MCP endpoint path on each route's upstream
      mcp_urls: {crm: http://crm.internal:8000/mcp}   # where the auditor reaches a route
      mcp_tokens_env: {crm: AUDIT_CRM_TOKEN}          # bearer token for tools/list
      allowed_ips_max_prefix: 24      # an IPv4 range broader than /24 is flagged
      rotation: {max_age: 30d, cert_expiry_within: 14d}
      drill_max_age: 8d
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.durations import parse_duration

_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _seconds(value: object) -> float:
    return parse_duration(value)


class RotationPolicy(BaseModel):
    """How old the tunnel token and server certificate may get, and how close to its
    expiry the certificate may come, before the audit fails."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_age: float = 30 * 86400.0
    cert_expiry_within: float = 14 * 86400.0

    @field_validator("max_age", "cert_expiry_within", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return _seconds(value)


class AuditSettings(BaseModel):
    """Per-target audit settings; defaults are the playbook's (``posture-audit``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mcp_path: str = Field(default="/mcp", pattern=r"^/[^\s?#]*$")
    mcp_urls: dict[str, str] = Field(default_factory=dict)
    mcp_tokens_env: dict[str, str] = Field(default_factory=dict)
    allowed_ips_max_prefix: int = Field(default=24, ge=0, le=32)
    rotation: RotationPolicy = Field(default_factory=RotationPolicy)
    drill_max_age: float = 8 * 86400.0

    @field_validator("drill_max_age", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return _seconds(value)

    @field_validator("mcp_urls")
    @classmethod
    def _urls(cls, value: dict[str, str]) -> dict[str, str]:
        for route, url in value.items():
            if not re.match(r"^https?://[^\s/]+(/\S*)?$", url):
                raise ValueError(f"mcp_urls.{route}: {url!r} is not an http(s) URL")
        return value

    @field_validator("mcp_tokens_env")
    @classmethod
    def _envs(cls, value: dict[str, str]) -> dict[str, str]:
        for route, name in value.items():
            if not _ENV.match(name):
                raise ValueError(
                    f"mcp_tokens_env.{route}: {name!r} is not an environment variable name"
                )
        return value
