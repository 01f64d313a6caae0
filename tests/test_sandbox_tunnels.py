"""The Anthropic API sandbox driven by the real SDK: auth, headers, Tunnels semantics
(FACTS §2), CA validation, WIF, the call log and fault injection."""

from __future__ import annotations

import base64
import json

import anthropic
import httpx
import pytest

from core.redact import fingerprint
from tests.plugins.anthropic_sandbox import make_ca


def _raw(sandbox, method: str, path: str, headers: dict[str, str], **kw) -> httpx.Response:
    return httpx.request(method, sandbox.url + path, headers=headers, timeout=10, **kw)


def _bearer(sandbox, *, version: str, beta: str) -> dict[str, str]:
    """Headers of a hand-made request: the sandbox's bearer token, ``anthropic-version``
    and ``anthropic-beta`` as given."""
    return {
        "authorization": f"Bearer {sandbox.token}",
        "anthropic-version": version,
        "anthropic-beta": beta,
    }


# ------------------------------------------------------------------ auth/headers


def test_wrong_bearer_token_is_401_with_real_error_body(anthropic_sandbox, anthropic_client):
    bad = anthropic.Anthropic(
        base_url=anthropic_sandbox.url,
        credentials=anthropic.StaticToken("sk-ant-oat01-not-issued"),
        max_retries=0,
    )
    with pytest.raises(anthropic.AuthenticationError) as info:
        bad.beta.tunnels.list()
    assert info.value.status_code == 401
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "authentication_error"
    assert info.value.response.headers["request-id"].startswith("req_")


def test_admin_api_key_is_not_accepted_for_tunnels(anthropic_sandbox, anthropic_client):
    # SDK 2.12 sends api_key as "Authorization: Bearer <key>"; the key shape gives it away.
    keyed = anthropic.Anthropic(
        base_url=anthropic_sandbox.url, api_key="sk-ant-admin01-" + "x" * 40, max_retries=0
    )
    with pytest.raises(anthropic.AuthenticationError) as info:
        keyed.beta.tunnels.create(display_name="x")
    assert "Admin API keys" in info.value.body["error"]["message"]
    assert anthropic_sandbox.state.tunnels == {}


def test_x_api_key_header_is_not_accepted(anthropic_sandbox, anthropic_client):
    headers = {
        "x-api-key": anthropic_sandbox.token,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "mcp-tunnels-2026-06-22",
    }
    response = _raw(anthropic_sandbox, "POST", "/v1/tunnels", headers, json={})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert anthropic_sandbox.state.tunnels == {}


def test_missing_tunnels_beta_is_400(anthropic_sandbox, anthropic_client):
    beta = "managed-agents-2026-04-01,oauth-2025-04-20"
    headers = _bearer(anthropic_sandbox, version="2023-06-01", beta=beta)
    response = _raw(anthropic_sandbox, "GET", "/v1/tunnels", headers)
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["type"] == "invalid_request_error"
    assert "mcp-tunnels-2026-06-22" in body["error"]["message"]


def test_beta_list_containing_the_tunnels_beta_is_accepted(anthropic_sandbox, anthropic_client):
    beta = "oauth-2025-04-20, mcp-tunnels-2026-06-22,other-beta"
    headers = _bearer(anthropic_sandbox, version="2026-10-21", beta=beta)
    response = _raw(anthropic_sandbox, "GET", "/v1/tunnels", headers)
    assert response.status_code == 200
    assert response.json() == {"data": [], "next_page": None}


def test_missing_anthropic_version_is_400(anthropic_sandbox, anthropic_client):
    headers = {
        "authorization": f"Bearer {anthropic_sandbox.token}",
        "anthropic-beta": "mcp-tunnels-2026-06-22",
    }
    response = _raw(anthropic_sandbox, "GET", "/v1/tunnels", headers)
    assert response.status_code == 400
    assert "anthropic-version" in response.json()["error"]["message"]


def test_sdk_sends_tunnels_beta_and_bearer(anthropic_sandbox, anthropic_client):
    anthropic_client.beta.tunnels.list()
    (call,) = anthropic_sandbox.calls()
    assert "mcp-tunnels-2026-06-22" in call["beta"]
    assert call["status"] == 200


# ---------------------------------------------------------------------- tunnels


def test_create_is_not_idempotent(anthropic_client):
    first = anthropic_client.beta.tunnels.create(display_name="same")
    second = anthropic_client.beta.tunnels.create(display_name="same")
    assert first.id != second.id and first.id.startswith("tnl_")
    assert first.domain != second.domain
    assert first.archived_at is None and first.type == "tunnel"


def test_tunnel_cap_is_ten_non_archived(anthropic_sandbox, anthropic_client):
    created = [anthropic_client.beta.tunnels.create(display_name=f"t{i}") for i in range(10)]
    with pytest.raises(anthropic.BadRequestError) as info:
        anthropic_client.beta.tunnels.create(display_name="eleventh")
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert "10" in info.value.body["error"]["message"]
    anthropic_client.beta.tunnels.archive(created[0].id)
    assert anthropic_client.beta.tunnels.create(display_name="eleventh").id.startswith("tnl_")


def test_list_pages_newest_first_and_hides_archived(anthropic_client):
    ids = [anthropic_client.beta.tunnels.create(display_name=f"p{i}").id for i in range(5)]
    anthropic_client.beta.tunnels.archive(ids[0])
    page = anthropic_client.beta.tunnels.list(limit=2)
    assert [t.id for t in page.data] == [ids[4], ids[3]]
    assert page.next_page
    every = [t.id for t in anthropic_client.beta.tunnels.list(limit=2)]
    assert every == [ids[4], ids[3], ids[2], ids[1]]
    with_archived = [
        t.id for t in anthropic_client.beta.tunnels.list(limit=2, include_archived=True)
    ]
    assert with_archived == list(reversed(ids))


def test_list_rejects_bad_limit_and_cursor(anthropic_client):
    with pytest.raises(anthropic.BadRequestError, match="limit"):
        anthropic_client.beta.tunnels.list(limit=0)
    with pytest.raises(anthropic.BadRequestError, match="page"):
        anthropic_client.beta.tunnels.list(page="garbage")


def test_unknown_ids_are_404(anthropic_client):
    with pytest.raises(anthropic.NotFoundError) as info:
        anthropic_client.beta.tunnels.retrieve("tnl_doesnotexist")
    assert info.value.body["error"]["type"] == "not_found_error"
    tunnel = anthropic_client.beta.tunnels.create(display_name="x")
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.beta.tunnels.certificates.archive("tcrt_nope", tunnel_id=tunnel.id)


def test_archive_is_idempotent_and_takes_certs_and_token(anthropic_sandbox, anthropic_client):
    seeded = anthropic_sandbox.seed(tunnels=[{"display_name": "live"}])["tunnels"][0]
    token = seeded["tunnel_token"]
    assert anthropic_sandbox.connect(token) == 200
    first = anthropic_client.beta.tunnels.archive(seeded["id"])
    assert first.archived_at is not None
    again = anthropic_client.beta.tunnels.archive(seeded["id"])
    assert again == first
    certs = list(
        anthropic_client.beta.tunnels.certificates.list(seeded["id"], include_archived=True)
    )
    assert certs and all(c.archived_at is not None for c in certs)
    assert anthropic_sandbox.connect(token) == 403


def test_reveal_and_rotate_token(anthropic_sandbox, anthropic_client):
    seeded = anthropic_sandbox.seed(tunnels=[{"display_name": "rot"}])["tunnels"][0]
    revealed = anthropic_client.beta.tunnels.reveal_token(seeded["id"])
    assert revealed.type == "tunnel_token"
    assert revealed.tunnel_token == seeded["tunnel_token"]
    assert revealed.tunnel_token.startswith("eyJ")
    decoded = json.loads(base64.b64decode(revealed.tunnel_token))
    assert set(decoded) == {"a", "t", "s"}
    rotated = anthropic_client.beta.tunnels.rotate_token(seeded["id"], reason="incident")
    assert rotated.id != revealed.id
    assert rotated.tunnel_token != revealed.tunnel_token
    assert anthropic_sandbox.connect(revealed.tunnel_token) == 403
    assert anthropic_sandbox.connect(rotated.tunnel_token) == 200
    assert anthropic_client.beta.tunnels.reveal_token(seeded["id"]).id == rotated.id


def test_new_tunnel_rejects_traffic_until_a_ca_is_added(anthropic_sandbox, anthropic_client):
    tunnel = anthropic_client.beta.tunnels.create(display_name="fresh")
    token = anthropic_client.beta.tunnels.reveal_token(tunnel.id).tunnel_token
    assert anthropic_sandbox.connect(token) == 403
    cert = anthropic_client.beta.tunnels.certificates.create(
        tunnel.id, ca_certificate_pem=make_ca()
    )
    assert anthropic_sandbox.connect(token) == 200
    anthropic_client.beta.tunnels.certificates.archive(cert.id, tunnel_id=tunnel.id)
    assert anthropic_sandbox.connect(token) == 403


# -------------------------------------------------------------- certificates


def test_certificate_record_fingerprint_and_expiry(anthropic_client):
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    pem = make_ca(key="rsa2048")
    tunnel = anthropic_client.beta.tunnels.create(display_name="c")
    cert = anthropic_client.beta.tunnels.certificates.create(tunnel.id, ca_certificate_pem=pem)
    parsed = x509.load_pem_x509_certificate(pem.encode())
    assert cert.fingerprint == hashlib.sha256(parsed.public_bytes(Encoding.DER)).hexdigest()
    assert cert.expires_at == parsed.not_valid_after_utc
    assert cert.id.startswith("tcrt_") and cert.tunnel_id == tunnel.id
    got = anthropic_client.beta.tunnels.certificates.retrieve(cert.id, tunnel_id=tunnel.id)
    assert got == cert


def test_two_certificate_cap(anthropic_client):
    tunnel = anthropic_client.beta.tunnels.create(display_name="cap")
    first = anthropic_client.beta.tunnels.certificates.create(
        tunnel.id, ca_certificate_pem=make_ca()
    )
    anthropic_client.beta.tunnels.certificates.create(tunnel.id, ca_certificate_pem=make_ca())
    with pytest.raises(anthropic.BadRequestError, match="at most 2"):
        anthropic_client.beta.tunnels.certificates.create(tunnel.id, ca_certificate_pem=make_ca())
    anthropic_client.beta.tunnels.certificates.archive(first.id, tunnel_id=tunnel.id)
    anthropic_client.beta.tunnels.certificates.create(tunnel.id, ca_certificate_pem=make_ca())
    active = list(anthropic_client.beta.tunnels.certificates.list(tunnel.id))
    everything = list(
        anthropic_client.beta.tunnels.certificates.list(tunnel.id, include_archived=True)
    )
    assert len(active) == 2 and len(everything) == 3


def _private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.mark.parametrize(
    ("pem_factory", "expected"),
    [
        (lambda: make_ca(ca=False), "CA:TRUE"),
        (lambda: make_ca(critical=False), "critical"),
        (lambda: make_ca(ski=False), "SubjectKeyIdentifier"),
        (lambda: make_ca(key_cert_sign=False), "keyCertSign"),
        (lambda: make_ca(key="rsa1024"), "2048"),
        (lambda: make_ca(key="ec224"), "P-256"),
        (lambda: make_ca(digest="sha224"), "SHA-256"),
        (lambda: make_ca() + _private_key_pem(), "private-key"),
        (lambda: make_ca() + make_ca(), "exactly one"),
        (lambda: make_ca() + "\n" + "#" * 8200, "8192"),
        (lambda: "not a pem", "exactly one"),
    ],
    ids=[
        "non-ca",
        "bc-not-critical",
        "no-ski",
        "no-keycertsign",
        "weak-rsa",
        "weak-curve",
        "sha224",
        "private-key",
        "two-certs",
        "over-8kb",
        "garbage",
    ],
)
def test_invalid_ca_pem_is_rejected(anthropic_client, pem_factory, expected):
    tunnel = anthropic_client.beta.tunnels.create(display_name="bad-ca")
    with pytest.raises(anthropic.BadRequestError) as info:
        anthropic_client.beta.tunnels.certificates.create(
            tunnel.id, ca_certificate_pem=pem_factory()
        )
    message = info.value.body["error"]["message"]
    assert message.startswith("ca_certificate_pem")
    assert expected in message
    assert list(anthropic_client.beta.tunnels.certificates.list(tunnel.id)) == []


def test_strong_variants_are_accepted(anthropic_client):
    tunnel = anthropic_client.beta.tunnels.create(display_name="ok")
    anthropic_client.beta.tunnels.certificates.create(
        tunnel.id, ca_certificate_pem=make_ca(key="ec384", digest="sha384")
    )
    anthropic_client.beta.tunnels.certificates.create(
        tunnel.id, ca_certificate_pem=make_ca(key="rsa2048")
    )
    assert len(list(anthropic_client.beta.tunnels.certificates.list(tunnel.id))) == 2


# ----------------------------------------------------- call log and faults


def test_call_log_fingerprints_secrets(anthropic_sandbox, anthropic_client):
    tunnel = anthropic_client.beta.tunnels.create(display_name="log")
    token = anthropic_client.beta.tunnels.reveal_token(tunnel.id).tunnel_token
    calls = anthropic_sandbox.calls()
    assert [(c["method"], c["path"]) for c in calls] == [
        ("POST", "/v1/tunnels"),
        ("POST", f"/v1/tunnels/{tunnel.id}/reveal_token"),
    ]
    assert calls[0]["body"] == {"display_name": "log"}
    assert calls[1]["response"]["tunnel_token"] == fingerprint(token)
    raw = httpx.get(anthropic_sandbox.url + "/_sandbox/calls").text
    assert token not in raw and anthropic_sandbox.token not in raw


def test_fault_injection_fails_next_calls(anthropic_sandbox, anthropic_client):
    anthropic_sandbox.fault("/v1/tunnels", 529, count=1, method="GET")
    page = anthropic_client.beta.tunnels.list()  # the SDK retries the 529 once
    assert page.data == []
    statuses = [c["status"] for c in anthropic_sandbox.calls()]
    assert statuses == [529, 200]
    body = anthropic_sandbox.calls()[0]["response"]
    assert body["error"]["type"] == "overloaded_error"


def test_seed_archived_tunnel_and_reset(anthropic_sandbox, anthropic_client):
    seeded = anthropic_sandbox.seed(tunnels=[{"display_name": "old", "archived": True}])
    tunnel_id = seeded["tunnels"][0]["id"]
    assert anthropic_client.beta.tunnels.retrieve(tunnel_id).archived_at is not None
    anthropic_sandbox.reset()
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.beta.tunnels.retrieve(tunnel_id)
    assert [c["status"] for c in anthropic_sandbox.calls()] == [404]  # the log was reset too


def test_standalone_server_with_seed_file(tmp_path, monkeypatch):
    import socket
    import subprocess
    import sys
    import time

    from sandbox.serve import free_port
    from tasks.anthropic_client import build_client

    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"tunnels": [{"display_name": "demo", "domain": "d.example"}]}))
    token_file = tmp_path / "token"
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.anthropic_api",
            "--port",
            str(port),
            "--seed",
            str(seed),
            "--token-file",
            str(token_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        token = token_file.read_text()
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        monkeypatch.setenv("MCP_IR_DEMO_TOKEN", token)
        client = build_client(f"http://127.0.0.1:{port}", bearer_env="MCP_IR_DEMO_TOKEN")
        (tunnel,) = list(client.beta.tunnels.list())
        assert (tunnel.display_name, tunnel.domain) == ("demo", "d.example")
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    assert fingerprint(token) in output and token not in output


def test_tunnel_cap_holds_under_concurrent_creates(anthropic_sandbox, anthropic_client):
    from concurrent.futures import ThreadPoolExecutor

    def create(i: int) -> str:
        try:
            anthropic_client.beta.tunnels.create(display_name=f"c{i}")
            return "ok"
        except anthropic.BadRequestError:
            return "capped"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(create, range(16)))
    assert outcomes.count("ok") == 10 and outcomes.count("capped") == 6
    assert len(anthropic_sandbox.state.tunnels) == 10


# --------------------------------------------------------------------- WIF


def _token_request(sandbox, **overrides) -> httpx.Response:
    body = {
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "assertion": "aGVhZA.cGF5bG9hZA.c2ln",
        "federation_rule_id": "fdrl_sandbox",
        "organization_id": "00000000-0000-4000-8000-000000000000",
        "service_account_id": "svac_sandbox",
    }
    body.update(overrides)
    body = {k: v for k, v in body.items() if v is not None}
    return httpx.post(sandbox.url + "/v1/oauth/token", json=body, timeout=10)


def test_wif_token_endpoint_validates_fields(anthropic_sandbox, anthropic_client):
    anthropic_sandbox.seed(wif={"assertions": ["aGVhZA.cGF5bG9hZA.c2ln"]})
    ok = _token_request(anthropic_sandbox)
    assert ok.status_code == 200
    minted = ok.json()
    assert minted["token_type"] == "Bearer" and minted["expires_in"] > 0
    assert anthropic_sandbox.state.token_valid(minted["access_token"])
    cases = {
        "grant_type": ("password", 400, "unsupported_grant_type"),
        "federation_rule_id": ("rule_1", 400, "invalid_request"),
        "service_account_id": ("user_1", 400, "invalid_request"),
        "assertion": ("not-a-jwt", 400, "invalid_grant"),
        "organization_id": ("11111111-0000-4000-8000-000000000000", 401, "invalid_grant"),
        "workspace_id": ("wrkspc_other", 401, "invalid_grant"),
    }
    for field, (value, status, error) in cases.items():
        response = _token_request(anthropic_sandbox, **{field: value})
        assert (response.status_code, response.json()["error"]) == (status, error), field
    missing = _token_request(anthropic_sandbox, organization_id=None)
    assert missing.status_code == 400
    assert "organization_id" in missing.json()["error_description"]


def test_wif_token_expires(anthropic_sandbox, anthropic_client):
    import time

    anthropic_sandbox.seed(wif={"assertions": ["aGVhZA.cGF5bG9hZA.c2ln"], "expires_in": 1})
    token = _token_request(anthropic_sandbox).json()["access_token"]
    assert anthropic_sandbox.state.token_valid(token)
    time.sleep(1.1)
    client = anthropic.Anthropic(
        base_url=anthropic_sandbox.url, credentials=anthropic.StaticToken(token), max_retries=0
    )
    with pytest.raises(anthropic.AuthenticationError):
        client.beta.tunnels.list()


def test_seed_errors_name_the_field(anthropic_sandbox, anthropic_client):
    response = httpx.post(
        anthropic_sandbox.url + "/_sandbox/seed", json={"sessions": [{"status": "asleep"}]}
    )
    assert response.status_code == 400
    assert "sessions[0].status" in response.json()["error"]["message"]
