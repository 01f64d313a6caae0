"""Canaries for every secret shape the redactor must remove (detect-secrets' shapes
plus the ones it does not redact whole), through the redactor itself, the log
review's samples and timeline, and the redacted evidence view; and environment
values of real container inspect documents and Kubernetes specs that never reach
evidence, whatever their shape."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import docker
import pytest
import yaml

from core.redact import REDACTED, Redactor, fingerprint, scrub_env
from runbook.steps._evidence import dumps, scrub_inspect
from sandbox.engine import BUSYBOX_IMAGE
from tasks.logs.batch import review_paths
from tasks.logs.config import ReviewConfig

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAw7Zdfmece8iaB0kiTY8pCtiBtzbptJmP28nSWwtdjRu0f2GF"
    "\npXvBhQn4a8K9oq8v2b0EXAMPLEmultiLINE\n-----END RSA PRIVATE KEY-----"
)
# (shape, text holding it, the secret part that must vanish, context that must stay)
CANARIES = [
    (
        "url userinfo",
        "dsn=postgres://admin:Canary-Pw-7731@db.internal:5432/app",
        "Canary-Pw-7731",
        "db.internal",
    ),
    ("aws access key id", "key AKIAIOSFODNN7CANARY1 used", "AKIAIOSFODNN7CANARY1", "used"),
    (
        "aws secret (env)",
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYCANARYKEY",
        "wJalrXUtnFEMI/K7MDENG",
        "AWS_SECRET_ACCESS_KEY=",
    ),
    (
        "aws secret (quoted)",
        'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYCANARYKE2"',
        "K7MDENG/bPxRfiCYCANARYKE2",
        "aws_secret_access_key",
    ),
    ("github token", "auth ghp_CanaryCanaryCanaryCanaryCanary012345 ok", "ghp_CanaryCanary", "ok"),
    ("slack token", "xoxb-1234567890-0987654321-c4n4ryslacktokenvalue", "c4n4ryslacktok", ""),
    ("stripe key", "stripe sk_live_CanaryCanaryCanary12345678 charge", "sk_live_Canary", "charge"),
    ("whole jwt", f"cf-access {JWT} end", "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c", "end"),
    ("jwt middle", f"token={JWT}", "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0", ""),
    ("private key block", f"key:\n{PEM}\ndone", "MIIEowIBAAKCAQEA", "done"),
    (
        "json token field",
        '{"token": "c4n4ry-opaque-value", "user": "ann"}',
        "c4n4ry-opaque-value",
        '"user": "ann"',
    ),
    (
        "json secret field",
        '{"client_secret":"c4n4ry-client-secret"}',
        "c4n4ry-client-secret",
        "client_secret",
    ),
    ("json password field", '{"password":"hunter2-c4n4ry"}', "hunter2-c4n4ry", "password"),
    ("json key field", '{"api_key":"k3y-c4n4ry-42"}', "k3y-c4n4ry-42", "api_key"),
    ("yaml password", "password: Yaml-C4n4ry-Pw", "Yaml-C4n4ry-Pw", "password:"),
    ("yaml token", "  token: yaml-c4n4ry-token", "yaml-c4n4ry-token", "token:"),
    (
        "basic auth header",
        "Authorization: Basic YWRtaW46YzRuNHJ5LXB3",
        "YWRtaW46YzRuNHJ5LXB3",
        "Authorization",
    ),
    (
        "bearer header",
        "headers map[Authorization:[Bearer c4n4ry-bearer-abcdef]]",
        "c4n4ry-bearer-abcdef",
        "headers",
    ),
    ("anthropic key", "x sk-ant-api03-C4n4ryC4n4ryC4n4ry y", "sk-ant-api03-C4n4ry", "y"),
]


@pytest.mark.parametrize(
    ("shape", "text", "secret", "context"), CANARIES, ids=[c[0] for c in CANARIES]
)
def test_each_secret_shape_is_redacted(shape: str, text: str, secret: str, context: str) -> None:
    clean = Redactor().text(text)
    assert secret not in clean, (shape, clean)
    assert REDACTED in clean and context in clean


def test_configured_values_and_ordinary_evidence() -> None:
    redactor = Redactor(["opaque-configured-value-91"])
    assert redactor.text("x opaque-configured-value-91 y") == f"x {REDACTED} y"
    # Ids, hashes, addresses and hostnames are evidence, not secrets.
    line = (
        "2024-11-27T11:16:18Z INF Registered tunnel connection connIndex=1 "
        "connection=e611a74a-aee1-4bcd-b829-3a32337edabc event=0 ip=198.41.192.57 "
        "location=lhr10 protocol=http2 cfRay=687f37bd84af59ce-IAD"
    )
    assert redactor.text(line) == line
    assert redactor.text('{"tokens": 5, "password": "***"}') == '{"tokens": 5, "password": "***"}'


def test_no_canary_reaches_findings_timeline_reports_or_the_redacted_view(tmp_path: Path) -> None:
    lines = [
        f'2026-11-21T20:00:{i:02d}Z ERR Request failed error="boom" {text}'.replace("\n", " ")
        for i, (_, text, _, _) in enumerate(CANARIES)
    ]
    log = tmp_path / "cloudflared.log"
    log.write_bytes(("\n".join(lines) + "\n").encode())
    out = tmp_path / "out"
    batch = review_paths(
        [str(log)],
        window=None,
        config=ReviewConfig(),
        redactor=Redactor(),
        output=out,
    )
    shown = (
        json.dumps(batch.document)
        + (out / "review.json").read_text()
        + (out / "review.md").read_text()
    )
    view = next(p for p in batch.written if p.name.endswith(".redacted.log")).read_text()
    assert batch.document["findings"] and batch.document["timeline"]
    for shape, _, secret, _ in CANARIES:
        assert secret not in shown, shape
        assert secret not in view, shape
    # The evidence copy keeps the original bytes; its hash is in the manifest.
    manifest = json.loads((out / "evidence" / "manifest.json").read_text())
    [entry] = manifest["files"]
    original = out / "evidence" / entry["original"]
    assert original.read_bytes() == log.read_bytes()
    import hashlib

    assert entry["sha256"] == hashlib.sha256(log.read_bytes()).hexdigest()


def test_scrub_env_keeps_names_and_fingerprints_every_value() -> None:
    doc = {
        "Config": {"Env": ["PATH=/usr/bin", "UPSTREAM_DSN=zq9-unknown-shape", "EMPTY="]},
        "spec": {
            "containers": [
                {
                    "env": [
                        {"name": "PLAIN", "value": "weird!shape#1"},
                        {
                            "name": "FROM_SECRET",
                            "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                        },
                    ]
                }
            ]
        },
        "services": {"proxy": {"environment": {"ANY": "v@lue"}}},
    }
    clean = scrub_env(doc)
    text = json.dumps(clean)
    for value in ("/usr/bin", "zq9-unknown-shape", "weird!shape#1", "v@lue"):
        assert value not in text
    assert clean["Config"]["Env"][1] == f"UPSTREAM_DSN={fingerprint('zq9-unknown-shape')}"
    assert clean["spec"]["containers"][0]["env"][1]["valueFrom"]["secretKeyRef"]["key"] == "k"
    assert scrub_env(clean) == clean  # idempotent: fingerprints are not fingerprinted again


def test_unknown_format_secret_in_a_real_containers_env_never_lands_in_evidence(
    engine_client: docker.DockerClient,
) -> None:
    canary = f"zq{secrets.token_hex(6)}~opaque!{secrets.token_hex(3)}"
    container = engine_client.containers.create(
        BUSYBOX_IMAGE,
        ["sleep", "1"],
        environment={"UPSTREAM_DSN": canary, "MODE": "prod"},
        network_mode="none",
    )
    try:
        inspect = engine_client.api.inspect_container(container.id)
        assert f"UPSTREAM_DSN={canary}" in inspect["Config"]["Env"]  # the engine has it
        evidence = dumps(scrub_inspect(inspect))
        assert canary.encode() not in evidence
        env = json.loads(evidence)["Config"]["Env"]
        assert f"UPSTREAM_DSN={fingerprint(canary)}" in env and f"MODE={fingerprint('prod')}" in env
    finally:
        container.remove(force=True)


def test_kubernetes_specs_serialize_with_env_fingerprints() -> None:
    from tasks.kubernetes_capture import _yaml

    pod = {
        "kind": "Pod",
        "spec": {
            "containers": [{"name": "proxy", "env": [{"name": "DSN", "value": "k8s~canary~1"}]}]
        },
    }
    text = _yaml([pod]).decode()
    assert "k8s~canary~1" not in text and fingerprint("k8s~canary~1") in text
    assert yaml.safe_load(text)["spec"]["containers"][0]["env"][0]["name"] == "DSN"
