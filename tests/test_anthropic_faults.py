"""Lost answers, long ``retry-after`` and every SDK error class, through the real
``anthropic`` SDK against the sandbox API.

The sandbox can fail a request AFTER applying it (``after: true``: the tunnel or
certificate is made, then the answer is a 5xx; ``drop: true``: the connection
breaks mid-answer). Non-idempotent calls must then take no second slot: they are
sent once, and what exists is looked at before anything is tried again.
"""

from __future__ import annotations

import time

import pytest

from core import retry
from core.errors import CredentialsError, StepFailed, TransientError
from tasks import sessions as S
from tasks import tunnels
from tasks.anthropic_client import AnthropicConflict
from tests.plugins.anthropic_sandbox import make_ca, wif_client


def _posts(sandbox, suffix: str) -> list[dict]:
    return [c for c in sandbox.calls() if c["method"] == "POST" and c["path"].endswith(suffix)]


@pytest.mark.parametrize(
    "mode", [{"status": 500, "after": True}, {"status": 599, "drop": True, "after": True}]
)
def test_register_ca_answer_lost_after_apply_takes_no_second_slot(
    anthropic_sandbox, anthropic_client, mode
):
    tunnel = tunnels.create_tunnel(anthropic_client, "lost-cert")
    anthropic_sandbox.fault(f"/v1/tunnels/{tunnel.id}/certificates", method="POST", **mode)
    pem = make_ca()
    cert = tunnels.register_ca(anthropic_client, tunnel.id, pem)
    assert cert.fingerprint == tunnels.pem_fingerprint(pem)
    posts = _posts(anthropic_sandbox, "/certificates")
    assert len(posts) == 1  # sent once: the SDK's default 2 retries would take both slots
    assert posts[0]["status"] in (500, 599)
    assert [c.id for c in tunnels.list_certificates(anthropic_client, tunnel.id)] == [cert.id]
    # A re-run (the runner's retry) finds it and sends nothing.
    assert tunnels.register_ca(anthropic_client, tunnel.id, pem) == cert
    assert len(_posts(anthropic_sandbox, "/certificates")) == 1


def test_register_ca_lost_before_apply_is_transient_and_sent_once(
    anthropic_sandbox, anthropic_client
):
    tunnel = tunnels.create_tunnel(anthropic_client, "cert-5xx")
    anthropic_sandbox.fault(f"/v1/tunnels/{tunnel.id}/certificates", 503, method="POST")
    with pytest.raises(TransientError) as info:
        tunnels.register_ca(anthropic_client, tunnel.id, make_ca())
    assert tunnel.id in info.value.detail and info.value.request_id.startswith("req_")
    assert info.value.request_id in info.value.detail
    assert len(_posts(anthropic_sandbox, "/certificates")) == 1
    assert tunnels.list_certificates(anthropic_client, tunnel.id) == []


@pytest.mark.parametrize(
    "mode", [{"status": 502, "after": True}, {"status": 599, "drop": True, "after": True}]
)
def test_create_tunnel_answer_lost_after_apply_returns_the_one_made(
    anthropic_sandbox, anthropic_client, mode
):
    anthropic_sandbox.fault("/v1/tunnels", method="POST", **mode)
    made = tunnels.create_tunnel(anthropic_client, "INC-lost-answer")
    assert len(_posts(anthropic_sandbox, "/v1/tunnels")) == 1
    assert tunnels.find_tunnels(anthropic_client, "INC-lost-answer") == [made]


def test_dropped_connection_before_apply_is_transient(anthropic_sandbox, anthropic_client):
    anthropic_sandbox.fault("/v1/tunnels", 599, method="POST", drop=True)
    with pytest.raises(TransientError, match="it may have been applied"):
        tunnels.create_tunnel(anthropic_client, "INC-dropped")
    assert tunnels.find_tunnels(anthropic_client, "INC-dropped") == []


def test_retry_after_beyond_the_deadline_fails_now_instead_of_stalling(
    anthropic_sandbox, anthropic_client
):
    # The SDK would sleep an hour before its next try (it obeys any value).
    anthropic_sandbox.fault(
        "/v1/tunnels", 429, count=3, method="GET", retry_after=3600, retry_after_ms=None
    )
    with retry.deadline(time.monotonic() + 120), pytest.raises(TransientError) as info:
        tunnels.find_tunnels(anthropic_client, None)
    assert len(anthropic_sandbox.calls()) == 1  # no second try was waited for
    assert info.value.retry_after == 3600
    assert "rate_limit_error" in info.value.detail and "not waiting" in info.value.detail
    assert info.value.request_id and info.value.request_id in info.value.detail
    # The runner's policy then fails the step rather than wait past its deadline.
    wait, why = retry.RetryPolicy().wait_before(1, info.value, 120)
    assert wait < 0 and "beyond the step's remaining deadline" in why


def test_retry_after_within_the_deadline_is_still_obeyed_by_the_sdk(
    anthropic_sandbox, anthropic_client
):
    anthropic_sandbox.fault("/v1/tunnels", 503, count=1, method="GET", retry_after_ms=20)
    with retry.deadline(time.monotonic() + 120):
        assert tunnels.find_tunnels(anthropic_client, None) == []
    assert [c["status"] for c in anthropic_sandbox.calls()] == [503, 200]


def test_errors_keep_the_request_id(anthropic_sandbox, anthropic_client):
    with pytest.raises(tunnels.TunnelNotFound) as info:
        tunnels.get_tunnel(anthropic_client, "tnl_missing")
    (call,) = anthropic_sandbox.calls()
    assert info.value.request_id == call["response"]["request_id"]
    assert f"(request {info.value.request_id})" in info.value.detail
    assert isinstance(info.value, StepFailed) and info.value.operation == "tunnels.get"


@pytest.mark.parametrize("status", [409, 412])
def test_agent_version_conflict_is_handled_for_409_and_412(
    anthropic_sandbox, anthropic_client, status
):
    agent = {
        "name": "a",
        "mcp_servers": [{"type": "url", "name": "t", "url": "https://jira.x.tunnel.example/mcp"}],
        "tools": [{"type": "mcp_toolset", "mcp_server_name": "t"}],
    }
    (seeded,) = anthropic_sandbox.seed(agents=[agent])["agents"]
    anthropic_sandbox.fault(f"/v1/agents/{seeded['id']}", status, method="POST")
    result = S.detach_agent(anthropic_client, seeded["id"], "x.tunnel.example")
    assert result.changed and result.after_count == 0
    assert [c["status"] for c in _posts(anthropic_sandbox, seeded["id"])] == [status, 200]


def test_agent_version_conflict_that_persists_is_transient(anthropic_sandbox, anthropic_client):
    agent = {
        "name": "a",
        "mcp_servers": [{"type": "url", "name": "t", "url": "https://x.tunnel.example/mcp"}],
        "tools": [{"type": "mcp_toolset", "mcp_server_name": "t"}],
    }
    (seeded,) = anthropic_sandbox.seed(agents=[agent])["agents"]
    anthropic_sandbox.fault(f"/v1/agents/{seeded['id']}", 412, count=5, method="POST")
    with pytest.raises(TransientError, match="version kept changing"):
        S.detach_agent(anthropic_client, seeded["id"], "x.tunnel.example")
    assert isinstance(
        AnthropicConflict("agents.detach", "x", status=412, error_type="e"), StepFailed
    )


def test_vanished_identity_token_file_is_a_retryable_credentials_error(anthropic_sandbox, tmp_path):
    anthropic_sandbox.reset()
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJl"
    anthropic_sandbox.seed(wif={"assertions": [jwt], "federation_rule_id": "fdrl_ir"})
    token_file = tmp_path / "token"
    client = wif_client(anthropic_sandbox.url, token_file, jwt)
    token_file.unlink()  # the projected token is gone when the first call is made
    with pytest.raises(CredentialsError) as info:
        tunnels.find_tunnels(client, None)
    assert str(token_file) in info.value.detail and "tunnels.find" in info.value.detail
    assert info.value.retryable  # a projected token being replaced reappears
    assert anthropic_sandbox.calls() == []  # nothing was sent


def test_unknown_fault_flags_are_refused_naming_the_field(anthropic_sandbox):
    import httpx

    response = httpx.post(
        anthropic_sandbox.url + "/_sandbox/faults",
        json={"path": "/v1/tunnels", "status": 500, "after": "yes"},
        timeout=10,
    )
    assert response.status_code == 400 and "faults[0].after" in response.text
