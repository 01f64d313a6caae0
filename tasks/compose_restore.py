"""Re-creating a Compose project's containers from captured inspect documents.

The restore half of the Compose adapter (:mod:`tasks.compose` captures and stops):
containers are created and started through the Docker Engine API with the ``docker``
SDK, in dependency order, idempotently. No error raised here quotes an environment
value (the token is in the environment): details are scrubbed first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import docker
import docker.errors
import requests.exceptions

from core.errors import OperationFailed, TransientError
from core.redact import fingerprint
from tasks.compose import PROJECT_LABEL, SERVICE_LABEL, _call, _explain, project_containers

RESTORE_OP = "compose.restore"

# Environment the engine injects itself; re-creating must not pin the old values.
_ENGINE_ENV = ("HOSTNAME",)


def recreate_from_inspect(
    client: docker.DockerClient,
    inspects: list[dict[str, Any]],
    env_overrides: dict[str, dict[str, str]] | None = None,
) -> list[str]:
    """Re-creates and starts containers from captured inspect documents (restore).

    Carried over: name, image, entrypoint and command, environment (minus what
    the engine injects, e.g. ``HOSTNAME``) with ``env_overrides`` applied, labels,
    user, working dir, hostname when it was set explicitly, network mode (a
    ``container:<id>`` mode pointing at another re-created container is
    re-pointed at its name), binds and named volumes, restart policy. Containers
    referenced by another's network mode or ``depends_on`` label start first.

    Idempotent: a container that already exists under the name with the same
    project and service labels is started if stopped and otherwise left alone.

    Args:
        client: Docker SDK client of the target's engine.
        inspects: Inspect documents as ``capture`` returned them.
        env_overrides: Compose service name (or container name) → variables to
            set, e.g. ``{"cloudflared": {"TUNNEL_TOKEN": new_token}}``.

    Returns:
        The container names, in start order.

    Raises:
        OperationFailed: an inspect document lacks a name or image, a container of
            another project already holds a name, or the engine refused to
            create or start one (the detail never quotes environment values).
        TransientError: the engine cannot be reached or answered 5xx.
    """
    env_overrides = env_overrides or {}
    docs = [_check_inspect(i, doc) for i, doc in enumerate(inspects)]
    ids_to_names = {doc["Id"]: _doc_name(doc) for doc in docs if doc.get("Id")}
    ordered = sorted(docs, key=lambda d: _start_rank(d, docs, ids_to_names))
    started: list[str] = []
    for doc in ordered:
        name = _doc_name(doc)
        config = doc.get("Config") or {}
        labels = config.get("Labels") or {}
        service = labels.get(SERVICE_LABEL)
        env = _environment(config.get("Env") or [])
        env.update(env_overrides.get(service or "", {}))
        env.update(env_overrides.get(name, {}))
        secret_values = [v for v in env.values() if v]

        def scrub(text: str, values: list[str] = secret_values) -> str:
            for value in sorted(values, key=len, reverse=True):
                if len(value) >= 4:
                    text = text.replace(value, fingerprint(value))
            return text

        existing = _existing(client, name, scrub)
        if existing is not None:
            existing_labels = existing.get("Config", {}).get("Labels") or {}
            same = all(
                existing_labels.get(k) == labels.get(k) for k in (PROJECT_LABEL, SERVICE_LABEL)
            )
            if not same:
                raise OperationFailed(
                    RESTORE_OP,
                    f"container {name}: the name is held by a container of another "
                    f"project/service ({existing_labels.get(PROJECT_LABEL)}/"
                    f"{existing_labels.get(SERVICE_LABEL)})",
                )
            if not (existing.get("State") or {}).get("Running"):
                _start(client, name, scrub)
            started.append(name)
            continue

        host = doc.get("HostConfig") or {}
        kwargs: dict[str, Any] = {
            "name": name,
            "command": config.get("Cmd") or None,
            "entrypoint": config.get("Entrypoint") or None,
            "environment": env,
            "labels": labels,
            "user": config.get("User") or None,
            "working_dir": config.get("WorkingDir") or None,
            "network_mode": _network_mode(host.get("NetworkMode"), ids_to_names),
            "volumes": _volumes(doc),
            "detach": True,
        }
        hostname = config.get("Hostname")
        if hostname and not str(doc.get("Id", "")).startswith(hostname):
            kwargs["hostname"] = hostname
        policy = host.get("RestartPolicy") or {}
        if policy.get("Name") and policy["Name"] != "no":
            kwargs["restart_policy"] = {
                "Name": policy["Name"],
                "MaximumRetryCount": policy.get("MaximumRetryCount", 0),
            }
        image = config.get("Image") or doc.get("Image")
        _call(
            RESTORE_OP,
            f"creating container {name} from image {image}",
            lambda image=image, kwargs=kwargs: client.containers.create(image, **kwargs),
            scrub,
        )
        _start(client, name, scrub)
        started.append(name)
    return started


def _start(client: docker.DockerClient, name: str, scrub: Callable[[str], str]) -> None:
    _call(RESTORE_OP, f"starting container {name}", lambda: client.api.start(name), scrub)


def wait_running(
    client: docker.DockerClient,
    project: str,
    services: Iterable[str],
    timeout_s: float = 10.0,
    settle_s: float = 1.0,
) -> list[str]:
    """Waits until every named service of ``project`` has a container that has stayed
    running for ``settle_s``: a program that refuses its configuration (cloudflared
    with a bad token) is "running" for the moment between its start and its exit,
    and a restore must not be declared on that moment.

    Returns:
        The running containers' names, sorted.

    Raises:
        OperationFailed: a service's container exited, or is still not running when
            ``timeout_s`` expires (the detail names each with its state).
        TransientError: the engine cannot be reached.
    """
    wanted = set(services)
    deadline = time.monotonic() + timeout_s
    up_since: dict[str, tuple[str, float]] = {}  # service -> (container id, first seen up)
    while True:
        containers = project_containers(client, project)
        states = {
            (c.labels.get(SERVICE_LABEL) or c.name): (c.name, c.attrs.get("State") or {}, c.id)
            for c in containers
        }
        now = time.monotonic()
        running = {s for s, (_, st, _) in states.items() if st.get("Running")}
        for service in running:
            if up_since.get(service, ("", 0.0))[0] != states[service][2]:
                up_since[service] = (states[service][2], now)
        missing = wanted - running
        if not missing and all(now - up_since[s][1] >= settle_s for s in wanted):
            return sorted(states[s][0] for s in wanted)
        dead = {
            s: f"exited with code {st.get('ExitCode')}"
            for s, (_, st, _) in states.items()
            if s in missing and st.get("Status") in ("exited", "dead")
        }
        if dead or (missing and now > deadline):
            described = [
                f"{s}: {dead.get(s) or (states[s][1].get('Status') if s in states else 'absent')}"
                for s in sorted(missing)
            ]
            raise OperationFailed(
                RESTORE_OP,
                f"project {project}: not running after {timeout_s:g}s: {'; '.join(described)}"
                if not dead
                else f"project {project}: {'; '.join(described)}",
            )
        time.sleep(0.1)


def _doc_name(doc: dict[str, Any]) -> str:
    return str(doc.get("Name", "")).lstrip("/")


def _check_inspect(index: int, doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise OperationFailed(RESTORE_OP, f"inspects[{index}]: not an inspect document")
    if not _doc_name(doc):
        raise OperationFailed(RESTORE_OP, f"inspects[{index}]: Name is missing")
    config = doc.get("Config")
    if not isinstance(config, dict) or not (config.get("Image") or doc.get("Image")):
        raise OperationFailed(
            RESTORE_OP, f"inspects[{index}] ({_doc_name(doc)}): Config.Image is missing"
        )
    return doc


def _environment(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key and key not in _ENGINE_ENV:
            env[key] = value
    return env


def _network_mode(mode: str | None, ids_to_names: dict[str, str]) -> str | None:
    if not mode or mode == "default":
        return None
    if mode.startswith("container:"):
        ref = mode.split(":", 1)[1]
        for cid, name in ids_to_names.items():
            if cid.startswith(ref) or ref == name:
                return f"container:{name}"
    return mode


def _volumes(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    volumes: dict[str, dict[str, str]] = {}
    for mount in doc.get("Mounts") or []:
        kind = mount.get("Type")
        source = mount.get("Source") if kind == "bind" else mount.get("Name")
        if kind not in ("bind", "volume") or not source or not mount.get("Destination"):
            continue
        volumes[source] = {
            "bind": mount["Destination"],
            "mode": "rw" if mount.get("RW", True) else "ro",
        }
    return volumes


def _start_rank(doc: dict[str, Any], docs: list[dict[str, Any]], ids: dict[str, str]) -> int:
    """0 for containers others depend on (network mode or depends_on), else 1."""
    name = _doc_name(doc)
    service = ((doc.get("Config") or {}).get("Labels") or {}).get(SERVICE_LABEL)
    for other in docs:
        if other is doc:
            continue
        mode = _network_mode((other.get("HostConfig") or {}).get("NetworkMode"), ids) or ""
        if mode == f"container:{name}":
            return 0
        depends = ((other.get("Config") or {}).get("Labels") or {}).get(
            "com.docker.compose.depends_on", ""
        )
        if service and any(d.split(":")[0] == service for d in depends.split(",") if d):
            return 0
    return 1


def _existing(
    client: docker.DockerClient, name: str, scrub: Callable[[str], str]
) -> dict[str, Any] | None:
    try:
        return client.api.inspect_container(name)
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        status = exc.status_code
        detail = scrub(f"inspecting container {name}: {_explain(exc)}")
        if status is None or status >= 500:
            raise TransientError(f"{RESTORE_OP}: {detail}") from None
        raise OperationFailed(RESTORE_OP, detail) from None
    except requests.exceptions.RequestException as exc:
        raise TransientError(
            f"{RESTORE_OP}: inspecting container {name}: engine unreachable ({type(exc).__name__})"
        ) from None


__all__ = ["recreate_from_inspect", "wait_running"]
