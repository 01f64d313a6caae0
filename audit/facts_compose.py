"""Facts of a Compose target, read from its files (``config/``, the compose file,
``data/``). Nothing is written; the container engine is not called."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

from audit.facts import FactUnavailable, ImageRef, NetworkView, Sourced, StoredCredential, utc
from core.yamlfile import read_yaml

CREDENTIAL_FILES = (
    "tunnel-token",
    "ca.key",
    "tls.key",
    "tls.crt",
    "ca.crt",
    "tunnel-id",
    "tunnel-domain",
)
SECRET_NAME = re.compile(r"(?i)(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|PRIVATE_KEY)$")
CONFIG_DIR = "/etc/mcp-gateway"
CONFIG_PATH = "/etc/mcp-gateway/config.yaml"


class ComposeFacts:
    """Reads a Compose deployment's files (FACTS §1: ``config/`` and the compose file
    hold no secrets; ``data/`` holds the credentials)."""

    kind = "compose"

    def __init__(self, compose: Any) -> None:
        self.data_dir = Path(compose.data_dir)
        root = self.data_dir.parent
        self.config_file = Path(compose.config_dir or root / "config") / "config.yaml"
        self.compose_file = Path(compose.compose_file or root / "docker-compose.yaml")
        self.data_uid = int(compose.data_uid)
        self._compose: Any = None

    def _config_path(self) -> Path:
        """Where the proxy's ``/etc/mcp-gateway/config.yaml`` comes from: the compose
        file's bind mount of that file (the quickstart mounts
        ``./config/mcp-gateway.yaml``) or of its directory, else ``config/config.yaml``."""
        try:
            services = self._services()
        except FactUnavailable:
            return self.config_file
        base = self.compose_file.parent
        for svc in services.values():
            for volume in (svc or {}).get("volumes") or []:
                if isinstance(volume, dict):
                    source, target = volume.get("source"), volume.get("target")
                else:
                    parts = str(volume).split(":")
                    source, target = (parts[0], parts[1]) if len(parts) >= 2 else (None, None)
                if not source or not target:
                    continue
                src = (base / source).resolve() if not Path(source).is_absolute() else Path(source)
                if target.rstrip("/") == CONFIG_PATH:
                    return src
                if target.rstrip("/") == CONFIG_DIR:
                    return src / "config.yaml"
        return self.config_file

    def proxy_config(self) -> Sourced:
        path = self._config_path()
        doc = read_yaml(path, "proxy config", FactUnavailable)
        if not isinstance(doc, dict):
            raise FactUnavailable(f"proxy config {path} is not a mapping")
        return Sourced(doc, str(path))

    def _services(self) -> dict[str, Any]:
        if self._compose is None:
            doc = read_yaml(self.compose_file, "compose file", FactUnavailable)
            if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
                raise FactUnavailable(f"compose file {self.compose_file} has no 'services' mapping")
            self._compose = doc
        return dict(self._compose["services"])

    def images(self) -> Sourced:
        refs = []
        for name, svc in sorted(self._services().items()):
            image = (svc or {}).get("image")
            if image:
                refs.append(ImageRef(f"services.{name}.image", str(image)))
        if not refs:
            raise FactUnavailable(f"no service of {self.compose_file} names an image")
        return Sourced(refs, str(self.compose_file))

    def network(self, allowed_ips: list[str]) -> NetworkView:
        problems, observed = [], []
        for name, svc in sorted(self._services().items()):
            svc = svc or {}
            mode = svc.get("network_mode")
            ports = svc.get("ports") or []
            observed.append(
                f"{name}: network_mode={mode or 'default'}, ports={ports or 'none'}, "
                f"privileged={bool(svc.get('privileged'))}, cap_add={svc.get('cap_add') or []}"
            )
            if mode == "host":
                problems.append(f"{name} uses the host network (network_mode: host)")
            if ports:
                problems.append(f"{name} publishes ports {ports} (the stack is outbound-only)")
            if svc.get("privileged"):
                problems.append(f"{name} runs privileged")
            caps = {str(c).upper() for c in svc.get("cap_add") or []}
            if caps & {"NET_ADMIN", "NET_RAW", "ALL"}:
                problems.append(f"{name} adds network capabilities {sorted(caps)}")
        return NetworkView(
            verifiable=False,
            problems=problems,
            observed=observed,
            source=str(self.compose_file),
            unverifiable_reason="a Compose host's firewall rules cannot be read from the "
            "compose file: confirm that the host lets the proxy and cloudflared reach only "
            "the tunnel edge (7844), api.anthropic.com (443) and the upstream servers",
        )

    def credentials(self) -> Sourced:
        try:
            dir_st = os.stat(self.data_dir)
        except OSError as exc:
            raise FactUnavailable(f"cannot stat {self.data_dir}: {exc.strerror}") from None
        found: list[StoredCredential] = []
        dir_problems = []
        if dir_st.st_mode & 0o007:
            dir_problems.append(f"directory mode {stat.S_IMODE(dir_st.st_mode):04o} lets others in")
        found.append(
            StoredCredential(
                "data/",
                str(self.data_dir),
                dir_problems,
                f"mode {stat.S_IMODE(dir_st.st_mode):04o} owner {dir_st.st_uid}",
            )
        )
        for name in CREDENTIAL_FILES:
            path = self.data_dir / name
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            mode = stat.S_IMODE(st.st_mode)
            problems = []
            if stat.S_ISLNK(st.st_mode):
                problems.append("is a symbolic link")
            if mode & 0o077:
                problems.append(f"mode {mode:04o} (want 0600)")
            if st.st_uid != self.data_uid:
                problems.append(f"owner {st.st_uid} (want {self.data_uid})")
            found.append(
                StoredCredential(name, str(path), problems, f"mode {mode:04o} owner {st.st_uid}")
            )
        if len(found) == 1:
            raise FactUnavailable(f"no credential file in {self.data_dir}")
        found.extend(self._compose_secrets())
        return Sourced(found, str(self.data_dir))

    def _compose_secrets(self) -> list[StoredCredential]:
        """The compose file must hold no secret (FACTS §1): a literal value for a
        secret-looking variable is a problem (its value is never reported). The
        ``.env`` beside it (where the quickstart keeps TUNNEL_TOKEN) must be 0600."""
        found: list[StoredCredential] = []
        try:
            services = self._services()
        except FactUnavailable:
            services = {}
        for name, svc in sorted(services.items()):
            env = (svc or {}).get("environment") or {}
            pairs = (
                [(str(k), v) for k, v in env.items()]
                if isinstance(env, dict)
                else [
                    (str(e).partition("=")[0], str(e).partition("=")[2] if "=" in str(e) else None)
                    for e in env
                ]
            )
            for key, value in pairs:
                if value in (None, "") or not SECRET_NAME.search(key):
                    continue
                if str(value).startswith("${") or str(value).startswith("$"):
                    continue  # interpolated from the environment: not in the file
                found.append(
                    StoredCredential(
                        f"services.{name}.environment.{key}",
                        str(self.compose_file),
                        [
                            f"services.{name}.environment.{key} holds a literal value in the compose file"
                        ],
                        "literal value (not shown)",
                    )
                )
        dotenv = self.compose_file.parent / ".env"
        try:
            st = os.lstat(dotenv)
        except FileNotFoundError:
            return found
        mode = stat.S_IMODE(st.st_mode)
        problems = [f"mode {mode:04o} (want 0600)"] if mode & 0o077 else []
        found.append(
            StoredCredential(".env", str(dotenv), problems, f"mode {mode:04o} owner {st.st_uid}")
        )
        return found

    def server_certificate(self) -> Sourced:
        path = self.data_dir / "tls.crt"
        try:
            return Sourced(path.read_bytes(), str(path))
        except OSError as exc:
            raise FactUnavailable(f"cannot read {path}: {exc.strerror}") from None

    def token_updated_at(self) -> Sourced:
        path = self.data_dir / "tunnel-token"
        try:
            return Sourced(utc(os.stat(path).st_mtime), f"{path} (mtime)")
        except OSError as exc:
            raise FactUnavailable(f"cannot stat {path}: {exc.strerror}") from None
