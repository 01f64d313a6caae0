"""The Anthropic API sandbox served over HTTP once per test session.

``anthropic_sandbox`` yields an :class:`AnthropicSandbox`: ``.url`` and ``.token`` (a
valid workspace bearer token) for building a real SDK client, plus ``.calls()``,
``.reset()``, ``.seed(...)``, ``.fault(...)`` and ``.connect(token)`` which talk to the
sandbox's ``/_sandbox`` endpoints over HTTP. ``anthropic_client`` is a function
fixture: the sandbox reset, and an SDK client built by ``tasks.anthropic_client``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from core import certbuild
from sandbox.anthropic_api import create_app
from sandbox.anthropic_state import SandboxState
from sandbox.serve import serve_in_thread
from tasks.anthropic_client import build_client

TOKEN_ENV = "MCP_IR_TEST_ANTHROPIC_TOKEN"


@dataclass
class AnthropicSandbox:
    """Handle on the running sandbox; every helper goes over HTTP."""

    url: str
    token: str
    state: SandboxState

    def _post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.post(self.url + path, json=body or {}, timeout=10)

    def calls(self, path_prefix: str = "/v1/") -> list[dict[str, Any]]:
        """Recorded requests (secrets fingerprinted) whose path starts with the prefix."""
        response = httpx.get(self.url + "/_sandbox/calls", timeout=10)
        response.raise_for_status()
        return [c for c in response.json() if c["path"].startswith(path_prefix)]

    def reset(self) -> None:
        self._post("/_sandbox/reset").raise_for_status()

    def seed(self, **body: Any) -> dict[str, Any]:
        response = self._post("/_sandbox/seed", body)
        response.raise_for_status()
        return response.json()

    def fault(self, path: str, status: int, count: int = 1, **extra: Any) -> None:
        """Fails the next ``count`` requests to ``path`` (fnmatch) with ``status``; the
        answer carries ``retry-after-ms: 10`` unless told otherwise, so SDK retries
        stay fast."""
        body = {"path": path, "status": status, "count": count, "retry_after_ms": 10, **extra}
        self._post("/_sandbox/faults", body).raise_for_status()

    def connect(self, tunnel_token: str) -> int:
        """Status of a cloudflared-style connection attempt with this token."""
        return self._post("/_sandbox/tunnel-connect", {"tunnel_token": tunnel_token}).status_code


@pytest.fixture(scope="session")
def anthropic_sandbox() -> Iterator[AnthropicSandbox]:
    """One sandbox server for the whole session; tests call ``.reset()`` as needed."""
    state = SandboxState()
    handle = serve_in_thread(create_app(state))
    try:
        yield AnthropicSandbox(url=handle.url, token=state.workspace_token, state=state)
    finally:
        handle.stop()


@pytest.fixture
def anthropic_client(
    anthropic_sandbox: AnthropicSandbox, monkeypatch: pytest.MonkeyPatch
) -> anthropic.Anthropic:
    """A fresh sandbox (reset) and a real SDK client with a bearer token from the env."""
    anthropic_sandbox.reset()
    monkeypatch.setenv(TOKEN_ENV, anthropic_sandbox.token)
    return build_client(anthropic_sandbox.url, bearer_env=TOKEN_ENV, max_retries=2, timeout=10)


WIF_ORG = "00000000-0000-4000-8000-000000000000"


def wif_client(
    url: str, token_file: Any, assertion: str, *, organization_id: str = WIF_ORG, **ids: str
) -> anthropic.Anthropic:
    """A real SDK client that authenticates by workload identity federation (rule
    ``fdrl_ir``): ``assertion`` is written to ``token_file`` as the projected token."""
    token_file.write_text(assertion)
    identity = {
        "identity_token_file": str(token_file),
        "federation_rule_id": "fdrl_ir",
        "organization_id": organization_id,
        **ids,
    }
    return build_client(url, workload_identity=identity)


def make_ca(
    *,
    ca: bool = True,
    critical: bool = True,
    ski: bool = True,
    key_cert_sign: bool = True,
    key: str = "ec256",
    digest: str = "sha256",
    common_name: str = "test CA",
) -> str:
    """A self-signed PEM certificate built with ``cryptography``. The defaults make a
    valid CA; each argument can break one rule. ``key`` is one of ec256, ec384,
    ec224, rsa2048, rsa1024; ``digest`` one of sha256, sha384, sha224 (OpenSSL here
    refuses to sign with SHA-1, so SHA-224 stands for a weak digest)."""
    if key == "rsa2048":
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif key == "rsa1024":
        private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    elif key == "ec224":
        private = ec.generate_private_key(ec.SECP224R1())
    elif key == "ec384":
        private = ec.generate_private_key(ec.SECP384R1())
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    builder = certbuild.ca_builder(
        private.public_key(),
        certbuild.subject(common_name),
        start=start,
        days=30,
        ca=ca,
        path_length=None,
        bc_critical=critical,
        usage=certbuild.key_usage(digital_signature=True, key_cert_sign=key_cert_sign),
        ski=ski,
    )
    algorithm = {"sha256": hashes.SHA256(), "sha224": hashes.SHA224(), "sha384": hashes.SHA384()}
    return certbuild.cert_pem(builder.sign(private, algorithm[digest]))
