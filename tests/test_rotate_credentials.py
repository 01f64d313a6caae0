"""rotate_credentials against the real components: the real CLI in a subprocess, a real
Prefect server, podman, the Tunnels sandbox through the real SDK, moto over HTTP, the
OAuth sandbox (RFC 7009/7662) and, for Helm, the Kubernetes sandbox through the real
client. Crashes are real process deaths at the step's failpoints."""

from __future__ import annotations

import json
import re
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from core.errors import ConfigError
from core.redact import Redactor, fingerprint
from core.trail import Trail, verify_dir
from runbook.context import Clients, Incident, StepContext
from runbook.inventory import parse_inventory
from runbook.registry import get_step
from sandbox.moto import moto_env, secrets_client
from sandbox.site import DEFAULT_GROUPS, DEFAULT_PEOPLE, write_inventory
from tasks import certificates, tunnels
from tasks.credential_files import DATA_FILES
from tests.plugins.site import Site

OAUTH_ENV = "MCP_IR_TEST_OAUTH_CLIENT_SECRET"
STEP = "rotate_credentials"
PLAYBOOK = (
    "name: rotation-only\nsteps:\n"
    "  - key: archive_tunnel\n    approval: auto\n"
    "  - key: rotate_credentials\n    approval: auto\n"
)
FULL_PLAYBOOK = (
    "name: contain-and-rotate\nsteps:\n"
    "  - key: capture_evidence\n    approval: auto\n"
    "  - key: stop_stack\n    approval: auto\n"
    "  - key: archive_tunnel\n    approval: auto\n"
    "  - key: rotate_credentials\n    approval: auto\n"
)


# -- helpers -----------------------------------------------------------------------------


def incident_of(output: str) -> str:
    found = re.search(r"\b(INC-[A-Za-z0-9-]+)", output)
    assert found, output
    return found.group(1)


def prepare(
    site: Site, tmp_path: Path, oauth: Any, moto_url: str, playbook: str = PLAYBOOK
) -> dict[str, Any]:
    """Adds upstream OAuth servers and AWS Secrets Manager to the site's inventory and a
    custom playbook; returns what the test needs to check afterwards."""
    tag = tmp_path.name[-20:].replace("_", "-")
    tokens = [oauth.issue()["access_token"], oauth.issue("refresh_token")["refresh_token"]]
    store = tmp_path / "oauth-tokens.json"
    store.write_text(
        json.dumps([tokens[0], {"token": tokens[1], "token_type_hint": "refresh_token"}])
    )
    secrets = {
        "token_secret_id": f"mcp/{tag}/tunnel-token",
        "ca_secret_id": f"mcp/{tag}/ca",
        "tls_secret_id": f"mcp/{tag}/tls",
    }
    site.env.update(moto_env(moto_url))
    sm = secrets_client(moto_url)
    sm.create_secret(Name=secrets["token_secret_id"], SecretString=site.site.token)
    target = {
        **site.site.target,
        "secrets_env": ["MCP_IR_TEST_CANARY"],
        "upstream_servers": [
            {
                "name": "github-mcp",
                "revocation_endpoint": oauth.revocation_endpoint,
                "introspection_endpoint": oauth.introspection_endpoint,
                "client_id": oauth.client_id,
                "client_secret_env": OAUTH_ENV,
                "tokens": {"kind": "file", "path": str(store)},
            }
        ],
        "aws": {"region": "us-east-1", "secrets_manager": secrets},
    }
    write_inventory(site.inventory, {site.target: target})
    site.env[OAUTH_ENV] = oauth.client_secret
    pb_dir = tmp_path / "playbooks"
    pb_dir.mkdir(exist_ok=True)
    name = playbook.split("\n", 1)[0].removeprefix("name: ")
    (pb_dir / f"{name}.yaml").write_text(playbook)
    site.env["MCP_IR_PLAYBOOK_DIR"] = str(pb_dir)
    return {"playbook": name, "oauth_tokens": tokens, "secrets": secrets, "sm": sm}


def new_tunnel_posts(site: Site) -> list[dict[str, Any]]:
    return [
        c
        for c in site.sandbox.calls("/v1/tunnels")
        if (c["method"], c["path"]) == ("POST", "/v1/tunnels")
    ]


def planned_patterns(records: list[Any]) -> list[re.Pattern[str]]:
    """Every planned Anthropic API call as a regex; ``{new}`` matches a tunnel id."""
    out = []
    for r in records:
        if r.kind == "step.planned":
            for call in r.data["api_calls"]:
                if call.startswith(("POST /v1/", "DELETE /v1/")):
                    out.append(
                        re.compile(re.escape(call).replace(r"\{new\}", r"tnl_[A-Za-z0-9]+") + "$")
                    )
    return out


def assert_calls_were_planned(site: Site, records: list[Any]) -> None:
    patterns = planned_patterns(records)
    for call in site.mutating_calls():
        assert any(p.match(call) for p in patterns), f"unplanned call {call}"


def oauth_active(oauth: Any, token: str) -> bool:
    r = httpx.post(
        oauth.introspection_endpoint,
        data={"token": token},
        auth=(oauth.client_id, oauth.client_secret),
        timeout=5,
    )
    assert r.status_code == 200
    return bool(r.json()["active"])


def assert_valid_material(data_dir: Path, domain: str) -> None:
    """The rotated CA and server certificate, checked with ``cryptography`` directly."""
    ca = x509.load_pem_x509_certificate((data_dir / "ca.crt").read_bytes())
    tls = x509.load_pem_x509_certificate((data_dir / "tls.crt").read_bytes())
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.key_size >= 256
    assert ca.signature_hash_algorithm is not None and ca.signature_hash_algorithm.name == "sha256"
    assert len((data_dir / "ca.crt").read_bytes()) <= 8 * 1024
    tls.verify_directly_issued_by(ca)
    aki = tls.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski
    san = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"*.{domain}" in san.get_values_for_type(x509.DNSName)
    assert certificates.check_ca((data_dir / "ca.crt").read_text()) == []
    assert (
        certificates.check_server_cert(
            (data_dir / "tls.crt").read_text(), (data_dir / "ca.crt").read_text(), domain
        )
        == []
    )
    certificates.load_ca((data_dir / "ca.crt").read_text(), (data_dir / "ca.key").read_text())


def assert_rotated(site: Site, incident: str, ctx: dict[str, Any], oauth: Any) -> dict[str, Any]:
    """Everything a finished rotation must show; returns the new tunnel's record."""
    records = site.trail(incident).records()
    created = [r for r in records if r.kind == "tunnel.created"]
    new_id = created[-1].data["id"]
    named = [c for c in new_tunnel_posts(site)]
    assert len(named) == 1 and named[0]["response"]["id"] == new_id  # exactly one new tunnel
    cert_posts = [c for c in site.mutating_calls() if c.endswith("/certificates")]
    assert cert_posts == [f"POST /v1/tunnels/{new_id}/certificates"]  # one CA, one slot

    data = site.site.data_dir
    files = {p.name: p for p in data.iterdir()}
    assert set(files) >= set(DATA_FILES)
    for name in DATA_FILES:
        st = files[name].stat()
        assert stat.S_IMODE(st.st_mode) == 0o600, name
        assert (st.st_uid, st.st_gid) == (65532, 65532), name
    assert not [n for n in files if n.startswith(".mcp-ir-tmp-")]
    new_token = (data / "tunnel-token").read_text()
    domain = (data / "tunnel-domain").read_text()
    assert (data / "tunnel-id").read_text() == new_id and new_token != site.site.token
    assert site.sandbox.connect(site.site.token) == 403  # the old token is dead
    assert site.sandbox.connect(new_token) == 200  # the new one connects (CA registered)
    assert_valid_material(data, domain)

    sm = ctx["sm"]
    token_id = ctx["secrets"]["token_secret_id"]
    versions = sm.list_secret_version_ids(SecretId=token_id, IncludeDeprecated=True)["Versions"]
    assert len(versions) == 2  # the original and exactly one new version, even after a resume
    assert sm.get_secret_value(SecretId=token_id)["SecretString"] == new_token
    previous = sm.get_secret_value(SecretId=token_id, VersionStage="AWSPREVIOUS")
    assert previous["SecretString"] == site.site.token
    ca_doc = json.loads(
        sm.get_secret_value(SecretId=ctx["secrets"]["ca_secret_id"])["SecretString"]
    )
    assert ca_doc["ca.crt"] == (data / "ca.crt").read_text()
    for sid in (ctx["secrets"]["ca_secret_id"], ctx["secrets"]["tls_secret_id"]):
        assert len(sm.list_secret_version_ids(SecretId=sid)["Versions"]) == 1

    for token in ctx["oauth_tokens"]:
        assert not oauth_active(oauth, token)
    oauth_fps = {
        t["token_fingerprint"]
        for r in records
        if r.kind == "oauth.rotated"
        for t in r.data["tokens"]
    }
    assert oauth_fps == {fingerprint(t) for t in ctx["oauth_tokens"]}

    done = [r for r in records if r.kind == "rotation.completed"]
    assert len(done) == 1 and done[0].data["tunnel"]["id"] == new_id
    assert any(new_id in item for item in done[0].data["open_items"])
    assert_calls_were_planned(site, records)
    assert verify_dir(site.evidence / incident).ok
    return {"id": new_id, "token": new_token, "domain": domain, "records": records}


# -- end to end --------------------------------------------------------------------------


@pytest.mark.podman
@pytest.mark.prefect
@pytest.mark.parametrize(
    "point", ["before_create", "after_create", "after_record", "after_store", "after_register"]
)
def test_crash_at_every_boundary_then_resume_makes_one_tunnel(
    site: Site, tmp_path: Path, oauth_sandbox: Any, moto_server: str, point: str
) -> None:
    ctx = prepare(site, tmp_path, oauth_sandbox, moto_server)
    site.env["MCP_IR_FAILPOINT"] = f"{STEP}:{point}"
    crashed = site.run_auto_approved(ctx["playbook"])
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    assert f"failpoint {STEP}:{point}" in crashed.stderr
    incident = incident_of(crashed.stdout + crashed.stderr)
    posts_at_crash = len(new_tunnel_posts(site))
    assert posts_at_crash == (0 if point == "before_create" else 1)
    del site.env["MCP_IR_FAILPOINT"]

    resumed = site.run_auto_approved(ctx["playbook"], "--incident", incident)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    new = assert_rotated(site, incident, ctx, oauth_sandbox)
    created = [r.data for r in new["records"] if r.kind == "tunnel.created"]
    # Died after the create call but before recording it: the resumed run finds the
    # tunnel by its incident-derived display name instead of creating another.
    assert [c["adopted"] for c in created] == ([True] if point == "after_create" else [False])
    assert created[0]["display_name"] == f"mcp-ir {incident}"
    minted = [r for r in new["records"] if r.kind == "credentials.minted"]
    assert len(minted) == 1  # the CA generated once; a resume after storing reuses it
    if point in ("after_store", "after_register"):
        assert [r.kind for r in new["records"] if r.kind == "credentials.reused"] == [
            "credentials.reused"
        ]


@pytest.mark.podman
@pytest.mark.prefect
def test_contained_and_rotated_without_leaking_any_secret(
    site: Site, tmp_path: Path, oauth_sandbox: Any, moto_server: str
) -> None:
    ctx = prepare(site, tmp_path, oauth_sandbox, moto_server, playbook=FULL_PLAYBOOK)
    old_files = {n: (site.site.data_dir / n).read_bytes() for n in ("ca.key", "tls.key")}
    proc = site.run_auto_approved(ctx["playbook"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    incident = incident_of(proc.stdout + proc.stderr)
    new = assert_rotated(site, incident, ctx, oauth_sandbox)
    records = new["records"]
    stored = next(
        r for r in records if r.kind == "credentials.stored" and r.data["store"] == "data/"
    )
    assert all(f["action"] == "written" for f in stored.data["files"].values())
    assert stored.data["files"]["ca.key"]["previous_fingerprint"] == fingerprint(
        old_files["ca.key"]
    )

    data = site.site.data_dir
    secrets = [
        site.canary,
        site.site.token,
        site.sandbox.token,
        new["token"],
        (data / "ca.key").read_text().strip(),
        (data / "tls.key").read_text().strip(),
        old_files["ca.key"].decode().strip(),
        old_files["tls.key"].decode().strip(),
        oauth_sandbox.client_secret,
        *ctx["oauth_tokens"],
    ]
    # the key bodies, without the PEM armour a redactor pattern might match on its own
    secrets += ["".join((data / n).read_text().splitlines()[1:-1]) for n in ("ca.key", "tls.key")]
    evidence = b"".join(
        p.read_bytes() for p in (site.evidence / incident).rglob("*") if p.is_file()
    )
    report = (site.evidence / incident / "report.md").read_text()
    run_ids = [r.data["flow_run_id"] for r in records if r.kind in ("run.started", "run.resumed")]
    logs = prefect_log_text(run_ids)
    assert STEP in logs
    for secret in secrets:
        assert secret.encode() not in evidence
        assert secret not in report
        assert secret not in logs
        assert secret not in proc.stdout + proc.stderr
    assert new["token"] and fingerprint(new["token"]) in evidence.decode()


def prefect_log_text(flow_run_ids: list[str]) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids))
        )
    return "\n".join(log.message for log in logs)


# -- Helm, at the step level against the Kubernetes and Tunnels sandboxes -----------------


def helm_context(
    tmp_path: Path, k8s: Any, sandbox: Any, monkeypatch: Any, incident: str
) -> StepContext:
    from sandbox.anthropic_api import seed_state

    seeded = seed_state(sandbox.state, {"tunnels": [{"display_name": "helm site"}]})["tunnels"][0]
    monkeypatch.setenv("MCP_IR_TEST_HELM_TOKEN", sandbox.token)
    raw = {
        "people": DEFAULT_PEOPLE,
        "groups": DEFAULT_GROUPS,
        "targets": {
            "helm-site": {
                "kind": "helm",
                "sandbox": True,
                "helm": {"kubeconfig": str(k8s.kubeconfig)},
                "tunnel": {"id": seeded["id"], "domain": seeded["domain"]},
                "anthropic": {
                    "base_url": sandbox.url,
                    "credentials": {"bearer_env": "MCP_IR_TEST_HELM_TOKEN"},
                },
            }
        },
    }
    inventory = parse_inventory(raw, tmp_path / "inventory.yaml")
    target = inventory.target("helm-site")
    inc = Incident(
        incident,
        "helm-site",
        "breach-response",
        "alice",
        {},
        "high",
        None,
        None,
        True,
        "auto-approve",
    )
    trail = Trail.open(tmp_path / "evidence", incident, Redactor())
    return StepContext(inc, STEP, target, inventory, trail, Clients(target))


def test_helm_rotation_writes_the_release_secrets_and_resumes(
    tmp_path: Path, k8s: Any, anthropic_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    from kubernetes import client

    anthropic_sandbox.reset()
    incident = "INC-HELM-" + datetime.now(UTC).strftime("%H%M%S%f")
    ctx = helm_context(tmp_path, k8s, anthropic_sandbox, monkeypatch, incident)
    step = get_step(STEP)()
    plan = step.plan(ctx)
    assert "PATCH /api/v1/namespaces/mcp-tunnel/secrets/mcp-tunnel" in plan.api_calls
    assert step.check(ctx) is None
    outcome = step.apply(ctx)
    verified = step.verify(ctx)
    new_id = outcome["tunnel"]["id"]
    assert verified["tunnel"] == new_id and new_id != ctx.target.tunnel.id
    secret = client.CoreV1Api(k8s.api).read_namespaced_secret("mcp-tunnel", "mcp-tunnel").data
    values = {k: base64.b64decode(v).decode() for k, v in secret.items()}
    assert values["tunnel-id"] == new_id
    assert anthropic_sandbox.connect(values["tunnel-token"]) == 200
    assert (
        certificates.check_server_cert(values["tls.crt"], values["ca.crt"], values["tunnel-domain"])
        == []
    )
    assert outcome["stores"]["kubernetes"]["restarted"] is True
    # The CA key is kept beside ca.crt (the rotation drill renews the server cert from it).
    certificates.load_ca(values["ca.crt"], values["ca.key"])

    # A second attempt (as after a crash once everything was written) repeats nothing:
    # no second tunnel, the registered CA reused, no second rollout.
    again = step.apply(ctx)
    assert again["tunnel"]["id"] == new_id
    assert again["certificate"]["id"] == outcome["certificate"]["id"]
    assert again["stores"]["kubernetes"]["restarted"] is False
    posts = [
        c
        for c in anthropic_sandbox.calls("/v1/tunnels")
        if (c["method"], c["path"]) == ("POST", "/v1/tunnels")
    ]
    assert len(posts) == 1
    certs = tunnels.list_certificates(ctx.clients.anthropic, new_id)
    assert len(certs) == 1
    assert step.check(ctx) is not None  # completed: a resumed run skips apply
    kinds = [r.kind for r in ctx.trail.records()]
    assert kinds.count("credentials.minted") == 1 and "credentials.reused" in kinds
    dumped = (tmp_path / "evidence" / incident / "trail.jsonl").read_text()
    assert values["tunnel-token"] not in dumped and values["tls.key"].strip() not in dumped
    assert values["ca.key"].strip() not in dumped


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (
            {"aws": {"secrets_manager": {"token_secret_id": ""}}},
            "aws.secrets_manager.token_secret_id",
        ),
        ({"aws": {"region": "Mars"}}, "aws.region"),
        (
            {"aws": {"secrets_manager": {"token_secret_id": "x", "vault": 1}}},
            "aws.secrets_manager.vault",
        ),
        ({"upstream_servers": [{"name": "a"}]}, "upstream_servers.0.revocation_endpoint"),
    ],
)
def test_bad_rotation_config_names_the_field(tmp_path: Path, patch: dict, field: str) -> None:
    target = {
        "kind": "compose",
        "compose": {"project": "p", "data_dir": str(tmp_path / "data")},
        "tunnel": {"id": "tnl_abc"},
        "anthropic": {"credentials": {"bearer_env": "X"}},
        **patch,
    }
    with pytest.raises(ConfigError) as err:
        parse_inventory({"targets": {"t": target}}, tmp_path / "inv.yaml")
    assert f"field '{field}'" in err.value.detail


def test_duplicate_upstream_server_names_are_refused(tmp_path: Path) -> None:
    server = {
        "name": "github-mcp",
        "revocation_endpoint": "http://as.example/revoke",
        "introspection_endpoint": "http://as.example/introspect",
        "client_id": "c",
        "client_secret_env": "S",
        "tokens": {"kind": "file", "path": "/x"},
    }
    target = {
        "kind": "compose",
        "compose": {"project": "p", "data_dir": str(tmp_path / "data")},
        "tunnel": {"id": "tnl_abc"},
        "anthropic": {"credentials": {"bearer_env": "X"}},
        "upstream_servers": [server, server],
    }
    with pytest.raises(ConfigError) as err:
        parse_inventory({"targets": {"t": target}}, tmp_path / "inv.yaml")
    assert "field 'upstream_servers'" in err.value.detail and "github-mcp" in err.value.detail
