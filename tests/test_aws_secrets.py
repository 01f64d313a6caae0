"""Secrets Manager store against the real moto server over HTTP (boto3 unchanged)."""

from __future__ import annotations

import logging
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from core.errors import ConfigError, McpIrError, TransientError
from core.redact import fingerprint
from sandbox.serve import free_port
from tasks.aws_secrets import (
    describe_versions,
    get_secret_json,
    get_secret_string,
    put_secret_version,
    request_token,
)

CANARY_OLD = "tnltok_CANARY-secret-old-value-000"
CANARY_NEW = "tnltok_CANARY-secret-new-value-111"


@pytest.fixture
def sm(aws_env: str):
    return boto3.client("secretsmanager")


def _name() -> str:
    return f"mcp-tunnel/{uuid.uuid4().hex[:10]}/tunnel-token"


def _stages(client, secret_id: str) -> dict[str, tuple[str, ...]]:
    return {v.version_id: v.stages for v in describe_versions(client, secret_id)}


def test_request_token_is_stable_and_material_specific() -> None:
    a = request_token("INC-42", fingerprint(CANARY_NEW))
    assert a == request_token("INC-42", fingerprint(CANARY_NEW))
    assert a != request_token("INC-42", fingerprint(CANARY_OLD))
    assert a != request_token("INC-43", fingerprint(CANARY_NEW))
    assert 32 <= len(a) <= 64
    with pytest.raises(ConfigError, match="^incident_id:"):
        request_token("", "sha256:x")


def test_creates_the_secret_when_absent(sm) -> None:
    name = _name()
    token = request_token("INC-1", fingerprint(CANARY_NEW))
    result = put_secret_version(sm, name, CANARY_NEW, client_request_token=token)
    assert result.created and result.secret_created
    assert result.version_id == token and result.previous_version_id is None
    assert result.arn.startswith("arn:aws:secretsmanager:") and name in result.arn
    assert result.value_fingerprint == fingerprint(CANARY_NEW)
    assert _stages(sm, name) == {token: ("AWSCURRENT",)}
    assert sm.get_secret_value(SecretId=name)["SecretString"] == CANARY_NEW


def test_new_version_current_and_old_staged_out(sm) -> None:
    name = _name()
    old = request_token("INC-2", fingerprint(CANARY_OLD))
    new = request_token("INC-2", fingerprint(CANARY_NEW))
    put_secret_version(sm, name, CANARY_OLD, client_request_token=old)
    result = put_secret_version(sm, name, CANARY_NEW, client_request_token=new)
    assert result.created and not result.secret_created
    assert result.previous_version_id == old
    assert _stages(sm, name) == {old: ("AWSPREVIOUS",), new: ("AWSCURRENT",)}
    assert get_secret_string(sm, name).get_secret_value() == CANARY_NEW
    previous = get_secret_string(sm, name, version_stage="AWSPREVIOUS")
    assert previous.get_secret_value() == CANARY_OLD


def test_retried_put_with_same_token_creates_no_new_version(sm) -> None:
    name = _name()
    old = request_token("INC-3", fingerprint(CANARY_OLD))
    new = request_token("INC-3", fingerprint(CANARY_NEW))
    put_secret_version(sm, name, CANARY_OLD, client_request_token=old)
    put_secret_version(sm, name, CANARY_NEW, client_request_token=new)
    before = _stages(sm, name)
    retry = put_secret_version(sm, name, CANARY_NEW, client_request_token=new)
    assert not retry.created and retry.version_id == new and retry.previous_version_id == old
    assert _stages(sm, name) == before
    assert len(describe_versions(sm, name)) == 2


def test_moto_honours_client_request_token_itself(sm) -> None:
    """The service-side mechanism our idempotency relies on, exercised directly with
    boto3: the same token + value is ignored; the same token + another value is
    refused; in both cases no version is added."""
    name = _name()
    sm.create_secret(Name=name, SecretString="first-value", ClientRequestToken="a" * 32)
    token = "b" * 32
    first = sm.put_secret_value(
        SecretId=name, SecretString="second-value", ClientRequestToken=token
    )
    again = sm.put_secret_value(
        SecretId=name, SecretString="second-value", ClientRequestToken=token
    )
    assert first["VersionId"] == again["VersionId"] == token
    with pytest.raises(ClientError) as err:
        sm.put_secret_value(SecretId=name, SecretString="third-value", ClientRequestToken=token)
    assert err.value.response["Error"]["Code"] == "ResourceExistsException"
    versions = sm.list_secret_version_ids(SecretId=name, IncludeDeprecated=True)["Versions"]
    assert sorted(v["VersionId"] for v in versions) == ["a" * 32, token]


def test_token_reused_for_another_value_is_refused_without_the_value(sm) -> None:
    name = _name()
    token = request_token("INC-6", fingerprint(CANARY_OLD))
    put_secret_version(sm, name, CANARY_OLD, client_request_token=token)
    with pytest.raises(ConfigError) as err:
        put_secret_version(sm, name, CANARY_NEW, client_request_token=token)
    assert err.value.detail.startswith("client_request_token:") and name in err.value.detail
    assert "CANARY" not in str(err.value)
    assert sm.get_secret_value(SecretId=name)["SecretString"] == CANARY_OLD
    assert len(describe_versions(sm, name)) == 1


def test_replaying_an_older_token_writes_nothing_and_fails_verify(sm) -> None:
    name = _name()
    token = request_token("INC-4", fingerprint(CANARY_OLD))
    put_secret_version(sm, name, CANARY_OLD, client_request_token=token)
    other = request_token("INC-4", "sha256:other")
    put_secret_version(sm, name, "another-value-x", client_request_token=other)
    # Replaying the OLD token after a newer version: the check-first path sees the
    # version exists and does not write; it is no longer current, so verify fails.
    with pytest.raises(McpIrError) as err:
        put_secret_version(sm, name, CANARY_OLD, client_request_token=token)
    assert "not staged AWSCURRENT" in err.value.detail and name in err.value.detail
    assert len(describe_versions(sm, name)) == 2


def test_errors_name_the_secret_and_map_classes(sm, aws_env: str) -> None:
    missing = _name()
    with pytest.raises(ConfigError) as err:
        describe_versions(sm, missing)
    assert missing in err.value.detail and "ResourceNotFoundException" in err.value.detail
    assert not err.value.retryable
    dead = boto3.client(
        "secretsmanager",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(TransientError) as err:
        put_secret_version(dead, missing, CANARY_NEW, client_request_token="c" * 32)
    assert err.value.retryable and missing in err.value.detail
    assert CANARY_NEW not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"secret_id": "", "value": "v", "client_request_token": "d" * 32}, "secret_id"),
        ({"secret_id": "s", "value": "", "client_request_token": "d" * 32}, "value"),
        ({"secret_id": "s", "value": "v", "client_request_token": "short"}, "client_request_token"),
    ],
)
def test_bad_input_names_the_field(sm, kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        put_secret_version(sm, **kwargs)
    assert err.value.detail.startswith(field) or f"{field}:" in err.value.detail


def test_get_secret_json_for_token_lists(sm) -> None:
    name = _name()
    sm.create_secret(Name=name, SecretString='["tok-a", "tok-b"]')
    assert get_secret_json(sm, name) == ["tok-a", "tok-b"]
    bad = _name()
    sm.create_secret(Name=bad, SecretString="tnltok_CANARY-not-json")
    with pytest.raises(ConfigError) as err:
        get_secret_json(sm, bad)
    assert "not valid JSON" in err.value.detail and "CANARY" not in err.value.detail


def test_secret_values_never_logged_or_in_results(sm, caplog: pytest.LogCaptureFixture) -> None:
    # Our own loggers at DEBUG; botocore at INFO (at DEBUG botocore logs request
    # bodies, SecretString included — deployments must keep it at INFO or above).
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="tasks")
    name = _name()
    results = [
        put_secret_version(
            sm, name, value, client_request_token=request_token("INC-5", fingerprint(value))
        )
        for value in (CANARY_OLD, CANARY_NEW, CANARY_NEW)
    ]
    shown = caplog.text + "".join(repr(r) + str(r.as_dict()) for r in results)
    assert fingerprint(CANARY_NEW) in shown
    assert "CANARY" not in shown
