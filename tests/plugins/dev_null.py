"""Fails the test during which ``/dev/null`` stopped being the null device.

It happened once on this machine (a regular file owned by UID 65532, the stack
containers' user, stood in its place) and broke every later ``initdb`` and shell
redirect; this names the test that did it and puts the device back.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import pytest


def _is_null_device() -> bool:
    st = os.stat("/dev/null")
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3


def _restore() -> None:
    if os.geteuid() == 0:
        os.unlink("/dev/null")
        os.mknod("/dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod("/dev/null", 0o666)


@pytest.fixture(autouse=True)
def dev_null_stays_a_device() -> Iterator[None]:
    if not _is_null_device():
        _restore()
    yield
    if not _is_null_device():
        st = os.stat("/dev/null")
        _restore()
        pytest.fail(
            f"/dev/null became a regular file during this test (owner {st.st_uid}, "
            f"mode {oct(st.st_mode)}); restored"
        )
