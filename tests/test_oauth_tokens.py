"""RFC 7009 / RFC 7662 client (httpx) against the sandbox authorization server over
HTTP, and the sandbox's own fidelity to the RFCs."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import httpx
import pytest

from core.errors import ConfigError, CredentialsError, StepFailed, TransientError
from core.redact import fingerprint
from sandbox.oauth_server import create_app
from sandbox.serve import serve_in_thread
from tasks.oauth_tokens import (
    HeldToken,
    TokensStillActive,
    UpstreamServer,
    introspect,
    load_tokens,
    parse_servers,
    revoke,
    rotate_upstream_tokens,
)

ENV = "MCP_IR_TEST_OAUTH_SECRET"


@pytest.fixture
def oauth(oauth_sandbox, monkeypatch: pytest.MonkeyPatch):
    """The session's authorization server, with its client secret in ``ENV``."""
    monkeypatch.setenv(ENV, oauth_sandbox.client_secret)
    return oauth_sandbox


@pytest.fixture
def http():
    with httpx.Client() as client:
        yield client


def _server(oauth, tokens: dict, *, name: str = "github-mcp", **extra) -> UpstreamServer:
    return _server_at(
        oauth.revocation_endpoint,
        oauth.introspection_endpoint,
        oauth.client_id,
        tokens,
        name=name,
        **extra,
    )


def _server_at(
    revocation: str, introspection: str, client_id: str, tokens: dict, *, name: str, **extra
) -> UpstreamServer:
    return UpstreamServer(
        name=name,
        revocation_endpoint=revocation,
        introspection_endpoint=introspection,
        client_id=client_id,
        client_secret_env=ENV,
        tokens=tokens,
        **extra,
    )


def _json_store(tmp_path: Path, *tokens: str) -> dict:
    """A token file holding ``tokens`` as a JSON list, as the inventory names it."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps(list(tokens)))
    return {"kind": "file", "path": str(path)}


@contextmanager
def _private_server(clients: dict[str, str], **options) -> Iterator[str]:
    """An authorization server of its own (for set-ups the session one cannot take);
    yields its base URL and stops it afterwards."""
    handle = serve_in_thread(create_app(clients, **options))
    try:
        yield handle.url
    finally:
        handle.stop()


def _issue(http: httpx.Client, url: str, client_id: str, **extra: str) -> str:
    body = {"client_id": client_id, **extra}
    return http.post(f"{url}/_sandbox/issue", json=body).json()["access_token"]


def _active(http: httpx.Client, oauth, token: str) -> bool:
    r = http.post(
        oauth.introspection_endpoint,
        data={"token": token},
        auth=(oauth.client_id, oauth.client_secret),
    )
    assert r.status_code == 200
    return r.json()["active"]


def _revocations(oauth, token: str) -> list[dict]:
    fp = fingerprint(token)
    return [
        c for c in oauth.calls() if c["endpoint"] == "revoke" and c.get("token_fingerprint") == fp
    ]


# -- the sandbox follows the RFCs ----------------------------------------------------------


def test_sandbox_revocation_semantics(http: httpx.Client, oauth_sandbox) -> None:
    o = oauth_sandbox
    auth = (o.client_id, o.client_secret)
    r = http.post(o.revocation_endpoint, data={"token": "never-issued"}, auth=auth)
    assert r.status_code == 200  # RFC 7009 §2.2: unknown tokens are not an error
    r = http.post(o.revocation_endpoint, data={"token_type_hint": "access_token"}, auth=auth)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request")
    assert r.json()["error_description"] == "missing required parameter: token"
    r = http.post(
        o.revocation_endpoint,
        content=b"token=a&token=b",
        headers={"content-type": "application/x-www-form-urlencoded"},
        auth=auth,
    )
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request")
    assert r.headers["cache-control"] == "no-store"
    r = http.post(o.revocation_endpoint, data={"token": "x"}, auth=(o.client_id, "wrong"))
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")
    assert r.headers["www-authenticate"] == 'Basic realm="oauth-sandbox"'
    r = http.post(o.revocation_endpoint, data={"token": "x"})
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")
    assert "www-authenticate" in r.headers
    r = http.post(
        o.revocation_endpoint,
        data={"token": "x", "client_id": o.client_id, "client_secret": o.client_secret},
        auth=auth,
    )
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request")
    r = http.post(o.revocation_endpoint, json={"token": "x"}, auth=auth)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request")
    assert http.get(o.revocation_endpoint, auth=auth).status_code == 405
    r = http.post(
        o.revocation_endpoint, data={"token": "x", "token_type_hint": "id_token"}, auth=auth
    )
    assert (r.status_code, r.json()["error"]) == (400, "unsupported_token_type")
    theirs = o.issue(client_id=o.other_client_id)["access_token"]
    r = http.post(o.revocation_endpoint, data={"token": theirs}, auth=auth)
    assert (r.status_code, r.json()["error"]) == (400, "unauthorized_client")
    assert _active(http, o, theirs)


def test_sandbox_refresh_revocation_cascades_and_inactive_answer_is_bare(
    http: httpx.Client, oauth_sandbox
) -> None:
    o = oauth_sandbox
    pair = o.issue("both")
    assert _active(http, o, pair["access_token"])
    r = http.post(
        o.revocation_endpoint,
        data={
            "token": pair["refresh_token"],
            "token_type_hint": "refresh_token",
            "client_id": o.client_id,
            "client_secret": o.client_secret,
        },
    )
    assert r.status_code == 200
    for token in (pair["refresh_token"], pair["access_token"]):
        r = http.post(
            o.introspection_endpoint, data={"token": token}, auth=(o.client_id, o.client_secret)
        )
        assert r.json() == {"active": False}
    metadata = http.get(f"{o.url}/.well-known/oauth-authorization-server").json()
    assert metadata["revocation_endpoint"] == o.revocation_endpoint


def test_sandbox_unsupported_token_type_for_non_revocable_type(http: httpx.Client) -> None:
    with _private_server({"c": "s3cret-value"}, revocable_types=("refresh_token",)) as url:
        token = _issue(http, url, "c", token_type="access_token")
        r = http.post(f"{url}/revoke", data={"token": token}, auth=("c", "s3cret-value"))
        assert (r.status_code, r.json()["error"]) == (400, "unsupported_token_type")
        tokens = {"kind": "file", "path": "/nonexistent"}
        server = _server_at(f"{url}/revoke", f"{url}/introspect", "c", tokens, name="refresh-only")
        with pytest.raises(StepFailed) as err:
            revoke(
                http,
                server,
                HeldToken(value=_secret(token), token_type_hint=None),
                client_secret=_secret("s3cret-value"),
            )
        assert "unsupported_token_type" in err.value.detail and token not in str(err.value)
        assert not err.value.retryable


def _secret(value: str):
    from pydantic import SecretStr

    return SecretStr(value)


# -- the client ----------------------------------------------------------------------------


@pytest.mark.parametrize("client_auth", ["client_secret_basic", "client_secret_post"])
def test_rotate_file_store_revokes_and_verifies(
    tmp_path: Path, http: httpx.Client, oauth, client_auth: str
) -> None:
    o = oauth
    access = [o.issue()["access_token"] for _ in range(2)]
    refresh = o.issue("refresh_token")["refresh_token"]
    store = tmp_path / "tokens.json"
    store.write_text(
        json.dumps([access[0], {"token": refresh, "token_type_hint": "refresh_token"}])
    )
    lines = tmp_path / "tokens.txt"
    lines.write_text(f"# issued by github-mcp\n{access[1]}\n\n")
    servers = [
        _server(o, {"kind": "file", "path": str(store)}, client_auth=client_auth),
        _server(o, {"kind": "file", "path": str(lines)}, name="jira-mcp", client_auth=client_auth),
    ]
    results = rotate_upstream_tokens(servers, http=http)
    assert [r.as_dict() for r in results] == [
        {
            "server": "github-mcp",
            "token_fingerprint": fingerprint(access[0]),
            "active_before": True,
            "revoked": True,
            "active_after": False,
        },
        {
            "server": "github-mcp",
            "token_fingerprint": fingerprint(refresh),
            "active_before": True,
            "revoked": True,
            "active_after": False,
        },
        {
            "server": "jira-mcp",
            "token_fingerprint": fingerprint(access[1]),
            "active_before": True,
            "revoked": True,
            "active_after": False,
        },
    ]
    for token in (*access, refresh):
        assert not _active(http, o, token)
        [call] = _revocations(o, token)
        assert call["status"] == 200 and call["auth_method"] == client_auth
    assert _revocations(o, refresh)[0]["token_type_hint"] == "refresh_token"


def test_rotate_is_idempotent(tmp_path: Path, http: httpx.Client, oauth) -> None:
    o = oauth
    token = o.issue()["access_token"]
    servers = [_server(o, _json_store(tmp_path, token))]
    first = rotate_upstream_tokens(servers, http=http)
    second = rotate_upstream_tokens(servers, http=http)
    assert first[0].revoked and not first[0].active_after
    assert (second[0].active_before, second[0].revoked, second[0].active_after) == (
        False,
        False,
        False,
    )
    assert len(_revocations(o, token)) == 1  # no second revocation sent
    # Revoking an already revoked token directly is fine too (RFC 7009: 200).
    held = load_tokens(servers[0])[0]
    revoke(http, servers[0], held, client_secret=_secret(o.client_secret))
    assert not introspect(http, servers[0], held, client_secret=_secret(o.client_secret)).active


def test_rotate_aws_secret_store(aws_env: str, http: httpx.Client, oauth) -> None:
    o = oauth
    sm = boto3.client("secretsmanager")
    tokens = [o.issue()["access_token"], o.issue()["access_token"]]
    secret_id = f"upstream/{uuid.uuid4().hex[:8]}/oauth-tokens"
    sm.create_secret(Name=secret_id, SecretString=json.dumps(tokens))
    server = _server(o, {"kind": "aws_secret", "secret_id": secret_id})
    results = rotate_upstream_tokens([server], http=http, secrets_client=sm)
    assert [r.token_fingerprint for r in results] == [fingerprint(t) for t in tokens]
    assert all(r.revoked and not r.active_after for r in results)
    assert not any(_active(http, o, t) for t in tokens)
    with pytest.raises(ConfigError, match="no Secrets Manager client"):
        load_tokens(server)


def test_transient_503_is_retried_then_raised_retryable(
    tmp_path: Path, http: httpx.Client, oauth
) -> None:
    o = oauth
    token = o.issue()["access_token"]
    server = _server(o, _json_store(tmp_path, token))
    o.fail_next("revoke", 2)
    with pytest.raises(TransientError) as err:
        rotate_upstream_tokens([server], http=http, attempts=2)
    assert err.value.retryable and "HTTP 503 temporarily_unavailable" in err.value.detail
    assert fingerprint(token) in err.value.detail and token not in str(err.value)
    assert _active(http, o, token)  # 503: the token must be assumed still valid
    o.fail_next("revoke", 2)
    results = rotate_upstream_tokens([server], http=http, attempts=3)
    assert results[0].revoked and not results[0].active_after
    statuses = [c["status"] for c in o.calls() if c["endpoint"] == "revoke"][-3:]
    assert statuses == [503, 503, 200]


def test_client_secret_problems_are_credentials_errors(
    tmp_path: Path, http: httpx.Client, oauth_sandbox, monkeypatch
) -> None:
    o = oauth_sandbox
    server = _server(o, _json_store(tmp_path, o.issue()["access_token"]))
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(CredentialsError) as err:
        rotate_upstream_tokens([server], http=http)
    assert ENV in err.value.detail and "github-mcp" in err.value.detail
    wrong = "cs_wrong-secret-CANARY"
    monkeypatch.setenv(ENV, wrong)
    with pytest.raises(CredentialsError) as err:
        rotate_upstream_tokens([server], http=http)
    assert "invalid_client" in err.value.detail and o.client_id in err.value.detail
    assert wrong not in str(err.value)


def test_token_of_another_client_is_a_step_failure(
    tmp_path: Path, http: httpx.Client, oauth
) -> None:
    o = oauth
    theirs = o.issue(client_id=o.other_client_id)["access_token"]
    with pytest.raises(StepFailed) as err:
        rotate_upstream_tokens([_server(o, _json_store(tmp_path, theirs))], http=http)
    assert "unauthorized_client" in err.value.detail and theirs not in str(err.value)


def test_tokens_still_active_fail_loudly_with_results(
    tmp_path: Path, http: httpx.Client, monkeypatch
) -> None:
    """A revocation the server answered 200 for but that did not deactivate the
    token (here: a misconfigured inventory sending revocations to another server,
    which answers 200 for an unknown token as RFC 7009 requires) must not pass as
    rotated: the step fails and still returns every result."""
    clients = {"c": "secret-a-value"}
    with _private_server(clients) as a_url, _private_server(clients) as b_url:
        token = _issue(http, a_url, "c")
        tokens = _json_store(tmp_path, token)
        monkeypatch.setenv(ENV, "secret-a-value")
        # Misconfigured inventory: revocation goes to B (unknown token → 200),
        # introspection to A, where the token stays active.
        server = _server_at(f"{b_url}/revoke", f"{a_url}/introspect", "c", tokens, name="split")
        with pytest.raises(TokensStillActive) as err:
            rotate_upstream_tokens([server], http=http)
        assert [r.active_after for r in err.value.results] == [True]
        assert fingerprint(token) in err.value.detail and token not in err.value.detail


def test_basic_auth_form_urlencodes_special_characters(
    tmp_path: Path, http: httpx.Client, monkeypatch
) -> None:
    secret = "p@ss:w+rd%2F/é x"
    with _private_server({"client:id+1": secret}) as url:
        token = _issue(http, url, "client:id+1")
        path = tmp_path / "t.txt"
        path.write_text(token + "\n")
        monkeypatch.setenv(ENV, secret)
        tokens = {"kind": "file", "path": str(path)}
        server = _server_at(
            f"{url}/revoke", f"{url}/introspect", "client:id+1", tokens, name="special"
        )
        [result] = rotate_upstream_tokens([server], http=http)
        assert result.revoked and not result.active_after


def test_connection_failure_is_transient(tmp_path: Path, http: httpx.Client, monkeypatch) -> None:
    from sandbox.serve import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    path = tmp_path / "t.txt"
    path.write_text("oat_some-token-value\n")
    monkeypatch.setenv(ENV, "x-secret")
    tokens = {"kind": "file", "path": str(path)}
    server = _server_at(f"{dead}/revoke", f"{dead}/introspect", "c", tokens, name="down")
    with pytest.raises(TransientError) as err:
        rotate_upstream_tokens([server], http=http, attempts=1)
    assert "cannot reach" in err.value.detail and "oat_some-token-value" not in str(err.value)


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"revocation_endpoint": "ftp://x/revoke"}, "upstream_servers[0].revocation_endpoint"),
        ({"client_secret_env": "not a name"}, "upstream_servers[0].client_secret_env"),
        ({"tokens": {"kind": "vault", "path": "x"}}, "upstream_servers[0].tokens"),
        ({"surprise": 1}, "upstream_servers[0].surprise"),
        ({"name": ""}, "upstream_servers[0].name"),
    ],
)
def test_parse_servers_names_the_bad_field(entry: dict, field: str) -> None:
    base = {
        "name": "ok",
        "revocation_endpoint": "https://auth.example/revoke",
        "introspection_endpoint": "https://auth.example/introspect",
        "client_id": "c",
        "client_secret_env": "OK_SECRET",
        "tokens": {"kind": "aws_secret", "secret_id": "s"},
    }
    with pytest.raises(ConfigError) as err:
        parse_servers([{**base, **entry}])
    assert err.value.detail.startswith(field)
    assert parse_servers([base])[0].tokens.kind == "aws_secret"
    with pytest.raises(ConfigError, match="duplicate"):
        parse_servers([base, base])


def test_malformed_store_never_quotes_tokens(tmp_path: Path, oauth_sandbox) -> None:
    path = tmp_path / "t.json"
    path.write_text('["oat_CANARY-in-broken-json", ')
    with pytest.raises(ConfigError) as err:
        load_tokens(_server(oauth_sandbox, {"kind": "file", "path": str(path)}))
    assert "not valid JSON" in err.value.detail and "CANARY" not in err.value.detail
    path.write_text(json.dumps([{"token": 5}]))
    with pytest.raises(ConfigError, match=r"\[0\] is not a token string"):
        load_tokens(_server(oauth_sandbox, {"kind": "file", "path": str(path)}))
    with pytest.raises(ConfigError, match="tokens.path"):
        load_tokens(_server(oauth_sandbox, {"kind": "file", "path": str(tmp_path / "missing")}))


def test_no_token_or_client_secret_in_logs_results_or_sandbox_records(
    tmp_path: Path, http: httpx.Client, oauth, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tasks")
    o = oauth
    tokens = [o.issue()["access_token"], o.issue("refresh_token")["refresh_token"]]
    server = _server(o, _json_store(tmp_path, *tokens))
    results = rotate_upstream_tokens([server], http=http)
    held = load_tokens(server)
    shown = (
        caplog.text
        + repr(results)
        + json.dumps([r.as_dict() for r in results])
        + repr(held)
        + repr(server)
        + json.dumps(o.calls())
    )
    assert fingerprint(tokens[0]) in shown
    for secret in (*tokens, o.client_secret):
        assert secret not in shown
