"""Shared state of the Anthropic API sandbox: tokens, tunnels, sessions, agents, the
call log and injected faults.

Every mutation happens under ``SandboxState.lock`` (an ``RLock``): uvicorn serves the
app from one thread, but tests and the ``/_sandbox`` endpoints reach the same state
from others.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.redact import fingerprint

# Body/response keys whose values are credentials: the call log keeps fingerprints.
SECRET_KEYS = frozenset(
    {"tunnel_token", "access_token", "refresh_token", "assertion", "token", "tokens"}
)


class ApiError(Exception):
    """An error the sandbox answers with the real API's error body."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, "not_found_error", f"{kind} not found: {ident}")


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def new_id(prefix: str) -> str:
    """An id in the API's style: a prefix and 24 base62-ish characters."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(24))


def new_tunnel_token() -> str:
    """A connector token shaped like cloudflared's: base64 of ``{"a","t","s"}``."""
    payload = {
        "a": secrets.token_hex(16),
        "t": _uuid4(),
        "s": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


def _uuid4() -> str:
    return str(uuid.uuid4())


def scrub(value: Any) -> Any:
    """Replaces every credential value inside a JSON-like structure by its fingerprint."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in SECRET_KEYS and isinstance(v, str):
                out[k] = fingerprint(v)
            elif k in SECRET_KEYS and isinstance(v, list):
                out[k] = [fingerprint(x) if isinstance(x, str) else scrub(x) for x in v]
            else:
                out[k] = scrub(v)
        return out
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


@dataclass
class Certificate:
    id: str
    tunnel_id: str
    fingerprint: str
    pem: str
    created_at: datetime
    expires_at: datetime | None
    archived_at: datetime | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "type": "tunnel_certificate",
            "id": self.id,
            "tunnel_id": self.tunnel_id,
            "fingerprint": self.fingerprint,
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at),
            "archived_at": rfc3339(self.archived_at),
        }


@dataclass
class Tunnel:
    id: str
    domain: str
    display_name: str | None
    created_at: datetime
    token: str
    token_id: str
    archived_at: datetime | None = None
    certificates: list[Certificate] = field(default_factory=list)
    rotations: list[dict[str, Any]] = field(default_factory=list)

    def to_api(self) -> dict[str, Any]:
        return {
            "type": "tunnel",
            "id": self.id,
            "display_name": self.display_name,
            "domain": self.domain,
            "created_at": rfc3339(self.created_at),
            "archived_at": rfc3339(self.archived_at),
        }

    def active_certificates(self) -> list[Certificate]:
        return [c for c in self.certificates if c.archived_at is None]


@dataclass
class IdlePolicy:
    """When a running session reaches ``idle`` after a ``user.interrupt``.

    ``mode`` is ``immediate``, ``polls`` (after ``polls`` retrieves), ``seconds``
    (after ``seconds``) or ``never``.
    """

    mode: str = "immediate"
    polls: int = 0
    seconds: float = 0.0


@dataclass
class Session:
    id: str
    status: str
    agent: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    title: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    archived_at: datetime | None = None
    idle_policy: IdlePolicy = field(default_factory=IdlePolicy)
    interrupted_at: float | None = None
    polls_since_interrupt: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Agent:
    id: str
    name: str
    versions: list[dict[str, Any]]  # index v-1 holds version v, each a full API object
    created_at: datetime
    archived_at: datetime | None = None


@dataclass
class WifConfig:
    """What the token endpoint accepts: the seeded assertions and identifiers."""

    assertions: set[str] = field(default_factory=set)
    federation_rule_id: str = "fdrl_sandbox"
    organization_id: str = "00000000-0000-4000-8000-000000000000"
    service_account_id: str = "svac_sandbox"
    workspace_ids: set[str] = field(default_factory=lambda: {"default"})
    expires_in: int = 3600


@dataclass
class Fault:
    """Fails the next ``count`` requests whose path matches ``path`` (fnmatch).

    ``after``: the request is applied first (the tunnel is created, the token
    rotated…) and only its answer fails: what a client sees when a response is lost
    after the server acted. ``drop``: instead of an error answer, the connection
    breaks in the middle of the response. ``retry_after`` (seconds) and
    ``retry_after_ms`` set the headers the SDK obeys between its retries.
    """

    path: str
    status: int
    count: int
    method: str | None = None
    error_type: str | None = None
    message: str = "injected fault"
    retry_after_ms: int | None = None
    retry_after: int | None = None
    after: bool = False
    drop: bool = False


class SandboxState:
    """Everything the sandbox knows. Use ``with state.lock:`` around any access."""

    def __init__(self, *, workspace_token: str | None = None) -> None:
        self.lock = threading.RLock()
        self.workspace_token = workspace_token or "sk-ant-oat01-sandbox-" + secrets.token_urlsafe(
            24
        )
        self.reset()

    def reset(self) -> None:
        """Forgets every object, call and fault; keeps the seeded workspace token."""
        with self.lock:
            self.bearer_tokens: dict[str, float | None] = {self.workspace_token: None}
            self.wif = WifConfig()
            self.tunnels: dict[str, Tunnel] = {}
            self.sessions: dict[str, Session] = {}
            self.agents: dict[str, Agent] = {}
            self.calls: list[dict[str, Any]] = []
            self.faults: list[Fault] = []
            self.tunnel_cap = 10
            self.certificate_cap = 2

    def token_valid(self, token: str) -> bool:
        with self.lock:
            if token not in self.bearer_tokens:
                return False
            expires = self.bearer_tokens[token]
            return expires is None or expires > time.time()

    def mint_token(self, ttl: int) -> str:
        token = "sk-ant-oat01-wif-" + secrets.token_urlsafe(32)
        with self.lock:
            self.bearer_tokens[token] = time.time() + ttl
        return token

    def take_fault(self, method: str, path: str) -> Fault | None:
        """Consumes one matching fault, if any."""
        with self.lock:
            for fault in self.faults:
                if fault.count <= 0:
                    continue
                if fault.method and fault.method.upper() != method.upper():
                    continue
                if fnmatch.fnmatchcase(path, fault.path):
                    fault.count -= 1
                    return fault
            return None

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.calls.append(entry)
