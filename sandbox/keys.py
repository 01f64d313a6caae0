"""Keys for a sandbox site: an SSH key per sandbox person (what they sign decisions
with) and the engine's Ed25519 checkpoint key. Generated once per directory with
the real tools (``ssh-keygen``, ``cryptography``), reused when present."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

ENGINE_KEY = "engine-checkpoint.key"
SLACK_RECEIVER_KEY = "slack-receiver"


def person_key(directory: Path, name: str) -> Path:
    """The private key file of a sandbox person, ``keys/<person>`` as ``mcp-ir sandbox
    up`` lays it out (its public half is ``<file>.pub``)."""
    return Path(directory) / name


def ssh_key(path: Path, comment: str) -> str:
    """Creates an unencrypted Ed25519 SSH key at ``path`` unless it exists; returns
    the public key line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pub = path.with_name(path.name + ".pub")
    if not (path.exists() and pub.exists()):
        path.unlink(missing_ok=True)
        pub.unlink(missing_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    return pub.read_text(encoding="utf-8").strip()


def people_keys(directory: Path, names: Iterable[str]) -> dict[str, str]:
    """One SSH key per person: name → public key line."""
    return {n: ssh_key(person_key(directory, n), f"{n}@mcp-ir-sandbox") for n in names}


def engine_key(directory: Path) -> tuple[Path, str]:
    """The engine's checkpoint key: (private key file, public key line)."""
    from core.checkpoints import generate_engine_key

    path = Path(directory) / ENGINE_KEY
    pub = path.with_name(path.name + ".pub")
    if not (path.exists() and pub.exists()):
        pub.write_text(generate_engine_key(path) + "\n", encoding="utf-8")
    return path, pub.read_text(encoding="utf-8").strip()


def slack_receiver_key(directory: Path) -> tuple[Path, str]:
    """The Slack receiving service's countersigning SSH key: (file, public line)."""
    path = Path(directory) / SLACK_RECEIVER_KEY
    return path, ssh_key(path, "slack-receiver@mcp-ir-sandbox")
