"""The Slack Web API sandbox, served over HTTP for the real slack-sdk, and an
inventory wired to it (token and signing secret in environment variables)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.serve import ServerHandle, serve_in_thread
from sandbox.slack_api import BOT_USER_ID, DEFAULT_TOKEN, SlackSandbox, create_app

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # noqa: S105 (test signing secret)
USERS = {"U0ALICE": "alice", "U0BOB": "bob", "U0CAROL": "carol", "U0DAVE": "dave"}
STRANGER = "U0MALLORY"  # in the workspace, not in the inventory


@dataclass
class SlackServer:
    """A running sandbox: ``api_url`` is the slack-sdk ``base_url``."""

    handle: ServerHandle
    state: SlackSandbox
    token: str = DEFAULT_TOKEN

    @property
    def url(self) -> str:
        return self.handle.url

    @property
    def api_url(self) -> str:
        return self.handle.url + "/api/"


def _workspace(state: SlackSandbox) -> None:
    state.add_channel("C0INCIDENTS", "incidents", (BOT_USER_ID,))
    state.add_channel("C0PRODEU", "prod-eu-incidents", (BOT_USER_ID,))
    for uid, name in USERS.items():
        state.add_user(uid, name)
    state.add_user(STRANGER, "mallory")


@pytest.fixture(scope="session")
def slack_server() -> Iterator[SlackServer]:
    """One sandbox for the session; use ``slack`` in tests (it resets state)."""
    state = SlackSandbox()
    _workspace(state)
    handle = serve_in_thread(create_app(state))
    yield SlackServer(handle=handle, state=state)
    handle.stop()


@pytest.fixture
def slack(slack_server: SlackServer) -> SlackServer:
    """The session sandbox with no messages, no received requests and no faults."""
    slack_server.state.reset()
    return slack_server


def write_slack_inventory(directory: Path, api_url: str, *, slack: bool = True) -> Path:
    """An inventory with people, groups, a Slack section pointing at ``api_url`` and
    one compose target posting to C0PRODEU."""
    from sandbox.keys import slack_receiver_key

    receiver_file, receiver_public = slack_receiver_key(directory / "keys")
    slack_section = (
        textwrap.dedent(
            f"""\
            slack:
              token_env: SLACK_BOT_TOKEN
              signing_secret_env: SLACK_SIGNING_SECRET
              base_url: {api_url}
              default_channel: C0INCIDENTS
              receiver_key_file: {receiver_file}
              receiver_public_key: {receiver_public}
            """
        )
        if slack
        else ""
    )
    text = (
        textwrap.dedent(
            """\
            people:
              alice: {slack_user_id: U0ALICE, email: alice@example.com}
              bob: {slack_user_id: U0BOB}
              carol: {slack_user_id: U0CAROL}
              dave: {slack_user_id: U0DAVE}
              erin: {email: erin@example.com}
            groups:
              oncall: [alice, bob, carol]
              security-leads: [dave]
            """
        )
        + slack_section
        + textwrap.dedent(
            f"""\
            targets:
              prod-eu:
                kind: compose
                slack_channel: C0PRODEU
                compose: {{project: mcp, data_dir: {directory / "data"}}}
                tunnel: {{id: tnl_0123abc}}
                anthropic: {{credentials: {{bearer_env: ANTHROPIC_TEST_TOKEN}}}}
              staging:
                kind: compose
                compose: {{project: mcp-staging, data_dir: {directory / "data-staging"}}}
                tunnel: {{id: tnl_0456def}}
                anthropic: {{credentials: {{bearer_env: ANTHROPIC_TEST_TOKEN}}}}
            """
        )
    )
    path = directory / "inventory.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def slack_env(slack: SlackServer, monkeypatch: pytest.MonkeyPatch) -> SlackServer:
    """The sandbox plus SLACK_BOT_TOKEN / SLACK_SIGNING_SECRET in the environment."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", slack.token)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    return slack


SLACK_CHANNEL = "C0PRODEU"


@dataclass
class Interactions:
    """The interactions endpoint of ``notifications.slack_interactions`` serving
    ``settings`` (an inventory wired to the sandbox ``slack``), and ``message``: an
    approval request the notifier posted to :data:`SLACK_CHANNEL`, as Slack stores it."""

    slack: SlackServer
    settings: Any  # runbook.settings.Settings
    server: ServerHandle
    message: dict[str, Any]

    def click_body(self, user: str, action: str | None = None) -> bytes:
        """The form body Slack sends when ``user`` clicks ``action`` (default: approve)."""
        from notifications.slack import APPROVE_ACTION
        from sandbox.slack_api import block_actions_payload, encode_interaction

        payload = block_actions_payload(
            channel=SLACK_CHANNEL,
            message=self.message,
            user_id=user,
            action_id=action or APPROVE_ACTION,
        )
        return encode_interaction(payload)

    def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """POSTs ``body`` to /slack/interactions with ``headers`` (signed or not)."""
        return httpx.post(
            self.server.url + "/slack/interactions",
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
            timeout=10,
        )


def slack_settings(slack: SlackServer, directory: Path) -> Any:
    """Settings for an inventory in ``directory`` wired to ``slack``; evidence below it."""
    from runbook.settings import Settings

    return Settings(
        config_path=write_slack_inventory(directory, slack.api_url),
        evidence_dir=directory / "evidence",
    )


@contextmanager
def interactions(
    slack: SlackServer, directory: Path, *, incident: str, step: str, plan: str
) -> Iterator[Interactions]:
    """Serves the interactions endpoint for :func:`slack_settings` and posts, through
    the real notifier, the approval request for ``step`` of ``incident`` (plan
    ``plan``); the sandbox's received requests are cleared afterwards so a test sees
    only what the endpoint sends."""
    from core.redact import Redactor
    from notifications.slack import SlackNotifier, make_client
    from notifications.slack_interactions import create_app as create_interactions_app

    settings = slack_settings(slack, directory)
    notifier = SlackNotifier(
        make_client(slack.token, base_url=slack.api_url),
        channel=SLACK_CHANNEL,
        state_dir=directory / "state",
        record=lambda kind, data: None,
        redactor=Redactor(),
        background=False,
    )
    notifier.incident_opened(incident, "prod-eu", "critical", "manual", "alice", "breach-response")
    notifier.approval_requested(incident, step, plan, {"target": "prod-eu"}, "oncall", 2, [], 900)
    assert notifier.flush(10)
    notifier.close()
    slack.state.clear_received()
    message = slack.state.channel_messages(SLACK_CHANNEL)[1]
    handle = serve_in_thread(create_interactions_app(settings))
    try:
        yield Interactions(slack=slack, settings=settings, server=handle, message=message)
    finally:
        handle.stop()


@dataclass
class SlackSite:
    """A sandbox site (``tests.plugins.site``) whose inventory has a Slack section
    pointing at the sandbox, the site's target posting to :data:`SLACK_CHANNEL`."""

    site: Any
    slack: SlackServer
    channel: str = SLACK_CHANNEL

    def use_slack(self, *, token_block: str | None = None) -> None:
        """(Re)writes the inventory: the token from ``SLACK_BOT_TOKEN`` in the run's
        environment, or from the Prefect Secret block ``token_block`` (then the
        variable is removed from the run's environment)."""
        from sandbox.site import write_inventory

        slack_cfg: dict[str, Any] = {
            "signing_secret_env": "SLACK_SIGNING_SECRET",
            "base_url": self.slack.api_url,
            "default_channel": "C0INCIDENTS",
        }
        if token_block:
            slack_cfg["token_block"] = token_block
            self.site.env.pop("SLACK_BOT_TOKEN", None)
        else:
            slack_cfg["token_env"] = "SLACK_BOT_TOKEN"
            self.site.env["SLACK_BOT_TOKEN"] = self.slack.token
        self.site.env["SLACK_SIGNING_SECRET"] = SIGNING_SECRET
        target = {**self.site.site.target, "slack_channel": self.channel}
        write_inventory(self.site.inventory, {self.site.target: target}, slack=slack_cfg)


@pytest.fixture
def slack_site(site: Any, slack_env: SlackServer) -> SlackSite:
    """The ``site`` fixture wired to the Slack sandbox (token from the environment);
    the test process has the same variables (for the interactions endpoint)."""
    s = SlackSite(site=site, slack=slack_env)
    s.use_slack()
    return s
