"""The Compose ``data/`` credential store (FACTS §1).

``data/`` holds ``tunnel-id``, ``tunnel-domain``, ``tunnel-token``, ``ca.crt``,
``ca.key``, ``tls.crt`` and ``tls.key`` (the manual flow adds ``tls.ext`` and an
openssl serial file); the containers read them as UID 65532. ``config/`` and the
compose file are siblings of ``data/`` and hold no secrets: nothing here touches them.

Writes are atomic per file: the new content goes to a temp file in the same
directory (mode 0600 from its creation), is fsynced, chmod/chowned, renamed over
the old name, and the directory is fsynced — a reader sees the old file or the new
one, never half of either. The replaced inode is then overwritten with zeros
through a descriptor opened before the rename, so the old secret is not left
readable in place (another hard link, or a process that still holds it open, sees
zeros). On copy-on-write filesystems an overwrite does not reach the old blocks;
that limit is the filesystem's, not ours. Temp files a crashed run left behind are
shredded by the next write or destroy. Only fingerprints are returned or logged.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from core.errors import ConfigError, CredentialsError, OperationFailed
from core.redact import fingerprint

log = logging.getLogger(__name__)

DATA_FILES: tuple[str, ...] = (
    "tunnel-id",
    "tunnel-domain",
    "tunnel-token",
    "ca.crt",
    "ca.key",
    "tls.crt",
    "tls.key",
)
CONTAINER_UID = 65532
CONTAINER_GID = 65532
TEMP_PREFIX = ".mcp-ir-tmp-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Files whose presence says "this is the Compose project directory, not data/".
_PROJECT_MARKERS = ("docker-compose.yaml", "docker-compose.yml", "compose.yaml", "compose.yml")
_CHUNK = 64 * 1024

Action = Literal["written", "unchanged", "metadata-fixed"]


@dataclass(frozen=True)
class FileWrite:
    """What happened to one file. Never holds the content.

    Attributes:
        name: File name inside ``data/``.
        action: ``written`` (content replaced), ``unchanged`` (same content, owner
            and mode: nothing done), or ``metadata-fixed`` (same content; owner or
            mode corrected in place).
        fingerprint: ``fingerprint()`` of the content now in place.
        previous_fingerprint: Fingerprint of the content replaced, None if absent.
    """

    name: str
    action: Action
    fingerprint: str
    previous_fingerprint: str | None


@dataclass(frozen=True)
class WriteResult:
    """The outcome of :func:`write_credentials`."""

    data_dir: str
    files: dict[str, FileWrite]
    stale_temp_removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when anything on disk changed (content or metadata)."""
        return any(f.action != "unchanged" for f in self.files.values())

    @property
    def fingerprints(self) -> dict[str, str]:
        """File name → fingerprint of the content now in place."""
        return {name: f.fingerprint for name, f in self.files.items()}


def write_credentials(
    data_dir: str | os.PathLike[str],
    files: Mapping[str, bytes],
    *,
    uid: int = CONTAINER_UID,
    gid: int = CONTAINER_GID,
    mode: int = 0o600,
) -> WriteResult:
    """Atomically replaces credential files in ``data_dir``.

    Writing the same content again is a no-op reported as ``unchanged``, so a
    retried step does not churn the files (or restart anything keyed on them).

    Args:
        data_dir: The Compose project's ``data/`` directory (created 0700 if absent).
        files: File name → new content (bytes). Names are plain file names.
        uid: Owner to set (the containers run as 65532).
        gid: Group to set.
        mode: Permission bits (0600 by default; group/other write is refused).

    Returns:
        Per-file action and fingerprints — never the values.

    Raises:
        ConfigError: A name, content, mode or ``data_dir`` is invalid.
        CredentialsError: The owner cannot be set (not permitted).
        OperationFailed: The write could not be completed (I/O error); the message
            names the file, never its content.
    """
    directory = _check_dir(data_dir, create=True)
    _validate_files(files)
    if not isinstance(mode, int) or mode & ~0o777 or mode & 0o022:
        raise ConfigError(f"mode: must be permission bits without group/other write (got {mode!r})")
    stale = _remove_stale_temps(directory)
    results: dict[str, FileWrite] = {}
    for name in sorted(files):
        results[name] = _write_one(directory, name, files[name], uid=uid, gid=gid, mode=mode)
        log.info("data/%s %s (%s)", name, results[name].action, results[name].fingerprint)
    return WriteResult(data_dir=str(directory), files=results, stale_temp_removed=stale)


def read_fingerprints(data_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Fingerprints of the credential files currently in ``data_dir``.

    Regular files only (symlinks and our temp files are skipped); an absent
    directory yields ``{}`` — which is what a teardown verify wants to see.

    Raises:
        ConfigError: ``data_dir`` exists but is not a directory.
    """
    directory = Path(data_dir)
    if not directory.exists():
        return {}
    directory = _check_dir(directory, create=False)
    result: dict[str, str] = {}
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.name.startswith(TEMP_PREFIX) or not entry.is_file(follow_symlinks=False):
            continue
        result[entry.name] = fingerprint(_read_nofollow(Path(entry.path)))
    return result


def destroy_credentials(data_dir: str | os.PathLike[str], *, remove_dir: bool = False) -> list[str]:
    """Destroys every credential file in ``data_dir`` (teardown).

    Each regular file is overwritten with zeros (same length), fsynced and
    unlinked; symlinks are unlinked without writing through them; nested
    directories are handled the same way. Everything in ``data/`` is credential
    material (FACTS §1), so nothing inside it is kept. ``config/`` and the compose
    file are siblings and are never touched; a ``data_dir`` that looks like the
    project directory itself is refused. Running it again is harmless.

    Args:
        data_dir: The ``data/`` directory.
        remove_dir: Also remove the (then empty) directory itself.

    Returns:
        The relative paths destroyed, sorted (empty if nothing was there).

    Raises:
        ConfigError: ``data_dir`` is not a directory or looks like a project dir.
        OperationFailed: Something is still there after destruction.
    """
    directory = Path(data_dir)
    if not directory.exists() and not directory.is_symlink():
        return []
    directory = _check_dir(directory, create=False)
    markers = [m for m in _PROJECT_MARKERS if (directory / m).exists()]
    if markers or (directory / "config").is_dir():
        raise ConfigError(
            f"data_dir: {directory} looks like the Compose project directory "
            f"({', '.join(markers) or 'config/'} inside), not its data/; refusing to destroy it"
        )
    destroyed: list[str] = []
    for root, dirs, names in os.walk(directory, topdown=False, followlinks=False):
        root_path = Path(root)
        for name in names + [d for d in dirs if (root_path / d).is_symlink()]:
            path = root_path / name
            if not path.is_symlink():
                _shred(path)
            path.unlink(missing_ok=True)
            destroyed.append(str(path.relative_to(directory)))
        for name in dirs:
            sub = root_path / name
            if not sub.is_symlink() and sub.exists():
                sub.rmdir()
        _fsync_dir(root_path)
    leftover = sorted(os.listdir(directory))
    if leftover:
        raise OperationFailed("destroy_credentials", f"{directory} still holds {leftover}")
    if remove_dir:
        directory.rmdir()
        _fsync_dir(directory.parent)
    log.info("destroyed %d credential file(s) in %s", len(destroyed), directory)
    return sorted(destroyed)


# -- internals -----------------------------------------------------------------------------


def _check_dir(data_dir: str | os.PathLike[str], *, create: bool) -> Path:
    if not isinstance(data_dir, str | os.PathLike) or not str(data_dir):
        raise ConfigError("data_dir: must be a directory path")
    directory = Path(data_dir)
    if directory.is_symlink():
        raise ConfigError(f"data_dir: {directory} is a symlink; give the real directory")
    if not directory.exists():
        if not create:
            raise ConfigError(f"data_dir: {directory} does not exist")
        directory.mkdir(mode=0o700, parents=True)
    if not directory.is_dir():
        raise ConfigError(f"data_dir: {directory} is not a directory")
    if directory.resolve() == Path(directory.resolve().anchor):
        raise ConfigError("data_dir: refusing the filesystem root")
    return directory


def _validate_files(files: Mapping[str, bytes]) -> None:
    if not isinstance(files, Mapping) or not files:
        raise ConfigError("files: must be a non-empty mapping of file name to bytes")
    for name, content in files.items():
        if not isinstance(name, str) or not _NAME.match(name) or name.startswith(TEMP_PREFIX):
            raise ConfigError(f"files[{name!r}]: not a plain file name (letters, digits, . _ -)")
        if not isinstance(content, bytes):
            raise ConfigError(
                f"files[{name!r}]: content must be bytes (got {type(content).__name__})"
            )


def _read_nofollow(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _write_one(
    directory: Path, name: str, content: bytes, *, uid: int, gid: int, mode: int
) -> FileWrite:
    target = directory / name
    new_fp = fingerprint(content)
    old_fd: int | None = None
    previous_fp: str | None = None
    try:
        old_fd = os.open(target, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        old_fd = None
    except OSError as exc:
        if exc.errno != errno.ELOOP:  # a symlink is simply replaced by the rename
            raise OperationFailed(
                "write_credentials", f"data/{name}: cannot open ({exc.strerror})"
            ) from None
    try:
        if old_fd is not None:
            st = os.fstat(old_fd)
            if stat.S_ISREG(st.st_mode):
                old = _read_fd(old_fd)
                previous_fp = fingerprint(old)
                if old == content:
                    if st.st_uid == uid and st.st_gid == gid and stat.S_IMODE(st.st_mode) == mode:
                        return FileWrite(name, "unchanged", new_fp, previous_fp)
                    _chown(old_fd, name, uid, gid)
                    os.fchmod(old_fd, mode)
                    os.fsync(old_fd)
                    return FileWrite(name, "metadata-fixed", new_fp, previous_fp)
            else:
                os.close(old_fd)
                old_fd = None
        tmp = _write_temp(directory, name, content, uid=uid, gid=gid, mode=mode)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            _shred(tmp)
            tmp.unlink(missing_ok=True)
            raise OperationFailed(
                "write_credentials", f"data/{name}: rename failed ({exc.strerror})"
            ) from None
        _fsync_dir(directory)
        if old_fd is not None:
            # The old inode is no longer reachable under this name: zero it so the
            # old secret is not readable through any other link or open handle.
            _zero_fd(old_fd)
        return FileWrite(name, "written", new_fp, previous_fp)
    finally:
        if old_fd is not None:
            os.close(old_fd)


def _write_temp(
    directory: Path, name: str, content: bytes, *, uid: int, gid: int, mode: int
) -> Path:
    tmp = directory / f"{TEMP_PREFIX}{name}-{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        _chown(fd, name, uid, gid)
        os.fchmod(fd, mode)
        view = memoryview(content)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _shred(tmp)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def _chown(fd: int, name: str, uid: int, gid: int) -> None:
    try:
        os.fchown(fd, uid, gid)
    except PermissionError:
        raise CredentialsError(
            f"data/{name}: cannot set owner {uid}:{gid} (not permitted for uid {os.geteuid()}); "
            "run as root or configure uid/gid to the current user"
        ) from None


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, _CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def _zero_fd(fd: int) -> None:
    size = os.fstat(fd).st_size
    os.lseek(fd, 0, os.SEEK_SET)
    zeros = bytes(min(size, _CHUNK))
    remaining = size
    while remaining > 0:
        remaining -= os.write(fd, zeros[: min(remaining, _CHUNK)])
    os.fsync(fd)


def _shred(path: Path) -> None:
    """Overwrites a regular file's content with zeros (same length) and fsyncs it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return
        raise OperationFailed(
            "destroy_credentials", f"{path.name}: cannot open ({exc.strerror})"
        ) from None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            _zero_fd(fd)
    finally:
        os.close(fd)


def _remove_stale_temps(directory: Path) -> list[str]:
    removed = []
    for entry in os.scandir(directory):
        if entry.name.startswith(TEMP_PREFIX):
            path = Path(entry.path)
            _shred(path)
            path.unlink(missing_ok=True)
            removed.append(entry.name)
    if removed:
        _fsync_dir(directory)
    return sorted(removed)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a dir
            os.fsync(fd)
    finally:
        os.close(fd)
