"""Compose credentials: the ``data/`` files the stack reads (FACTS §1), written
atomically (0600, owned as the containers expect) and destroyed by overwriting.

Every write or removal is admitted by the run's operation guard first (``files``
operations on ``<data_dir>/<name>``), like every API call."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

from core.errors import ConfigError, StepFailed
from core.operations import Operation
from core.redact import fingerprint
from runbook.context import StepContext
from targets.base import CREDENTIAL_KEYS, SECRET_KEYS, PlanPart

DATA_MODE = 0o600


def data_dir(ctx: StepContext) -> Path:
    cfg = ctx.target.compose
    assert cfg is not None
    return Path(cfg.data_dir)


def file_op(ctx: StepContext, verb: str, name: str) -> Operation:
    return Operation("files", verb, str(data_dir(ctx) / name))


def read_credentials(ctx: StepContext) -> dict[str, str]:
    """The text of every credential file present in ``data/`` (in memory only; the
    secret ones are registered with the trail's redactor)."""
    out: dict[str, str] = {}
    for name in CREDENTIAL_KEYS:
        try:
            out[name] = (data_dir(ctx) / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if name in SECRET_KEYS:
            ctx.redactor.add(out[name].strip())
    return out


def require(ctx: StepContext, *names: str) -> dict[str, str]:
    """The named files, or ``StepFailed`` naming the first unreadable one."""
    values = read_credentials(ctx)
    for name in names:
        if name not in values:
            raise StepFailed(ctx.step, f"data/{name}: cannot read ({data_dir(ctx) / name})")
    return {n: values[n] for n in names}


def write_plan(ctx: StepContext, keys: tuple[str, ...]) -> PlanPart:
    return PlanPart(
        resources=[f"file:{data_dir(ctx) / k}" for k in keys],
        operations=[
            Operation("files", "write", str(data_dir(ctx) / k), note="atomic, 0600") for k in keys
        ],
    )


def write(ctx: StepContext, values: dict[str, str]) -> dict[str, Any]:
    """Atomic writes into ``data/``; returns each file's action and fingerprints."""
    from tasks import credential_files

    cfg = ctx.target.compose
    assert cfg is not None
    for name in values:
        ctx.guard.admit(file_op(ctx, "write", name))
    result = credential_files.write_credentials(
        cfg.data_dir,
        {k: v.encode() for k, v in values.items()},
        uid=cfg.data_uid,
        gid=cfg.data_gid,
    )
    return {
        name: {
            "action": f.action,
            "fingerprint": f.fingerprint,
            "previous_fingerprint": f.previous_fingerprint,
        }
        for name, f in result.files.items()
    }


def metadata_problems(ctx: StepContext) -> list[str]:
    """Files of ``data/`` that are not mode 0600 or not owned by the configured owner."""
    from tasks import credential_files

    cfg = ctx.target.compose
    assert cfg is not None
    found = []
    for name in credential_files.DATA_FILES:
        st = os.stat(Path(cfg.data_dir) / name, follow_symlinks=False)
        if stat.S_IMODE(st.st_mode) != DATA_MODE:
            found.append(f"data/{name}: mode {oct(stat.S_IMODE(st.st_mode))}, expected 0o600")
        if (st.st_uid, st.st_gid) != (cfg.data_uid, cfg.data_gid):
            found.append(
                f"data/{name}: owner {st.st_uid}:{st.st_gid}, expected {cfg.data_uid}:{cfg.data_gid}"
            )
    return found


# -- teardown ------------------------------------------------------------------------


def remove_config(ctx: StepContext) -> bool:
    value = ctx.params.get("remove_config", False)
    if not isinstance(value, bool):
        raise ConfigError(f"params.remove_config: must be true or false (got {value!r})")
    return value


def config_paths(ctx: StepContext) -> list[Path]:
    cfg = ctx.target.compose
    assert cfg is not None
    return [p for p in (cfg.config_dir, cfg.compose_file) if p is not None]


def remove_plan(ctx: StepContext) -> PlanPart:
    from tasks import credential_files

    present = sorted(credential_files.read_fingerprints(data_dir(ctx)))
    remove = remove_config(ctx)
    return PlanPart(
        summary=(
            f"overwrite with zeros and unlink {len(present)} file(s) in {data_dir(ctx)}; "
            f"config/ and the compose file {'removed' if remove else 'kept'}"
        ),
        resources=[
            *(f"file:{data_dir(ctx) / n}" for n in present),
            *(f"file:{p}" for p in config_paths(ctx) if remove),
        ],
        operations=[
            Operation("files", "delete", str(data_dir(ctx) / "*"), note="zeroed, fsynced"),
            *(Operation("files", "delete", str(p)) for p in config_paths(ctx) if remove),
        ],
        parameters={"remove_config": remove, "data_dir": str(data_dir(ctx))},
    )


def left(ctx: StepContext) -> list[str]:
    from tasks import credential_files

    found = [f"data/{n}" for n in credential_files.read_fingerprints(data_dir(ctx))]
    if remove_config(ctx):
        found += [str(p) for p in config_paths(ctx) if p.exists()]
    return found


def remove(ctx: StepContext) -> dict[str, Any]:
    from tasks import credential_files

    before = credential_files.read_fingerprints(data_dir(ctx))
    for name in before:
        ctx.guard.admit(file_op(ctx, "delete", name))
    destroyed = credential_files.destroy_credentials(data_dir(ctx))
    data: dict[str, Any] = {
        "data_dir": str(data_dir(ctx)),
        "destroyed": destroyed,
        "fingerprints": before,
    }
    ctx.record("credentials.destroyed", data)
    if remove_config(ctx):
        removed = []
        for path in config_paths(ctx):
            if path.exists():
                ctx.guard.admit(Operation("files", "delete", str(path)))
            if path.is_dir():
                shutil.rmtree(path)
                removed.append(str(path))
            elif path.exists():
                path.unlink()
                removed.append(str(path))
        ctx.record("config.removed", {"paths": removed})
        data["config_removed"] = removed
    return data


def token_fingerprint(ctx: StepContext) -> str | None:
    try:
        stored = (data_dir(ctx) / "tunnel-token").read_text().strip()
    except OSError:
        return None
    return fingerprint(stored) if stored else None
