"""The review's configuration, embeddable in the target inventory (YAML).

Example (inventory ``targets.<name>.log_review``)::

    allowed_ip_ranges: [10.0.0.0/8, 192.168.0.0/16]
    tool_allowlist:
      github: [search_issues, get_issue]
    expected_tunnel_locations: [ams, fra]
    gap_threshold: 300          # seconds, or an ISO 8601 duration such as PT5M
    baseline_period: 3600
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import ConfigError

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ReviewConfig(BaseModel):
    """What is normal for this deployment; everything else is a finding.

    Attributes:
        allowed_ip_ranges: CIDRs requests may come from (rule LR004). Empty means
            the rule is off (no range is known), not that everything is suspect.
        tool_allowlist: per MCP server name, the tools it may be called with
            (rule LR005). A server absent from the map is not checked.
        expected_tunnel_locations: edge locations the tunnel normally registers at,
            e.g. ``ams`` or ``ams01`` (rule LR007). Empty turns the rule off.
        gap_threshold: silence longer than this inside the window is a gap (LR008),
            and logs ending earlier than this before the window end are truncated (LR009).
        baseline_period: how far before the window the pre-window baseline for rate
            spikes reaches (LR006). Collectors should collect this much extra.
        rate_bucket: bucket width for rates.
        rate_spike_factor: a window bucket above factor × baseline mean is a spike…
        rate_spike_min_lines: …when it also holds at least this many lines.
        timeline_limit: the timeline keeps this many events (most severe, then earliest).
        max_line_bytes: longer lines are reported (LR011) and only their head is parsed.
        order_tolerance: how far back in time a line may jump before the source
            counts as unordered (the seek path then falls back to a full scan).
        expected_clients: MCP ``clientInfo.name`` values allowed to ``initialize``
            (rule LR022), e.g. ``claude-ai``. Empty turns the rule off.
        reconnect_churn: this many reconnects to the edge inside ``churn_window``
            turn the edge-loss finding (LR014) from medium into high.
        churn_window: the sliding window of ``reconnect_churn``.
        timezone: the zone of zone-less timestamps (IANA name or ``+02:00``);
            ``mcp-ir review --tz`` overrides it. Unset: UTC, and such lines are
            counted as ``assumed_zone``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_ip_ranges: list[str] = Field(default_factory=list)
    tool_allowlist: dict[str, list[str]] = Field(default_factory=dict)
    expected_tunnel_locations: list[str] = Field(default_factory=list)
    gap_threshold: timedelta = timedelta(minutes=5)
    baseline_period: timedelta = timedelta(hours=1)
    rate_bucket: timedelta = timedelta(minutes=1)
    rate_spike_factor: float = Field(default=5.0, gt=1.0)
    rate_spike_min_lines: int = Field(default=100, ge=1)
    timeline_limit: int = Field(default=200, ge=1, le=100_000)
    max_line_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    order_tolerance: timedelta = timedelta(seconds=2)
    expected_clients: list[str] = Field(default_factory=list)
    reconnect_churn: int = Field(default=6, ge=1)
    churn_window: timedelta = timedelta(minutes=10)
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            from .formats import zone_of

            try:
                zone_of(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("allowed_ip_ranges")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP network (CIDR): {exc}") from None
        return value

    @field_validator(
        "gap_threshold", "baseline_period", "rate_bucket", "order_tolerance", "churn_window"
    )
    @classmethod
    def _non_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    @field_validator("rate_bucket")
    @classmethod
    def _positive_bucket(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least one second")
        return value

    def networks(self) -> list[IpNetwork]:
        """The allowed ranges, parsed."""
        return [ipaddress.ip_network(item, strict=False) for item in self.allowed_ip_ranges]

    @classmethod
    def parse(cls, data: object) -> ReviewConfig:
        """Validates inventory data; bad input raises ConfigError naming each field."""
        try:
            return cls.model_validate(data if data is not None else {})
        except ValidationError as exc:
            problems = "; ".join(
                f"log_review.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(problems) from None
