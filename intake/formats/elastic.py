"""Elastic: Kibana alerting rule actions (Webhook connector) and Watcher webhook actions.

Neither sends a fixed body: both render a Mustache template the user writes. This
format reads the templates docs/intake.md gives, built only from Elastic's
documented variables, and tolerates any extra keys:

- Kibana rule action (Kibana Guide, "Rule action variables")::

    {"rule": {"id": "{{rule.id}}", "name": "{{rule.name}}", "url": "{{rule.url}}",
              "tags": "{{rule.tags}}", "spaceId": "{{rule.spaceId}}"},
     "alert": {"id": "{{alert.id}}", "uuid": "{{alert.uuid}}",
               "actionGroup": "{{alert.actionGroup}}",
               "actionGroupName": "{{alert.actionGroupName}}",
               "flapping": "{{alert.flapping}}"},
     "context": {"message": "{{context.message}}", "reason": "{{context.reason}}"},
     "severity": "<optional, per rule>", "date": "{{date}}",
     "kibanaBaseUrl": "{{kibanaBaseUrl}}"}

  ``alert.actionGroup`` ``recovered`` (the action group Kibana runs when an alert
  recovers) resolves; any other group fires. Dedup id: ``rule.id`` + ``alert.id``.
  Elastic Security detection rules may add ``context.rule.severity``.
- Watcher (Elasticsearch Guide, "Webhook action" and the ``ctx`` watch execution
  context)::

    {"watch_id": "{{ctx.watch_id}}", "execution_id": "{{ctx.id}}",
     "execution_time": "{{ctx.execution_time}}",
     "triggered_time": "{{ctx.trigger.triggered_time}}",
     "metadata": {{#toJson}}ctx.metadata{{/toJson}},
     "hits": "{{ctx.payload.hits.total}}"}

  A watch has no recovery notification: always ``firing``. Dedup id: ``watch_id``
  (each execution of the same watch within the dedup window is a duplicate).
  Severity from ``metadata.severity`` when the watch sets it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from intake.formats._common import parse_time, text, validate
from intake.formats.alertmanager import LABEL_SEVERITIES
from intake.models import NormalizedAlert

RECOVERED = "recovered"


class KibanaRule(BaseModel):
    """``rule``."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=200)
    name: str | None = None
    url: str | None = None


class KibanaAlert(BaseModel):
    """``alert``."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=500)
    uuid: str | None = None
    actionGroup: str | None = None  # noqa: N815 (Kibana's variable names)
    actionGroupName: str | None = None  # noqa: N815


class KibanaAction(BaseModel):
    """The rule-action body."""

    model_config = ConfigDict(extra="allow")

    rule: KibanaRule
    alert: KibanaAlert
    context: dict[str, Any] | None = None
    severity: str | None = None
    date: str | None = None


class WatcherAction(BaseModel):
    """The Watcher webhook body."""

    model_config = ConfigDict(extra="allow")

    watch_id: str = Field(min_length=1, max_length=500)
    execution_id: str | None = None
    execution_time: str | None = None
    triggered_time: str | None = None
    metadata: dict[str, Any] | None = None


def _kibana(payload: dict[str, Any]) -> NormalizedAlert:
    hook = validate(KibanaAction, payload)
    context = hook.context or {}
    rule_ctx = context.get("rule") if isinstance(context.get("rule"), dict) else {}
    vendor = text(hook.severity) or text(rule_ctx.get("severity"))
    group = (text(hook.alert.actionGroup) or "").lower()
    return NormalizedAlert(
        format="elastic",
        alert_id=f"kibana:{hook.rule.id}:{hook.alert.id}",
        title=text(hook.rule.name) or f"Kibana rule {hook.rule.id}",
        severity=LABEL_SEVERITIES.get((vendor or "").lower()),
        vendor_severity=vendor,
        description=text(context.get("message"), 10_000) or text(context.get("reason"), 10_000),
        occurred_at=parse_time(hook.date, "date"),
        link=text(hook.rule.url, 2000),
        status="resolved" if group == RECOVERED else "firing",
        event=text(hook.alert.actionGroup, 100),
        raw=payload,
    )


def _watcher(payload: dict[str, Any]) -> NormalizedAlert:
    hook = validate(WatcherAction, payload)
    metadata = hook.metadata or {}
    vendor = text(metadata.get("severity"))
    return NormalizedAlert(
        format="elastic",
        alert_id=f"watch:{hook.watch_id}",
        title=text(metadata.get("name")) or text(metadata.get("title")) or hook.watch_id[:500],
        severity=LABEL_SEVERITIES.get((vendor or "").lower()),
        vendor_severity=vendor,
        description=text(metadata.get("description"), 10_000),
        occurred_at=parse_time(hook.triggered_time or hook.execution_time, "triggered_time"),
        status="firing",
        event="watch",
        raw=payload,
    )


def parse(payload: dict[str, Any]) -> NormalizedAlert:
    """Parses a Kibana rule action (``rule`` + ``alert``) or a Watcher action
    (``watch_id``).

    Raises:
        PayloadSchemaError: neither shape, or a field of the chosen shape is missing
            or mistyped.
    """
    if "watch_id" in payload and "rule" not in payload:
        return _watcher(payload)
    return _kibana(payload)
