"""tasks.tunnels and tasks.anthropic_client against the sandbox, through the real SDK."""

from __future__ import annotations

import pytest

from core.errors import ConfigError, CredentialsError, StepFailed, TransientError
from core.redact import fingerprint
from tasks import tunnels
from tasks.anthropic_client import build_client
from tests.plugins.anthropic_sandbox import make_ca, wif_client

# ------------------------------------------------------------------- client


def test_missing_bearer_env_names_the_variable(monkeypatch):
    monkeypatch.delenv("MCP_IR_NO_SUCH_TOKEN", raising=False)
    with pytest.raises(CredentialsError) as info:
        build_client("http://127.0.0.1:1", bearer_env="MCP_IR_NO_SUCH_TOKEN")
    assert "MCP_IR_NO_SUCH_TOKEN" in info.value.detail


def test_credentials_must_be_exactly_one_source():
    with pytest.raises(CredentialsError, match="exactly one"):
        build_client("http://127.0.0.1:1")


def test_bad_workload_identity_config_names_the_field(tmp_path):
    token_file = tmp_path / "jwt"
    token_file.write_text("a.b.c")
    with pytest.raises(ConfigError, match="workload_identity.federation_rule_id"):
        build_client(
            "http://127.0.0.1:1",
            workload_identity={
                "identity_token_file": str(token_file),
                "federation_rule_id": "rule-1",
                "organization_id": "org",
            },
        )
    with pytest.raises(CredentialsError, match="identity_token_file"):
        build_client(
            "http://127.0.0.1:1",
            workload_identity={
                "identity_token_file": str(tmp_path / "missing"),
                "federation_rule_id": "fdrl_x",
                "organization_id": "org",
            },
        )


def test_base_url_from_environment(anthropic_sandbox, monkeypatch):
    anthropic_sandbox.reset()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_sandbox.url)
    monkeypatch.setenv("MCP_IR_T", anthropic_sandbox.token)
    client = build_client(None, bearer_env="MCP_IR_T")
    assert tunnels.find_tunnels(client, None) == []
    assert len(anthropic_sandbox.calls()) == 1


def test_workload_identity_exchange_then_tunnels_call(anthropic_sandbox, tmp_path):
    anthropic_sandbox.reset()
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJl"
    anthropic_sandbox.seed(
        wif={
            "assertions": [jwt],
            "federation_rule_id": "fdrl_ir",
            "organization_id": "11111111-2222-4333-8444-555555555555",
            "service_account_id": "svac_ir",
            "workspace_ids": ["wrkspc_ir"],
        }
    )
    client = wif_client(
        anthropic_sandbox.url,
        tmp_path / "token",
        jwt + "\n",
        organization_id="11111111-2222-4333-8444-555555555555",
        service_account_id="svac_ir",
        workspace_id="wrkspc_ir",
    )
    created = tunnels.create_tunnel(client, "wif-made")
    assert tunnels.get_tunnel(client, created.id) == created
    calls = anthropic_sandbox.calls()
    assert [c["path"] for c in calls] == [
        "/v1/oauth/token",
        "/v1/tunnels",
        f"/v1/tunnels/{created.id}",
    ]
    exchange = calls[0]
    assert exchange["body"]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert exchange["body"]["assertion"] == fingerprint(jwt)
    assert exchange["body"]["federation_rule_id"] == "fdrl_ir"
    assert exchange["body"]["service_account_id"] == "svac_ir"
    assert exchange["body"]["workspace_id"] == "wrkspc_ir"
    assert exchange["response"]["token_type"] == "Bearer"


def test_workload_identity_unknown_assertion_is_refused(anthropic_sandbox, tmp_path):
    anthropic_sandbox.reset()
    anthropic_sandbox.seed(wif={"assertions": ["a.b.c"], "federation_rule_id": "fdrl_ir"})
    client = wif_client(anthropic_sandbox.url, tmp_path / "token", "x.y.z")
    with pytest.raises(CredentialsError, match="HTTP 401") as info:
        tunnels.find_tunnels(client, None)
    assert not info.value.retryable
    paths = {c["path"] for c in anthropic_sandbox.calls()}
    assert paths == {"/v1/oauth/token"}  # the tunnels request was never sent


# ------------------------------------------------------------------ tunnels


def test_secret_wrapper_masks_the_token(anthropic_sandbox, anthropic_client):
    seeded = anthropic_sandbox.seed(tunnels=[{"display_name": "s"}])["tunnels"][0]
    token = tunnels.reveal_token(anthropic_client, seeded["id"])
    assert token.token.get_secret_value() == seeded["tunnel_token"]
    assert seeded["tunnel_token"] not in repr(token)
    assert seeded["tunnel_token"] not in str(token.token)
    assert token.fingerprint == fingerprint(seeded["tunnel_token"]) in repr(token)
    assert token.evidence() == {
        "tunnel_id": seeded["id"],
        "token_id": seeded["token_id"],
        "token": fingerprint(seeded["tunnel_token"]),
    }


def test_find_tunnels_pages_through_everything(anthropic_sandbox, anthropic_client):
    anthropic_sandbox.seed(
        tunnels=[{"display_name": "ir-42" if i % 3 == 0 else f"other-{i}"} for i in range(250)]
    )
    found = tunnels.find_tunnels(anthropic_client, "ir-42")
    assert len(found) == 84
    list_calls = [c for c in anthropic_sandbox.calls() if c["path"] == "/v1/tunnels"]
    assert len(list_calls) == 3  # 250 tunnels at 100 per page
    assert all(t.display_name == "ir-42" for t in found)


def test_find_tunnels_include_archived(anthropic_sandbox, anthropic_client):
    anthropic_sandbox.seed(tunnels=[{"display_name": "a", "archived": True}, {"display_name": "a"}])
    assert len(tunnels.find_tunnels(anthropic_client, "a")) == 2
    live = tunnels.find_tunnels(anthropic_client, "a", include_archived=False)
    assert len(live) == 1 and not live[0].archived


def test_archive_tunnel_is_idempotent_and_verified(anthropic_sandbox, anthropic_client):
    seeded = anthropic_sandbox.seed(tunnels=[{"display_name": "x"}])["tunnels"][0]
    first = tunnels.archive_tunnel(anthropic_client, seeded["id"])
    second = tunnels.archive_tunnel(anthropic_client, seeded["id"])
    assert first.archived and first == second
    certs = tunnels.list_certificates(anthropic_client, seeded["id"], include_archived=True)
    assert certs and all(c.archived for c in certs)
    assert anthropic_sandbox.connect(seeded["tunnel_token"]) == 403


def test_unknown_tunnel_raises_step_failed_naming_it(anthropic_client):
    with pytest.raises(tunnels.TunnelNotFound) as info:
        tunnels.archive_tunnel(anthropic_client, "tnl_missing")
    assert isinstance(info.value, StepFailed)
    assert "tnl_missing" in info.value.detail
    assert info.value.status == 404 and not info.value.retryable


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda client: tunnels.get_tunnel(client, "not-a-tunnel"), "tunnel_id"),
        (lambda client: tunnels.create_tunnel(client, ""), "display_name"),
    ],
    ids=["malformed-tunnel-id", "empty-display-name"],
)
def test_bad_input_fails_before_any_call(anthropic_sandbox, anthropic_client, call, field):
    with pytest.raises(StepFailed, match=field):
        call(anthropic_client)
    assert anthropic_sandbox.calls() == []


def test_server_errors_are_transient(anthropic_sandbox, anthropic_client):
    seeded = anthropic_sandbox.seed(tunnels=[{"display_name": "x"}])["tunnels"][0]
    anthropic_sandbox.fault(f"/v1/tunnels/{seeded['id']}", 500, count=3)
    with pytest.raises(TransientError) as info:
        tunnels.get_tunnel(anthropic_client, seeded["id"])
    assert info.value.retryable and seeded["id"] in info.value.detail
    assert len(anthropic_sandbox.calls()) == 3  # one try + the SDK's two retries
    assert tunnels.get_tunnel(anthropic_client, seeded["id"]).id == seeded["id"]


def test_rate_limit_is_transient(anthropic_sandbox, anthropic_client):
    anthropic_sandbox.fault("/v1/tunnels", 429, count=3, method="GET")
    with pytest.raises(TransientError, match="rate_limit_error"):
        tunnels.find_tunnels(anthropic_client, None)


def test_connection_failure_is_transient(monkeypatch):
    monkeypatch.setenv("MCP_IR_T", "x")
    client = build_client("http://127.0.0.1:9", bearer_env="MCP_IR_T", max_retries=0, timeout=2)
    with pytest.raises(TransientError, match="tnl_abc"):
        tunnels.get_tunnel(client, "tnl_abc")


def test_create_is_sent_once_even_on_server_error(anthropic_sandbox, anthropic_client):
    anthropic_sandbox.fault("/v1/tunnels", 500, count=1, method="POST")
    with pytest.raises(TransientError):
        tunnels.create_tunnel(anthropic_client, "incident-7")
    posts = [c for c in anthropic_sandbox.calls() if c["method"] == "POST"]
    assert len(posts) == 1  # no SDK retry: a retried create makes a second tunnel
    record = tunnels.create_tunnel(anthropic_client, "incident-7")
    assert tunnels.find_tunnels(anthropic_client, "incident-7") == [record]


def test_create_tunnel_cap_is_a_step_failure(anthropic_sandbox, anthropic_client):
    anthropic_sandbox.seed(tunnels=[{"display_name": f"t{i}"} for i in range(10)])
    with pytest.raises(tunnels.TunnelApiError) as info:
        tunnels.create_tunnel(anthropic_client, "one-too-many")
    assert info.value.status == 400 and "limit" in info.value.detail.lower()


def test_rotate_token_changes_token_and_id(anthropic_sandbox, anthropic_client):
    seeded = anthropic_sandbox.seed(tunnels=[{"display_name": "r"}])["tunnels"][0]
    before = tunnels.reveal_token(anthropic_client, seeded["id"])
    after = tunnels.rotate_token(anthropic_client, seeded["id"], "suspected leak")
    assert after.token_id != before.token_id and after.token != before.token
    assert anthropic_sandbox.connect(before.token.get_secret_value()) == 403
    assert anthropic_sandbox.connect(after.token.get_secret_value()) == 200
    rotate_call = anthropic_sandbox.calls()[-1]
    assert rotate_call["body"] == {"reason": "suspected leak"}
    assert rotate_call["response"]["tunnel_token"] == after.fingerprint


def test_register_ca_is_idempotent(anthropic_sandbox, anthropic_client):
    tunnel = tunnels.create_tunnel(anthropic_client, "ca")
    pem = make_ca()
    first = tunnels.register_ca(anthropic_client, tunnel.id, pem)
    again = tunnels.register_ca(anthropic_client, tunnel.id, pem)
    assert first == again
    assert first.fingerprint == tunnels.pem_fingerprint(pem)
    assert len(tunnels.list_certificates(anthropic_client, tunnel.id)) == 1


def test_register_ca_rejection_names_the_tunnel(anthropic_client):
    tunnel = tunnels.create_tunnel(anthropic_client, "bad")
    with pytest.raises(tunnels.TunnelApiError) as info:
        tunnels.register_ca(anthropic_client, tunnel.id, make_ca(ca=False))
    assert tunnel.id in info.value.detail and "CA:TRUE" in info.value.detail


def test_register_ca_refused_by_fault(anthropic_sandbox, anthropic_client):
    tunnel = tunnels.create_tunnel(anthropic_client, "refused")
    anthropic_sandbox.fault(
        f"/v1/tunnels/{tunnel.id}/certificates", 403, method="POST", message="not allowed"
    )
    with pytest.raises(tunnels.TunnelApiError) as info:
        tunnels.register_ca(anthropic_client, tunnel.id, make_ca())
    assert info.value.error_type == "permission_error"


def test_archive_certificate_last_one_stops_traffic(anthropic_sandbox, anthropic_client):
    seeded = anthropic_sandbox.seed(tunnels=[{"display_name": "c"}])["tunnels"][0]
    (cert,) = tunnels.list_certificates(anthropic_client, seeded["id"])
    archived = tunnels.archive_certificate(anthropic_client, seeded["id"], cert.id)
    assert archived.archived and archived.id == cert.id
    assert tunnels.archive_certificate(anthropic_client, seeded["id"], cert.id) == archived
    assert anthropic_sandbox.connect(seeded["tunnel_token"]) == 403


def test_pem_fingerprint_rejects_non_pem():
    with pytest.raises(tunnels.InvalidPem, match="pem") as info:
        tunnels.pem_fingerprint("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    assert isinstance(info.value, StepFailed) and isinstance(info.value, ValueError)
    with pytest.raises(ValueError):
        tunnels.register_ca(None, "tnl_x", "garbage")  # fails before using the client
