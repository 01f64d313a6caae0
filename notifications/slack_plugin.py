"""Slack as a notifier plugin (entry point ``slack`` of ``mcp_ir.notifiers``): its
inventory section (``notifiers.slack``, or the top-level ``slack:`` of older
inventories), the thread observer of a run, the notifier for callers outside a
run, and the drain of its outbox. People's ``slack_user_id`` and targets'
``slack_channel`` stay where operators already write them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

if TYPE_CHECKING:
    from core.redact import Redactor
    from notifications.base import Notifier, RecordFn
    from notifications.plugins import NotifierContext, Observer
    from runbook.settings import Settings


class SlackConfig(BaseModel):
    """``notifiers.slack``: the bot token (an environment variable or a Prefect
    Secret block), the signing secret for the interactions endpoint, the API root
    (the sandbox in tests) and the channel of targets without ``slack_channel``.
    ``receiver_key_file`` is the private SSH key with which the service that
    receives Slack's interaction requests countersigns each verified click (the
    proof a gate counts); ``receiver_public_key`` is its public half, which the flow
    and ``mcp-ir verify`` check those countersignatures against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_env: str | None = None
    token_block: str | None = None
    signing_secret_env: str | None = None
    base_url: str | None = None
    default_channel: str | None = None
    receiver_key_file: Path | None = None
    receiver_public_key: str | None = None

    @field_validator("receiver_public_key")
    @classmethod
    def _receiver_key(cls, line: str | None) -> str | None:
        from runbook.signing import normalize_key

        return None if line is None else normalize_key(line)

    @model_validator(mode="after")
    def _one_token_source(self) -> SlackConfig:
        if not (self.token_env or self.token_block):
            raise ValueError("set token_env (an environment variable) or token_block")
        return self


class SlackPlugin:
    """Posts each incident's thread to the target's channel, with approval buttons;
    every message goes through a durable outbox (``<evidence>/_slack``)."""

    name: ClassVar[str] = "slack"
    config_model: ClassVar[type[BaseModel]] = SlackConfig

    def build(self, config: SlackConfig, ctx: NotifierContext) -> Observer:
        """The run's thread: trail records become notifier calls."""
        from notifications.trail_observer import observe

        return observe(self, config, ctx)

    def notifier(
        self,
        config: SlackConfig,
        *,
        inventory: Any,
        target_name: str,
        record: RecordFn,
        state_dir: Path,
        redactor: Redactor,
    ) -> Notifier:
        """A :class:`~notifications.slack.SlackNotifier` for ``target_name``'s channel.

        Raises:
            ConfigError: no channel is known for the target.
            CredentialsError: the token's variable or Secret block is missing.
        """
        from notifications.slack import SlackNotifier, make_client, resolve_channel, resolve_token

        channel = resolve_channel(inventory, target_name)
        client = make_client(resolve_token(config), base_url=config.base_url)
        people = {
            name: p.slack_user_id
            for name, p in getattr(inventory, "people", {}).items()
            if getattr(p, "slack_user_id", None)
        }
        return SlackNotifier(
            client,
            channel=channel,
            state_dir=state_dir,
            record=record,
            redactor=redactor,
            slack_users=people,
        )

    def drain(
        self, config: SlackConfig, *, settings: Settings, timeout_s: float = 10.0
    ) -> dict[str, int]:
        """Delivers the undelivered messages of every incident whose run has ended;
        each late delivery is recorded in its incident's trail."""
        from core.redact import Redactor
        from notifications.plugins import state_dir
        from notifications.slack import SlackNotifier, make_client, resolve_token
        from notifications.trail_observer import adopt_ended, recorder_for

        where = state_dir(settings.evidence_dir, self.name)
        if not where.exists():
            return {"incidents": 0, "left": 0}
        # Queued messages carry their channel and were redacted when queued.
        notifier = SlackNotifier(
            make_client(resolve_token(config), base_url=config.base_url),
            channel=config.default_channel or "",
            state_dir=where,
            record=recorder_for(settings),
            redactor=Redactor(),
            background=False,
        )
        try:
            ended = adopt_ended(notifier, settings.evidence_dir)
            notifier.flush(timeout_s)
            left = len(notifier.outbox.pending(ended))
        finally:
            notifier.close()
        return {"incidents": len(ended), "left": left}


plugin = SlackPlugin()
