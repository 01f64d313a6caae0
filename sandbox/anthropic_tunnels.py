"""Tunnels API semantics (FACTS §2) over :class:`SandboxState`.

Choices where the public reference names no error: exceeding the 10-tunnel or the
2-certificate cap answers 400 ``invalid_request_error`` (the API reference uses that
type for request-content problems "and other 4XX" cases; a 429 or 409 would make
the SDK retry a request that can never succeed).
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from sandbox.anthropic_ca import validate_ca_pem
from sandbox.anthropic_state import (
    Certificate,
    SandboxState,
    Tunnel,
    invalid,
    new_id,
    new_tunnel_token,
    not_found,
    now,
)

DOMAIN_SUFFIX = "tunnels.sandbox.example"
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def _get(state: SandboxState, tunnel_id: str) -> Tunnel:
    tunnel = state.tunnels.get(tunnel_id)
    if tunnel is None:
        raise not_found("tunnel", tunnel_id)
    return tunnel


def paginate(
    items: list[dict[str, Any]], query: dict[str, str], *, bidirectional: bool = False
) -> dict[str, Any]:
    """One cursor page of ``items`` (already in order) as the SDK's cursor pages read it.

    The cursor is opaque to callers: base64 of the offset of the next item.
    """
    raw_limit = query.get("limit")
    if raw_limit is None:
        limit = DEFAULT_LIMIT
    else:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise invalid(f"limit: must be an integer (got {raw_limit!r})") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise invalid(f"limit: must be between 1 and {MAX_LIMIT} (got {limit})")
    offset = 0
    if query.get("page"):
        offset = _decode_cursor(query["page"])
    chunk = items[offset : offset + limit]
    end = offset + len(chunk)
    page: dict[str, Any] = {
        "data": chunk,
        "next_page": _encode_cursor(end) if end < len(items) else None,
    }
    if bidirectional:
        page["prev_page"] = _encode_cursor(max(offset - limit, 0)) if offset > 0 else None
    return page


def _encode_cursor(offset: int) -> str:
    return "page_" + base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def _decode_cursor(cursor: str) -> int:
    try:
        if not cursor.startswith("page_"):
            raise ValueError(cursor)
        offset = json.loads(base64.urlsafe_b64decode(cursor[5:].encode()))["o"]
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(cursor)
        return offset
    except (ValueError, KeyError, TypeError):
        raise invalid("page: invalid pagination cursor") from None


def _bool(query: dict[str, str], name: str) -> bool:
    value = query.get(name, "false").lower()
    if value not in ("true", "false"):
        raise invalid(f"{name}: must be true or false (got {value!r})")
    return value == "true"


def create_tunnel(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/tunnels. Not idempotent: every call is a new tunnel and a new domain."""
    display_name = body.get("display_name")
    if display_name is not None and (
        not isinstance(display_name, str) or not 1 <= len(display_name) <= 255
    ):
        raise invalid("display_name: must be a string of 1-255 characters")
    with state.lock:
        live = [t for t in state.tunnels.values() if t.archived_at is None]
        if len(live) >= state.tunnel_cap:
            raise invalid(
                f"Tunnel limit reached: at most {state.tunnel_cap} non-archived tunnels per "
                "workspace. Archive a tunnel before creating another."
            )
        tunnel = new_tunnel(state, display_name)
        return tunnel.to_api()


def new_tunnel(
    state: SandboxState, display_name: str | None, *, domain: str | None = None
) -> Tunnel:
    """Adds a tunnel (no cap check: callers decide) and returns it."""
    with state.lock:
        tunnel = Tunnel(
            id=new_id("tnl_"),
            domain=domain or f"{secrets.token_hex(6)}.{DOMAIN_SUFFIX}",
            display_name=display_name,
            created_at=now(),
            token=new_tunnel_token(),
            token_id=new_id("ttok_"),
        )
        state.tunnels[tunnel.id] = tunnel
        return tunnel


def list_tunnels(state: SandboxState, query: dict[str, str]) -> dict[str, Any]:
    """GET /v1/tunnels: newest first; archived ones only with include_archived=true."""
    include_archived = _bool(query, "include_archived")
    with state.lock:
        tunnels = sorted(state.tunnels.values(), key=lambda t: t.created_at, reverse=True)
        items = [t.to_api() for t in tunnels if include_archived or t.archived_at is None]
    return paginate(items, query)


def retrieve_tunnel(state: SandboxState, tunnel_id: str) -> dict[str, Any]:
    with state.lock:
        return _get(state, tunnel_id).to_api()


def archive_tunnel(state: SandboxState, tunnel_id: str) -> dict[str, Any]:
    """Archives the tunnel and every certificate and invalidates the token. A repeat
    returns the record unchanged."""
    with state.lock:
        tunnel = _get(state, tunnel_id)
        if tunnel.archived_at is None:
            stamp = now()
            tunnel.archived_at = stamp
            for cert in tunnel.certificates:
                if cert.archived_at is None:
                    cert.archived_at = stamp
            tunnel.token = ""  # no token connects any more
        return tunnel.to_api()


def reveal_token(state: SandboxState, tunnel_id: str) -> dict[str, Any]:
    with state.lock:
        tunnel = _get(state, tunnel_id)
        if tunnel.archived_at is not None:
            raise invalid(f"tunnel {tunnel_id} is archived; its token is no longer valid")
        return {"type": "tunnel_token", "id": tunnel.token_id, "tunnel_token": tunnel.token}


def rotate_token(state: SandboxState, tunnel_id: str, body: dict[str, Any]) -> dict[str, Any]:
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise invalid("reason: must be a string or null")
    with state.lock:
        tunnel = _get(state, tunnel_id)
        if tunnel.archived_at is not None:
            raise invalid(f"tunnel {tunnel_id} is archived; its token cannot be rotated")
        tunnel.token = new_tunnel_token()
        tunnel.token_id = new_id("ttok_")
        tunnel.rotations.append({"reason": reason, "at": now()})
        return {"type": "tunnel_token", "id": tunnel.token_id, "tunnel_token": tunnel.token}


def create_certificate(state: SandboxState, tunnel_id: str, body: dict[str, Any]) -> dict[str, Any]:
    with state.lock:
        tunnel = _get(state, tunnel_id)
        if tunnel.archived_at is not None:
            raise invalid(f"tunnel {tunnel_id} is archived; certificates cannot be added")
    checked = validate_ca_pem(body.get("ca_certificate_pem"))
    with state.lock:
        if len(tunnel.active_certificates()) >= state.certificate_cap:
            raise invalid(
                f"Certificate limit reached: at most {state.certificate_cap} non-archived "
                f"certificates per tunnel. Archive one of tunnel {tunnel_id}'s certificates first."
            )
        cert = Certificate(
            id=new_id("tcrt_"),
            tunnel_id=tunnel.id,
            fingerprint=checked.fingerprint,
            pem=body["ca_certificate_pem"],
            created_at=now(),
            expires_at=checked.expires_at,
        )
        tunnel.certificates.append(cert)
        return cert.to_api()


def _get_cert(tunnel: Tunnel, cert_id: str) -> Certificate:
    for cert in tunnel.certificates:
        if cert.id == cert_id:
            return cert
    raise not_found("certificate", cert_id)


def list_certificates(state: SandboxState, tunnel_id: str, query: dict[str, str]) -> dict[str, Any]:
    include_archived = _bool(query, "include_archived")
    with state.lock:
        tunnel = _get(state, tunnel_id)
        certs = sorted(tunnel.certificates, key=lambda c: c.created_at, reverse=True)
        items = [c.to_api() for c in certs if include_archived or c.archived_at is None]
    return paginate(items, query)


def retrieve_certificate(state: SandboxState, tunnel_id: str, cert_id: str) -> dict[str, Any]:
    with state.lock:
        return _get_cert(_get(state, tunnel_id), cert_id).to_api()


def archive_certificate(state: SandboxState, tunnel_id: str, cert_id: str) -> dict[str, Any]:
    """Archives one certificate (repeat: unchanged). With none left the tunnel rejects
    traffic."""
    with state.lock:
        cert = _get_cert(_get(state, tunnel_id), cert_id)
        if cert.archived_at is None:
            cert.archived_at = now()
        return cert.to_api()


def tunnel_connect(state: SandboxState, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Stands in for "cloudflared with this token can connect": 200 only for the
    current token of a non-archived tunnel that has at least one active certificate."""
    token = body.get("tunnel_token")
    if not isinstance(token, str) or not token:
        return 400, {"connected": False, "reason": "tunnel_token: Field required"}
    with state.lock:
        for tunnel in state.tunnels.values():
            if tunnel.token and secrets.compare_digest(tunnel.token, token):
                if tunnel.archived_at is not None:
                    break
                if not tunnel.active_certificates():
                    return 403, {
                        "connected": False,
                        "tunnel_id": tunnel.id,
                        "reason": "tunnel has no active CA certificate; traffic is rejected",
                    }
                return 200, {"connected": True, "tunnel_id": tunnel.id, "domain": tunnel.domain}
    return 403, {"connected": False, "reason": "token is not the current token of a live tunnel"}
