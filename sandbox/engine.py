"""The local container engine: podman serving the Docker Engine API (FACTS §5).

No Docker engine runs on this machine kind, but Debian's podman runs real
containers and answers the Docker Engine API on a unix socket, which the
``docker`` SDK drives unchanged. This module starts one such service for a
work directory, waits until it answers ``/_ping`` and makes sure the local
busybox image exists (images cannot be pulled here: there is no registry).

Layout of ``workdir`` (everything the service owns lives there):

- ``containers.conf``  the FACTS §5 configuration, passed with ``CONTAINERS_CONF``
- ``podman.sock``      the Docker API socket (``docker_host`` = ``unix://<this>``)
- ``podman.pid``       pid of the service, so ``python -m sandbox.engine stop`` finds it
- ``service.log``      the service's stdout/stderr
- ``storage/``         podman's storage root (vfs); the runroot is
  ``$TMPDIR/mcp-ir-run/<hash of workdir>`` (podman limits it to 50 characters)
- ``networks/``        network definitions (podman keeps them machine-wide otherwise)

Storage lives under the work directory, not in a machine-wide directory, on
purpose: several engineers and test sessions run engines in parallel on the
same machine, and a shared libpod database would let one session see, and
tear down, another's containers. Re-using a work directory re-uses its
storage (the image is then found, not rebuilt); a fresh one costs one
``import`` of a ~1 MB rootfs, measured at under 0.1 s.

CLI: ``python -m sandbox.engine start|stop --workdir DIR`` (``start`` prints
``DOCKER_HOST=unix://…`` and leaves the service running; ``stop`` ends it).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from core.errors import ConfigError, TransientError
from core.processes import pid_alive

PODMAN = "podman"
RUNC = "/usr/sbin/runc"
BUSYBOX = "/bin/busybox"

BUSYBOX_IMAGE = "localhost/mcp-ir/busybox:latest"
"""The base image every sandbox container runs (busybox applets only)."""

BUSYBOX_APPLETS = (
    "sh",
    "sleep",
    "echo",
    "date",
    "cat",
    "printf",
    "ls",
    "env",
    "true",
    "false",
    "test",
    "[",
    "kill",
    "wc",
    "head",
    "tail",
    "grep",
    "id",
    "awk",
    "sed",
)

CONTAINERS_CONF = """\
# Written by sandbox/engine.py (FACTS §5): what makes podman run containers on
# this machine kind. crun fails on its hybrid cgroups; runc works. There is no
# usable container network here, so containers get no network namespace.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
netns = "none"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "{runtime}"

[network]
# Network definitions otherwise live machine-wide in /etc/containers/networks,
# shared by every engine on the machine; keep them private to this workdir.
network_config_dir = "{network_dir}"
"""


@dataclass
class EngineHandle:
    """A running podman service answering the Docker Engine API.

    Attributes:
        workdir: The work directory holding the socket, config and storage.
        docker_host: ``unix://`` URL of the socket (the value for ``DOCKER_HOST``).
        pid: Process id of the podman service.
        timings: Measured durations in seconds (``service_start``, ``image_build``).
    """

    workdir: Path
    docker_host: str
    pid: int
    timings: dict[str, float] = field(default_factory=dict)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def client(self, timeout: int = 30) -> docker.DockerClient:
        """Returns a new docker SDK client bound to this engine's socket."""
        return docker.DockerClient(base_url=self.docker_host, timeout=timeout)

    def stop(self, *, remove_containers: bool = True, timeout_s: float = 10.0) -> None:
        """Ends the service this handle started, and nothing else.

        Containers keep running after their podman service exits (conmon owns
        them), so by default every container in this engine's private storage
        is removed first: otherwise stopped test sessions would leave busybox
        loops behind on a shared machine.

        Args:
            remove_containers: Force-remove this engine's containers first.
            timeout_s: How long to wait for the service to exit before SIGKILL.
        """
        if remove_containers and pid_alive(self.pid):
            try:
                client = self.client(timeout=10)
                for container in client.containers.list(all=True):
                    with contextlib.suppress(docker.errors.NotFound):
                        # podman's force-remove waits the stop timeout (10 s) for
                        # a process that ignores SIGTERM: stop with timeout 0 first.
                        if container.status == "running":
                            container.stop(timeout=0)
                        container.remove(force=True)
                client.close()
            except (docker.errors.DockerException, OSError):
                # The service is going away anyway; nothing to clean through it.
                pass
        _terminate(self.pid, timeout_s)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)
        pidfile = self.workdir / "podman.pid"
        if pidfile.exists() and pidfile.read_text().strip() == str(self.pid):
            pidfile.unlink()
        if remove_containers:
            # Runtime state only (locks, container state); podman rebuilds it on the
            # next start as after a reboot. The storage itself stays in the workdir.
            shutil.rmtree(runroot_for(self.workdir), ignore_errors=True)


def podman_available() -> str | None:
    """Returns why the engine cannot run here, or ``None`` when it can.

    Checks the binaries FACTS §5 needs (installed by ``scripts/setup-podman.sh``).
    """
    missing = [b for b in (PODMAN, RUNC, BUSYBOX) if _which(b) is None]
    if missing:
        return (
            f"missing {', '.join(missing)}: run `sudo scripts/setup-podman.sh` "
            "(apt-get install -y podman runc busybox-static)"
        )
    return None


def start_engine(workdir: Path, *, timeout_s: float = 30.0) -> EngineHandle:
    """Starts (or finds) the podman service of ``workdir`` and readies the image.

    If the pid file names a live service that answers ``/_ping``, that service
    is returned instead of starting a second one, so ``start`` is idempotent.

    Args:
        workdir: Directory for the socket, config, pid file and storage; created.
        timeout_s: How long to wait for the socket to answer ``/_ping``.

    Returns:
        The handle; ``handle.timings`` holds ``service_start`` and ``image_build``.

    Raises:
        ConfigError: podman, runc or busybox-static is not installed, or the
            socket path is too long for a unix socket.
        TransientError: the service did not answer in time (its log is quoted).
    """
    problem = podman_available()
    if problem:
        raise ConfigError(f"container engine: {problem}")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    sock = workdir / "podman.sock"
    if len(str(sock)) > 100:
        raise ConfigError(f"workdir: socket path {sock} is too long for a unix socket")
    docker_host = f"unix://{sock}"

    existing = _existing_service(workdir, docker_host)
    if existing is not None:
        existing.timings["image_build"] = ensure_busybox_image(existing.client())
        return existing

    conf = workdir / "containers.conf"
    (workdir / "networks").mkdir(exist_ok=True)
    conf.write_text(CONTAINERS_CONF.format(runtime=RUNC, network_dir=workdir / "networks"))
    if sock.exists():
        sock.unlink()
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    log = (workdir / "service.log").open("ab")
    started = time.monotonic()
    proc = subprocess.Popen(
        [*podman_base_args(workdir), "system", "service", "--time=0", docker_host],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,  # survives the CLI that started it; we stop it by pid
    )
    log.close()
    (workdir / "podman.pid").write_text(str(proc.pid))
    handle = EngineHandle(workdir=workdir, docker_host=docker_host, pid=proc.pid, _proc=proc)
    deadline = started + timeout_s
    while True:
        if proc.poll() is not None:
            raise TransientError(
                f"podman service exited with {proc.returncode}: {_tail(workdir / 'service.log')}"
            )
        if sock.exists() and _pings(docker_host):
            break
        if time.monotonic() > deadline:
            handle.stop(remove_containers=False)
            raise TransientError(
                f"podman service did not answer /_ping within {timeout_s:.0f}s: "
                f"{_tail(workdir / 'service.log')}"
            )
        time.sleep(0.05)
    handle.timings["service_start"] = time.monotonic() - started
    client = handle.client()
    try:
        handle.timings["image_build"] = ensure_busybox_image(client)
    finally:
        client.close()
    return handle


def runroot_for(workdir: Path) -> Path:
    """podman's runroot for ``workdir``: short and stable.

    podman refuses a runroot longer than 50 characters ("the specified runroot
    is longer than 50 characters"), and pytest's tmp dirs are longer, so it
    lives in the system temp dir under a hash of the work directory. Stable per
    workdir because the storage's database records the runroot it was made with.
    """
    digest = hashlib.sha256(str(Path(workdir).resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "mcp-ir-run" / digest


def podman_base_args(workdir: Path) -> list[str]:
    """The podman global options that select ``workdir``'s private storage."""
    return [
        PODMAN,
        "--storage-driver",
        "vfs",
        "--root",
        str(workdir / "storage"),
        "--runroot",
        str(runroot_for(workdir)),
    ]


def rootfs_tar(files: dict[str, bytes] | None = None) -> bytes:
    """Builds a rootfs tarball: ``/bin/busybox``, its applet links, and ``files``.

    Args:
        files: Extra files, path (absolute, inside the image) → content. They are
            made executable when they start with ``#!``.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "tmp", "usr", "usr/local", "usr/local/bin", "data"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        data = Path(BUSYBOX).read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in BUSYBOX_APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/home:/bin/sh\n"
        group = b"root:x:0:\nnonroot:x:65532:\n"
        for name, content in {"etc/passwd": passwd, "etc/group": group, **_rel(files)}.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o755 if content.startswith(b"#!") else 0o644
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def import_image(
    client: docker.DockerClient,
    reference: str,
    *,
    files: dict[str, bytes] | None = None,
    changes: list[str] | None = None,
) -> float:
    """Imports a busybox rootfs as image ``reference`` unless it already exists.

    Idempotent and cheap when the image is present (one inspect call). podman's
    compat import ignores the requested tag, so the new image is tagged after.

    Args:
        client: Docker SDK client of the engine.
        reference: ``repository:tag`` to create.
        files: Extra files for the rootfs (see ``rootfs_tar``).
        changes: Dockerfile instructions applied at import (``ENTRYPOINT``, ``ENV``…).

    Returns:
        Seconds spent building (0.0 when the image already existed).

    Raises:
        TransientError: the engine refused the import.
    """
    try:
        client.images.get(reference)
        return 0.0
    except docker.errors.ImageNotFound:
        pass
    started = time.monotonic()
    repository, _, tag = reference.rpartition(":")
    try:
        result = client.api.import_image(
            src=rootfs_tar(files), repository=repository, tag=tag, changes=changes or []
        )
        image_id = _imported_id(result)
        client.images.get(image_id).tag(repository, tag)
    except docker.errors.APIError as exc:
        raise TransientError(f"image import of {reference} failed: {exc.explanation}") from exc
    return time.monotonic() - started


def ensure_busybox_image(client: docker.DockerClient) -> float:
    """Makes sure ``BUSYBOX_IMAGE`` exists; returns the seconds spent building it."""
    return import_image(client, BUSYBOX_IMAGE, changes=['CMD ["/bin/sh"]'])


def _rel(files: dict[str, bytes] | None) -> dict[str, bytes]:
    return {p.lstrip("/"): c for p, c in (files or {}).items()}


def _imported_id(result: str | bytes) -> str:
    import json

    text = result.decode() if isinstance(result, bytes) else result
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        doc = json.loads(line)
        if doc.get("error"):
            raise TransientError(f"image import failed: {doc['error']}")
        if doc.get("id") or str(doc.get("status", "")).startswith("sha256:"):
            return doc.get("id") or doc["status"]
    raise TransientError(f"image import returned no image id: {text[:200]}")


def _existing_service(workdir: Path, docker_host: str) -> EngineHandle | None:
    pidfile = workdir / "podman.pid"
    if not pidfile.exists():
        return None
    try:
        pid = int(pidfile.read_text().strip())
    except ValueError:
        return None
    if pid_alive(pid) and _is_our_podman(pid, workdir) and _pings(docker_host):
        return EngineHandle(workdir=workdir, docker_host=docker_host, pid=pid)
    return None


def _is_our_podman(pid: int, workdir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        bool(cmdline)
        and cmdline[0].endswith(b"podman")
        and (f"unix://{workdir / 'podman.sock'}".encode() in cmdline)
    )


def _pings(docker_host: str) -> bool:
    try:
        # A pinned API version: without it the SDK first GETs /version, which podman
        # answers in more than 2 s on a loaded machine, so the ping never succeeded.
        client = docker.DockerClient(base_url=docker_host, timeout=2, version="1.41")
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (docker.errors.DockerException, OSError):
        return False


def _terminate(pid: int, timeout_s: float) -> None:
    if not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)


def _which(binary: str) -> str | None:
    if os.path.isabs(binary):
        return binary if os.access(binary, os.X_OK) else None
    return shutil.which(binary)


def _tail(path: Path, limit: int = 600) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return "(no service log)"
    return text[-limit:] or "(empty service log)"


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.engine start|stop --workdir DIR``."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.engine", description=__doc__)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    if args.action == "start":
        handle = start_engine(workdir)
        timings = " ".join(f"{k}={v:.3f}s" for k, v in handle.timings.items())
        print(f"DOCKER_HOST={handle.docker_host}")
        print(f"# pid={handle.pid} {timings}", file=sys.stderr)
        return 0
    started = time.monotonic()
    pid = stop_engine(workdir)
    if pid is None:
        print(f"# no engine running in {workdir}", file=sys.stderr)
        return 0
    print(f"# stopped pid={pid} in {time.monotonic() - started:.3f}s", file=sys.stderr)
    return 0


def stop_engine(workdir: Path) -> int | None:
    """Stops the engine of ``workdir`` (its containers first), whichever process
    started it; returns the service's pid, or ``None`` when none was running."""
    workdir = Path(workdir).resolve()
    handle = _existing_service(workdir, f"unix://{workdir / 'podman.sock'}")
    if handle is None:
        return None
    handle.stop()
    return handle.pid


if __name__ == "__main__":
    raise SystemExit(main())
