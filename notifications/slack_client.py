"""Slack settings resolved to what the client needs: the bot token (environment
variable or Prefect Secret block), the signing secret, the channel of a target,
and the slack-sdk ``WebClient`` with its retry handlers."""

from __future__ import annotations

import os
from typing import Any

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from core.errors import ConfigError, CredentialsError, UnknownTargetError

SLACK_API_URL = "https://slack.com/api/"


def resolve_token(slack_cfg: Any) -> str:
    """The bot token, from the Prefect Secret block ``token_block`` or the
    environment variable named by ``token_env`` (never from the inventory itself).

    Raises:
        CredentialsError: naming the field, when the source is missing or empty.
    """
    if getattr(slack_cfg, "token_block", None):
        from prefect.blocks.system import Secret

        name = slack_cfg.token_block
        try:
            value = Secret.load(name).get()
        except ValueError as exc:
            raise CredentialsError(
                f"slack.token_block: cannot load Prefect Secret block {name!r}: {exc}"
            ) from None
        if not isinstance(value, str) or not value.strip():
            raise CredentialsError(f"slack.token_block: Secret block {name!r} is empty")
        return value.strip()
    env = getattr(slack_cfg, "token_env", None)
    if not env:
        raise CredentialsError("slack: set token_env (an environment variable) or token_block")
    value = os.environ.get(env, "").strip()
    if not value:
        raise CredentialsError(f"slack.token_env: environment variable {env} is not set or empty")
    return value


def resolve_signing_secret(slack_cfg: Any) -> str:
    """The signing secret from the environment variable ``signing_secret_env``.

    Raises:
        CredentialsError: naming the field when it is not configured or empty.
    """
    env = getattr(slack_cfg, "signing_secret_env", None)
    if not env:
        raise CredentialsError("slack.signing_secret_env: required for the interactions endpoint")
    value = os.environ.get(env, "").strip()
    if not value:
        raise CredentialsError(
            f"slack.signing_secret_env: environment variable {env} is not set or empty"
        )
    return value


def resolve_channel(inventory: Any, target_name: str) -> str:
    """The target's ``slack_channel``, else ``slack.default_channel``.

    Raises:
        UnknownTargetError: the target is not in the inventory.
        ConfigError: neither field is set.
    """
    targets = getattr(inventory, "targets", {})
    if target_name not in targets:
        raise UnknownTargetError(f"unknown target {target_name!r}")
    channel = getattr(targets[target_name], "slack_channel", None)
    from notifications.plugins import config_of

    channel = channel or getattr(config_of(inventory, "slack"), "default_channel", None)
    if not channel:
        raise ConfigError(
            f"target '{target_name}': field 'slack_channel': not set, and "
            "slack.default_channel is empty"
        )
    return str(channel)


def make_client(token: str, *, base_url: str | None = None, timeout: int = 10) -> WebClient:
    """A WebClient with slack-sdk's retry handlers: 429 (honours Retry-After),
    connection errors and 500/503, each retried a bounded number of times."""
    return WebClient(
        token=token,
        base_url=base_url or SLACK_API_URL,
        timeout=timeout,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=2),
            ConnectionErrorRetryHandler(max_retry_count=1),
            ServerErrorRetryHandler(max_retry_count=1),
        ],
    )
