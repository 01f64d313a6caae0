"""SSH signatures over decision statements, in OpenSSH's own format (SSHSIG).

A person signs with their own SSH key exactly as ``git`` signs commits: the
statement is signed by ``ssh-keygen -Y sign -n NAMESPACE`` (so a key held in
``ssh-agent``, a hardware token or a passphrase-protected file all work), and the
signature is checked with the maintained ``sshsig`` library, a port of
``ssh-keygen -Y verify`` (fast enough to re-check every approval of every trail
offline). Nothing here parses SSHSIG by hand.

Which key signs: ``--key PATH`` (a private key, or a ``.pub`` whose private half is
in the agent), else ``$MCP_IR_SSH_KEY``, else the agent (``ssh-add -L``): the first
of the agent's keys that the inventory lists for the person, else its first key
(which the flow then refuses as not the person's, and records).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ApprovalRefused, ConfigError

# A namespace of ours (as git uses "git"): a signature made for anything else, e.g. a
# signed commit or file, never verifies as a decision, and vice versa.
NAMESPACE = "mcp-ir-decision@mcp-ir"
KEY_ENV = "MCP_IR_SSH_KEY"
SUPPORTED_TYPES = ("ssh-ed25519", "ssh-rsa")
_SIGN_TIMEOUT_S = 120.0  # a hardware key may wait for a touch


def canonical_json(value: dict[str, Any]) -> bytes:
    """The exact bytes that are signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_public_key(line: str) -> tuple[str, bytes]:
    """``"ssh-ed25519 AAAA… comment"`` → (type, key blob).

    Raises:
        ValueError: not an OpenSSH public key line of a supported type.
    """
    parts = line.strip().split()
    if len(parts) < 2:
        raise ValueError("expected an OpenSSH public key line: 'ssh-ed25519 AAAA… [comment]'")
    kind, b64 = parts[0], parts[1]
    if kind not in SUPPORTED_TYPES:
        raise ValueError(
            f"key type {kind!r} is not supported for signatures (use {' or '.join(SUPPORTED_TYPES)})"
        )
    try:
        blob = base64.b64decode(b64, validate=True)
    except ValueError:
        raise ValueError("the key's base64 part is not valid base64") from None
    if not blob.startswith(len(kind).to_bytes(4, "big") + kind.encode()):
        raise ValueError(f"the key's base64 part is not a {kind} key")
    return kind, blob


def fingerprint(line: str) -> str:
    """OpenSSH's ``SHA256:…`` fingerprint of a public key line (as ``ssh-keygen -l``)."""
    _, blob = parse_public_key(line)
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def normalize_key(line: str) -> str:
    """``type base64`` without the comment (comments are not part of the key)."""
    kind, blob = parse_public_key(line)
    return f"{kind} {base64.b64encode(blob).decode()}"


@dataclass(frozen=True)
class Verified:
    """A signature that verified: by which of the allowed keys."""

    key: str
    fingerprint: str


_VERIFY_CACHE: dict[tuple[bytes, str, tuple[str, ...]], Verified | str] = {}


def verify(message: bytes, armored: str, allowed_keys: list[str]) -> Verified:
    """Checks an SSHSIG signature of ``message`` in our namespace by one of
    ``allowed_keys`` (OpenSSH public key lines). Results are memoised (a gate replays
    the same records many times).

    Raises:
        ApprovalRefused: the signature is malformed, does not verify, or was made by a
            key that is not allowed (the message names the key's fingerprint).
    """
    cache_key = (message, armored, tuple(allowed_keys))
    hit = _VERIFY_CACHE.get(cache_key)
    if hit is None:
        hit = _verify_uncached(message, armored, allowed_keys)
        if len(_VERIFY_CACHE) > 10_000:
            _VERIFY_CACHE.clear()
        _VERIFY_CACHE[cache_key] = hit
    if isinstance(hit, str):
        raise ApprovalRefused(hit)
    return hit


def _verify_uncached(message: bytes, armored: str, allowed_keys: list[str]) -> Verified | str:
    import sshsig
    from sshsig.ssh_public_key import PublicKey

    try:
        signer = sshsig.check_signature(message, armored, namespace=NAMESPACE)
    except (sshsig.InvalidSignature, NotImplementedError, ValueError) as exc:
        return f"the signature does not verify ({exc or type(exc).__name__})"
    signer_line = signer.openssh_str()
    for line in allowed_keys:
        try:
            if PublicKey.from_openssh_str(normalize_key(line)) == signer:
                return Verified(normalize_key(line), fingerprint(line))
        except (ValueError, NotImplementedError):
            continue
    return f"signed with key {fingerprint(signer_line)}, which is not an allowed key"


def signer_fingerprint(armored: str, message: bytes) -> str | None:
    """The fingerprint of the key that made a valid signature, or None."""
    import sshsig

    try:
        return fingerprint(
            sshsig.check_signature(message, armored, namespace=NAMESPACE).openssh_str()
        )
    except (sshsig.InvalidSignature, NotImplementedError, ValueError):
        return None


def _ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        raise ConfigError(
            "ssh-keygen not found: install openssh-client (scripts/setup.sh does) to sign decisions"
        )
    return path


def agent_keys() -> list[str]:
    """The public keys ``ssh-agent`` holds (``ssh-add -L``); empty without an agent."""
    if not os.environ.get("SSH_AUTH_SOCK") or shutil.which("ssh-add") is None:
        return []
    out = subprocess.run(["ssh-add", "-L"], capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        return []
    keys = []
    for line in out.stdout.splitlines():
        try:
            keys.append(normalize_key(line))
        except ValueError:
            continue
    return keys


def choose_key(explicit: str | None, person_keys: list[str]) -> tuple[str, str | None]:
    """Where the signing key comes from: (description, path or None for an agent key).

    Returns the key file path, or None together with the agent key line to use.

    Raises:
        ConfigError: the named file does not exist, or there is no key at all.
    """
    path = explicit or os.environ.get(KEY_ENV)
    if path:
        if not Path(path).is_file():
            source = "--key" if explicit else f"${KEY_ENV}"
            raise ConfigError(f"{source}: no such key file {path!r}")
        return path, None
    held = agent_keys()
    if not held:
        raise ConfigError(
            f"no signing key: pass --key PATH, set {KEY_ENV}, or add your key to ssh-agent"
        )
    wanted = set()
    for line in person_keys:
        try:
            wanted.add(normalize_key(line))
        except ValueError:
            continue
    pick = next((k for k in held if k in wanted), held[0])
    return "ssh-agent", pick


def sign(message: bytes, *, key_path: str | None, agent_key: str | None = None) -> str:
    """Signs ``message`` with ``ssh-keygen -Y sign`` in our namespace; returns the armored
    signature. ``agent_key`` (a public key line) signs with that key held by the agent.

    Raises:
        ConfigError: ssh-keygen is missing or refused (bad key file, passphrase not
            given, agent without the key); its message is passed on.
    """
    keygen = _ssh_keygen()
    with tempfile.TemporaryDirectory(prefix="mcp-ir-sign-") as tmp:
        key = key_path
        if key is None:
            assert agent_key is not None
            key = str(Path(tmp) / "agent.pub")
            Path(key).write_text(agent_key + "\n", encoding="utf-8")
        try:
            done = subprocess.run(
                [keygen, "-Y", "sign", "-n", NAMESPACE, "-f", key],
                input=message,
                capture_output=True,
                timeout=_SIGN_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise ConfigError(f"ssh-keygen did not sign within {_SIGN_TIMEOUT_S:.0f}s") from None
    if done.returncode != 0 or b"BEGIN SSH SIGNATURE" not in done.stdout:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise ConfigError(
            f"ssh-keygen could not sign with {key_path or 'the agent key'}: "
            + (detail[-1] if detail else f"exit {done.returncode}")
        )
    return done.stdout.decode()


def public_key_of(key_path: str) -> str:
    """The public key line of a private key file (``ssh-keygen -y``) or a ``.pub`` file.

    Raises:
        ConfigError: the file is not a key ssh-keygen can read.
    """
    text = Path(key_path).read_text(encoding="utf-8", errors="replace")
    if text.startswith(SUPPORTED_TYPES):
        return normalize_key(text)
    done = subprocess.run(
        [_ssh_keygen(), "-y", "-P", "", "-f", key_path], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        pub = Path(key_path + ".pub")
        if pub.is_file():
            return normalize_key(pub.read_text(encoding="utf-8"))
        raise ConfigError(f"{key_path}: not an SSH key ssh-keygen can read")
    return normalize_key(done.stdout)
