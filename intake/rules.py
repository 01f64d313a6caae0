"""Inventory rules: normalized alert -> target, severity, suspected window, containment.

Pure functions, so mapping is decided before anything is written and can be tested
without a server.
"""

from __future__ import annotations

from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from intake.config import Rule, SourceConfig
from intake.errors import UnmappedAlert
from intake.formats.fields import MISSING, lookup
from intake.models import MappedAlert, NormalizedAlert, Severity


def field_value(alert: NormalizedAlert, name: str) -> Any:
    """The value a rule's ``match`` key refers to, or a sentinel when absent.

    ``raw.a.b`` walks the payload's objects (and list indexes given as digits).
    """
    if not name.startswith("raw."):
        return getattr(alert, name, MISSING)
    return lookup(alert.raw, name[4:])


def _as_text(value: Any) -> str | None:
    if value is MISSING or value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def rule_matches(rule: Rule, alert: NormalizedAlert) -> bool:
    """True when every glob of ``rule.match`` matches its field (case-sensitive)."""
    for name, pattern in rule.match.items():
        value = _as_text(field_value(alert, name))
        if value is None or not fnmatchcase(value, pattern):
            return False
    return True


def map_alert(
    alert: NormalizedAlert,
    source: SourceConfig,
    *,
    auto_contain_at: Severity,
    received_at: datetime,
) -> MappedAlert:
    """Applies the source's rules, first match wins.

    The window runs from the sender's ``window_start`` (else the alert time minus
    ``window_before``) to the sender's ``window_end`` (else the later of the alert time
    plus ``window_after`` and the moment it was received), so it always covers "now".

    Raises:
        UnmappedAlert: no rule matches, or neither the rule nor the alert gives a
            severity, or the window cannot be computed. The caller dead-letters it.
    """
    for index, rule in enumerate(source.rules):
        if not rule_matches(rule, alert):
            continue
        severity = rule.severity or alert.severity
        if severity is None:
            raise UnmappedAlert(
                f"rule {index} matched but neither it nor the alert gives a severity"
            )
        moment = alert.occurred_at or received_at
        try:
            start = alert.window_start or moment - rule.window_before
            end = alert.window_end or max(moment + rule.window_after, received_at)
        except OverflowError:
            raise UnmappedAlert(f"rule {index}: suspected window out of range") from None
        return MappedAlert(
            alert=alert,
            rule_index=index,
            target=rule.target,
            severity=severity,
            window_start=min(start, end),
            window_end=end,
            auto_contain=severity.at_least(auto_contain_at),
        )
    if not source.rules:
        raise UnmappedAlert("the source has no rules")
    raise UnmappedAlert(f"no rule matched (checked {len(source.rules)})")
