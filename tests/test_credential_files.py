"""The Compose data/ store on a real filesystem (tests run as root, so chown works)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.redact import fingerprint
from tasks.certificates import new_ca, server_cert
from tasks.credential_files import (
    DATA_FILES,
    TEMP_PREFIX,
    destroy_credentials,
    read_fingerprints,
    write_credentials,
)

CANARY = b"tnltok_CANARY-old-token-0123456789"
NEW = b"tnltok_CANARY-new-token-9876543210"


def _material(token: bytes) -> dict[str, bytes]:
    ca = new_ca("files")
    srv = server_cert(ca, "t-1.tunnels.example")
    return {
        "tunnel-id": b"tnl_01",
        "tunnel-domain": b"t-1.tunnels.example",
        "tunnel-token": token,
        "ca.crt": ca.cert_pem.encode(),
        "ca.key": ca.key_pem.get_secret_value().encode(),
        "tls.crt": srv.cert_pem.encode(),
        "tls.key": srv.key_pem.get_secret_value().encode(),
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A Compose project layout: data/ with siblings config/ and the compose file."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("listen: :8080\n")
    (tmp_path / "docker-compose.yaml").write_text("services: {}\n")
    (tmp_path / "data").mkdir()
    return tmp_path


def _all_bytes_under(directory: Path) -> bytes:
    blob = b""
    for root, _dirs, names in os.walk(directory):
        for name in names:
            blob += (Path(root) / name).read_bytes()
    return blob


def test_write_sets_owner_mode_and_leaves_no_temp(project: Path) -> None:
    data = project / "data"
    files = _material(CANARY)
    result = write_credentials(data, files)
    assert sorted(os.listdir(data)) == sorted(DATA_FILES)
    for name in DATA_FILES:
        st = (data / name).stat()
        assert stat.S_IMODE(st.st_mode) == 0o600, name
        assert (st.st_uid, st.st_gid) == (65532, 65532), name
        assert (data / name).read_bytes() == files[name]
        assert result.files[name].action == "written"
        assert result.files[name].fingerprint == fingerprint(files[name])
        assert result.files[name].previous_fingerprint is None
    assert result.changed
    assert read_fingerprints(data) == {n: fingerprint(c) for n, c in files.items()}
    assert not [n for n in os.listdir(data) if n.startswith(TEMP_PREFIX)]


def test_rewrite_same_content_is_a_reported_noop(project: Path) -> None:
    data = project / "data"
    files = _material(CANARY)
    write_credentials(data, files)
    inodes = {n: (data / n).stat().st_ino for n in files}
    again = write_credentials(data, files)
    assert not again.changed
    assert {f.action for f in again.files.values()} == {"unchanged"}
    assert {n: (data / n).stat().st_ino for n in files} == inodes  # nothing replaced


def test_metadata_drift_is_fixed_in_place(project: Path) -> None:
    data = project / "data"
    write_credentials(data, {"tunnel-token": CANARY})
    os.chmod(data / "tunnel-token", 0o644)
    os.chown(data / "tunnel-token", 0, 0)
    result = write_credentials(data, {"tunnel-token": CANARY})
    assert result.files["tunnel-token"].action == "metadata-fixed"
    st = (data / "tunnel-token").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 65532, 65532)


def test_rotation_leaves_old_secret_unreadable_everywhere(project: Path) -> None:
    data = project / "data"
    write_credentials(data, {"tunnel-token": CANARY})
    # An outside hard link and an open handle on the old file (e.g. a process that
    # read it) — both must see zeros once the rotation replaced it.
    outside = project / "old-token-link"
    os.link(data / "tunnel-token", outside)
    held = open(data / "tunnel-token", "rb")  # noqa: SIM115
    try:
        result = write_credentials(data, {"tunnel-token": NEW})
        entry = result.files["tunnel-token"]
        assert entry.action == "written"
        assert entry.previous_fingerprint == fingerprint(CANARY)
        assert entry.fingerprint == fingerprint(NEW)
        assert (data / "tunnel-token").read_bytes() == NEW
        assert CANARY not in _all_bytes_under(data)
        assert outside.read_bytes() == b"\0" * len(CANARY)
        held.seek(0)
        assert held.read() == b"\0" * len(CANARY)
    finally:
        held.close()
    assert os.listdir(data) == ["tunnel-token"]  # no backup, no temp


def test_custom_owner_and_mode(project: Path) -> None:
    data = project / "data"
    write_credentials(data, {"ca.crt": b"cert"}, uid=1000, gid=1001, mode=0o640)
    st = (data / "ca.crt").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1000, 1001)


def test_stale_temp_from_a_crashed_run_is_shredded(project: Path) -> None:
    data = project / "data"
    stale = data / f"{TEMP_PREFIX}tunnel-token-deadbeef0000"
    stale.write_bytes(CANARY)  # what a run killed between write and rename leaves
    link = project / "stale-link"
    os.link(stale, link)
    result = write_credentials(data, {"tunnel-token": NEW})
    assert result.stale_temp_removed == [stale.name]
    assert os.listdir(data) == ["tunnel-token"]
    assert link.read_bytes() == b"\0" * len(CANARY)


def test_symlinked_target_is_replaced_not_written_through(project: Path) -> None:
    data = project / "data"
    victim = project / "victim"
    victim.write_bytes(b"do not touch")
    (data / "tls.key").symlink_to(victim)
    write_credentials(data, {"tls.key": NEW})
    assert victim.read_bytes() == b"do not touch"
    assert not (data / "tls.key").is_symlink()
    assert (data / "tls.key").read_bytes() == NEW


@pytest.mark.parametrize(
    ("files", "field"),
    [
        ({"../escape": b"x"}, "files['../escape']"),
        ({"a/b": b"x"}, "files['a/b']"),
        ({f"{TEMP_PREFIX}x": b"x"}, f"files['{TEMP_PREFIX}x']"),
        ({"tunnel-token": "str-not-bytes"}, "files['tunnel-token']"),
        ({}, "files"),
    ],
)
def test_bad_input_names_the_field(project: Path, files: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        write_credentials(project / "data", files)
    assert err.value.detail.startswith(f"{field}:")
    assert "str-not-bytes" not in err.value.detail
    assert os.listdir(project / "data") == []


def test_bad_mode_and_data_dir_are_refused(project: Path) -> None:
    with pytest.raises(ConfigError, match=r"^mode:"):
        write_credentials(project / "data", {"ca.crt": b"x"}, mode=0o666)
    with pytest.raises(ConfigError, match=r"^data_dir:"):
        write_credentials(project / "docker-compose.yaml", {"ca.crt": b"x"})


def test_destroy_leaves_nothing_and_keeps_siblings(project: Path) -> None:
    data = project / "data"
    files = _material(CANARY)
    write_credentials(data, files)
    (data / "ca.srl").write_bytes(b"01\n")  # manual flow's openssl serial file
    outside = project / "token-link"
    os.link(data / "tunnel-token", outside)
    destroyed = destroy_credentials(data)
    assert destroyed == sorted([*DATA_FILES, "ca.srl"])
    assert os.listdir(data) == []
    assert read_fingerprints(data) == {}
    # The content was overwritten before the unlink, not just unlinked.
    assert outside.read_bytes() == b"\0" * len(CANARY)
    assert (project / "config" / "config.yaml").read_text() == "listen: :8080\n"
    assert (project / "docker-compose.yaml").read_text() == "services: {}\n"
    assert destroy_credentials(data) == []  # re-running is harmless
    assert destroy_credentials(data, remove_dir=True) == []
    assert not data.exists()
    assert destroy_credentials(data) == []  # absent: harmless


def test_destroy_refuses_the_project_directory(project: Path) -> None:
    with pytest.raises(ConfigError) as err:
        destroy_credentials(project)
    assert err.value.detail.startswith("data_dir:") and "project directory" in err.value.detail
    assert (project / "docker-compose.yaml").exists()


def test_destroy_does_not_write_through_symlinks(project: Path) -> None:
    data = project / "data"
    victim = project / "victim"
    victim.write_bytes(b"keep me")
    (data / "tls.crt").symlink_to(victim)
    assert destroy_credentials(data) == ["tls.crt"]
    assert victim.read_bytes() == b"keep me"


def test_no_secret_in_logs_or_results(project: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    data = project / "data"
    write_credentials(data, {"tunnel-token": CANARY})
    result = write_credentials(data, {"tunnel-token": NEW})
    destroy_credentials(data)
    shown = caplog.text + repr(result) + str(result.fingerprints)
    assert fingerprint(NEW) in shown
    for secret in (CANARY, NEW):
        assert secret.decode() not in shown
