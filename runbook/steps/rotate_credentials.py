"""rotate_credentials: a fresh tunnel (exactly once per incident), a new CA and server
certificate, the new token in the target's store, and the upstream OAuth tokens revoked.

Phases, each resumable, each followed by its evidence and a failpoint:

1. **Tunnel, exactly once.** ``tunnels.create`` is not idempotent (a retry makes a
   second tunnel), so the step records ``tunnel.create_intent`` first, creates the
   tunnel under a display name derived from the incident id (``mcp-ir <incident>``),
   then records ``tunnel.created``. A resumed run trusts ``tunnel.created`` if it is
   in the trail; otherwise it lists every tunnel (archived included) with that
   display name and adopts the one a crashed attempt created before it would ever
   create again. Failpoints: ``before_create``, ``after_create`` (created, not
   recorded), ``after_record``.
2. **Material.** The new token comes from ``reveal_token``. The CA and server
   certificate are read back from the target's store if an earlier attempt wrote
   them for this incident and this tunnel's domain, else minted.
3. **Store, then register.** Material is written to the target driver's store
   (Compose ``data/``, the Helm Secrets; then AWS Secrets Manager when configured) BEFORE the CA is
   registered: a registered CA therefore always has its key and server certificate
   in the store, and unregistered material can be minted again without leaving an
   orphan on the tunnel (which only accepts traffic once a CA is registered).
   Failpoints: ``after_store``, ``after_register``.
4. **Upstream OAuth tokens**: introspect → revoke (RFC 7009) → introspect (RFC 7662)
   for every token of every ``upstream_servers`` entry (``after_oauth``).

Only ids and fingerprints enter the trail. The inventory's ``tunnel.id`` still names
the archived tunnel afterwards: the step records an ``open_item`` for operators.
"""

from __future__ import annotations

from typing import Any

from core import failpoints
from core.errors import StepFailed, TransientError
from core.operations import Operation
from core.redact import fingerprint
from runbook.context import StepContext
from runbook.registry import Plan, Step, register
from runbook.steps import _rotation as rot
from targets import base

NEW = "{new}"  # placeholder for the new tunnel's id: unknown when the plan is made


@register
class RotateCredentials(Step):
    key = "rotate_credentials"
    reversible = False
    needs = frozenset({base.READ_CREDENTIALS, base.WRITE_CREDENTIALS})
    description = (
        "Re-provision a fresh tunnel once, new CA + server certificate + token into the "
        "target's store, revoke upstream OAuth tokens"
    )

    # -- plan -------------------------------------------------------------------------
    def plan(self, ctx: StepContext) -> Plan:
        # Nothing here depends on the incident: ``mcp-ir plan`` shows the same plan,
        # with the same hash, as the gate of a run (the display name is derived from
        # the incident id at run time, by a fixed rule).
        name = rot.display_name("{incident}")
        t = ctx.target
        store = ctx.driver.store_rotated_plan(ctx)
        resources = [f"tunnel:{NEW} (display name {name!r})", *store.resources]
        reads = [
            "GET /v1/tunnels?include_archived=true",
            f"GET /v1/tunnels/{NEW}/certificates",
        ]
        ops = [
            Operation("anthropic", "POST", "/v1/tunnels"),  # once: see the module docstring
            Operation("anthropic", "POST", f"/v1/tunnels/{NEW}/reveal_token"),
            Operation("anthropic", "POST", f"/v1/tunnels/{NEW}/certificates"),
            *store.operations,
        ]
        sm = t.aws.secrets_manager if t.aws else None
        if sm is not None:
            for secret_id in (sm.token_secret_id, sm.ca_secret_id, sm.tls_secret_id):
                if secret_id:
                    resources.append(f"aws-secret:{secret_id}")
                    ops.append(Operation("aws", "secretsmanager:PutSecretValue", secret_id))
                    ops.append(
                        Operation("aws", "secretsmanager:CreateSecret", secret_id, note="if absent")
                    )
        for server in t.upstream_servers:
            resources.append(f"oauth-client:{server.name}")
            ops.append(Operation("oauth", "POST", server.revocation_endpoint))
            # Read-only (RFC 7662) but a POST: listed so the guard admits it.
            ops.append(Operation("oauth", "POST", server.introspection_endpoint))
        return self.new_plan(
            ctx,
            summary=f"create ONE new tunnel {name!r}, register a new CA, write the new token, "
            f"CA and server certificate to the {ctx.driver.store_name} store"
            + (" and AWS Secrets Manager" if sm else "")
            + f"; revoke the tokens of {len(t.upstream_servers)} upstream OAuth server(s)",
            resources=resources,
            api_calls=reads,
            operations=ops,
            parameters={"display_name": name, "store": ctx.driver.store_name},
        )

    # -- check / apply ----------------------------------------------------------------
    def check(self, ctx: StepContext) -> str | None:
        done = ctx.step_records("rotation.completed")
        if done:
            return f"credentials already rotated to tunnel {done[-1].data['tunnel']['id']}"
        return None

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import tunnels

        client = ctx.clients.anthropic
        tunnel = self._tunnel(ctx)
        token = tunnels.reveal_token(client, tunnel.id)
        rot.protect(ctx.redactor, token.token.get_secret_value())
        ctx.record("tunnel.token_revealed", token.evidence())

        aws = self._aws_client(ctx)
        material = self._material(ctx, tunnel, aws)
        stored = self._store(ctx, tunnel, token.token.get_secret_value(), material, aws)
        failpoints.reach(self.key, "after_store")

        cert = tunnels.register_ca(client, tunnel.id, material.ca_crt)
        ctx.record("ca.registered", cert.evidence())
        failpoints.reach(self.key, "after_register")

        oauth = self._oauth(ctx, aws)
        failpoints.reach(self.key, "after_oauth")

        note = (
            f"update the inventory: target {ctx.incident.target!r} tunnel.id {ctx.target.tunnel.id}"
            f" -> {tunnel.id} (domain {tunnel.domain}); every MCP URL under "
            f"{ctx.target.tunnel.domain or 'the old domain'} must move to the new domain"
        )
        ctx.record("open_item", {"note": note, "new_tunnel_id": tunnel.id})
        summary = {
            "tunnel": tunnel.evidence(),
            "certificate": cert.evidence(),
            "token": token.evidence(),
            "material": material.evidence(),
            "stores": stored,
            "oauth": oauth,
            "open_items": [note],
        }
        ctx.record("rotation.completed", summary)
        return summary

    def _tunnel(self, ctx: StepContext) -> Any:
        """The incident's new tunnel: from the trail, else found by display name, else
        created — exactly once, whatever point an earlier attempt died at."""
        from tasks import tunnels

        client = ctx.clients.anthropic
        created = ctx.step_records("tunnel.created")
        if created:
            return tunnels.get_tunnel(client, created[-1].data["id"])
        name = rot.display_name(ctx.incident.id)
        found = self._adopt(ctx, name)
        if found is not None:
            return found
        ctx.record("tunnel.create_intent", {"display_name": name})
        failpoints.reach(self.key, "before_create")
        try:
            record = tunnels.create_tunnel(client, name)
        except TransientError:
            # Failed in transit: the server may have created it anyway.
            record = self._adopt(ctx, name)
            if record is None:
                raise
            return record
        failpoints.reach(self.key, "after_create")
        ctx.record("tunnel.created", {**record.evidence(), "adopted": False})
        failpoints.reach(self.key, "after_record")
        return record

    def _adopt(self, ctx: StepContext, name: str) -> Any:
        from tasks import tunnels

        found = tunnels.find_tunnels(ctx.clients.anthropic, name, include_archived=True)
        if not found:
            return None
        if len(found) > 1 or found[0].archived:
            ids = ", ".join(f"{t.id}{' (archived)' if t.archived else ''}" for t in found)
            raise StepFailed(
                self.key,
                f"tunnels named {name!r} already exist ({ids}); refusing to create another: "
                "an operator must decide which one is this incident's",
            )
        ctx.record("tunnel.created", {**found[0].evidence(), "adopted": True})
        return found[0]

    def _aws_client(self, ctx: StepContext) -> Any:
        from tasks.oauth_tokens import AwsSecretTokenStore

        t = ctx.target
        needs = (t.aws is not None and t.aws.secrets_manager is not None) or any(
            isinstance(s.tokens, AwsSecretTokenStore) for s in t.upstream_servers
        )
        if not needs:
            return None
        from runbook.guarded import guard_boto3

        return guard_boto3(rot.secrets_client(t.aws.region if t.aws else None), ctx.guard)

    def _stored_material(self, ctx: StepContext, aws: Any) -> rot.Material | None:
        sm = ctx.target.aws.secrets_manager if ctx.target.aws else None
        return rot.material_from(
            ctx.driver.read_credentials(ctx),
            rot.read_aws_ca_key(aws, sm),
            need_ca_key=ctx.driver.keeps_ca_key,
        )

    def _material(self, ctx: StepContext, tunnel: Any, aws: Any) -> rot.Material:
        """Material an earlier attempt stored for this incident and domain, else new."""
        from tasks import tunnels

        existing = self._stored_material(ctx, aws)
        if existing is not None and not existing.problems(ctx.incident.id, tunnel.domain):
            rot.protect(ctx.redactor, *existing.secrets())
            ctx.record("credentials.reused", existing.evidence())
            return existing
        registered = tunnels.list_certificates(ctx.clients.anthropic, tunnel.id)
        if registered:
            raise StepFailed(
                self.key,
                f"tunnel {tunnel.id} already has CA {registered[0].fingerprint} registered but "
                "its material is not in the store; archive that certificate and run again",
            )
        material = rot.mint(ctx.incident.id, tunnel.domain)
        rot.protect(ctx.redactor, *material.secrets())
        ctx.record("credentials.minted", material.evidence())
        return material

    def _store(
        self, ctx: StepContext, tunnel: Any, token: str, material: rot.Material, aws: Any
    ) -> dict[str, Any]:
        t = ctx.target
        values = rot.store_values(tunnel.id, tunnel.domain, token, material)
        key, data = ctx.driver.store_rotated(ctx, values)
        stored: dict[str, Any] = {key: data}
        sm = t.aws.secrets_manager if t.aws else None
        if sm is not None:
            versions = rot.write_aws(aws, sm, ctx.incident.id, token, material)
            stored["aws"] = [v.as_dict() for v in versions]
            ctx.record(
                "credentials.stored", {"store": "aws-secrets-manager", "versions": stored["aws"]}
            )
        return stored

    def _oauth(self, ctx: StepContext, aws: Any) -> list[dict[str, Any]]:
        servers = list(ctx.target.upstream_servers)
        if not servers:
            return []

        from tasks import oauth_tokens

        for server in servers:
            rot.protect(
                ctx.redactor,
                *[
                    tok.value.get_secret_value()
                    for tok in oauth_tokens.load_tokens(server, secrets_client=aws)
                ],
            )
        from runbook.guarded import guarded_http

        with guarded_http(ctx.guard, "oauth") as http:
            results = oauth_tokens.rotate_upstream_tokens(servers, http=http, secrets_client=aws)
        rotated = [r.as_dict() for r in results]
        ctx.record("oauth.rotated", {"tokens": rotated})
        return rotated

    # -- verify -----------------------------------------------------------------------
    def verify(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import aws_secrets, tunnels

        created = ctx.last_record("tunnel.created", "no new tunnel recorded for this incident")
        tunnel = tunnels.get_tunnel(ctx.clients.anthropic, created.data["id"])
        if tunnel.archived:
            raise StepFailed(self.key, f"new tunnel {tunnel.id} is archived")
        t = ctx.target
        token_fp = ctx.step_records("tunnel.token_revealed")[-1].data["token"]
        values = ctx.driver.read_credentials(ctx)
        material = rot.material_from(values, None, need_ca_key=ctx.driver.keeps_ca_key)
        problems: list[str] = list(ctx.driver.credential_problems(ctx))
        if fingerprint(values.get("tunnel-token", "").strip()) != token_fp:
            where = ctx.driver.credential_source(ctx, "tunnel-token")
            problems.append(f"{where} does not hold the new tunnel's token")
        if (
            values.get("tunnel-id", "").strip() != tunnel.id
            or values.get("tunnel-domain", "").strip() != tunnel.domain
        ):
            ids = ", ".join(
                ctx.driver.credential_source(ctx, k) for k in ("tunnel-id", "tunnel-domain")
            )
            problems.append(f"{ids}: do not name the new tunnel")
        if material is None:
            raise StepFailed(self.key, "the store does not hold the new CA and server certificate")
        problems += material.problems(ctx.incident.id, tunnel.domain)
        active = {
            c.fingerprint for c in tunnels.list_certificates(ctx.clients.anthropic, tunnel.id)
        }
        if material.ca_fingerprint not in active:
            problems.append(f"the stored CA is not registered on tunnel {tunnel.id}")
        sm = t.aws.secrets_manager if t.aws else None
        if sm is not None:
            aws = rot.secrets_client(t.aws.region if t.aws else None)
            aws_records = [
                r for r in ctx.step_records("credentials.stored") if "versions" in r.data
            ]
            for v in aws_records[-1].data["versions"] if aws_records else []:
                current = [
                    x.version_id
                    for x in aws_secrets.describe_versions(aws, v["secret_id"])
                    if aws_secrets.CURRENT in x.stages
                ]
                if current != [v["version_id"]]:
                    problems.append(f"secret {v['secret_id']}: new version is not AWSCURRENT")
        if problems:
            raise StepFailed(self.key, "; ".join(problems))
        return {
            "tunnel": tunnel.id,
            "domain": tunnel.domain,
            "ca_fingerprint": material.ca_fingerprint,
            "token": token_fp,
        }
