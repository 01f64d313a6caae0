"""The run's checkpoint observer (``runbook.observers.FACTORIES``): signs the trail
head with the engine key at every gate, every N records or seconds, and when the
run ends (see :mod:`core.checkpoints`). Listed before the WORM copy, so that the
run-end checkpoint exists when the copy drains."""

from __future__ import annotations

from typing import Any

from core.checkpoints import Checkpointer


class CheckpointObserver:
    def __init__(self, checkpointer: Checkpointer) -> None:
        self.checkpointer = checkpointer

    def on_record(self, record: Any) -> None:
        self.checkpointer.on_record(record)

    def close(self) -> None:
        self.checkpointer.finish()


def build(runner: Any) -> CheckpointObserver | None:
    """None when the inventory has no ``engine`` section (the trail is then reported
    "not checkpointed" by ``mcp-ir verify``).

    Raises:
        ConfigError: the engine key is configured but cannot be loaded.
    """
    from runbook.decisions import engine_key

    key = engine_key(runner.inventory)
    if key is None:
        return None
    cfg = runner.inventory.engine
    return CheckpointObserver(
        Checkpointer(
            runner.trail.dir,
            key,
            every_records=cfg.checkpoint_every_records,
            every_s=cfg.checkpoint_every_s,
        )
    )
