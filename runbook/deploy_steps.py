"""The ``pull`` step of ``prefect.yaml``'s deployments, run by each worker at the start
of every flow run.

Prefect resolves ``{{ $VAR }}`` in ``prefect.yaml`` when ``prefect deploy`` runs, so a
``set_working_directory`` of ``{{ $MCP_IR_HOME }}`` would freeze the deploying
machine's path into every deployment and every worker would need the checkout at
that path. This step reads ``MCP_IR_HOME`` on the worker, when the run starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import ConfigError

CHECKOUT = Path(__file__).resolve().parent.parent


def enter_checkout() -> dict[str, str]:
    """Changes to the worker's checkout: ``$MCP_IR_HOME`` in the worker's environment,
    else the checkout this package is installed from (an editable install, or the
    image's ``/opt/mcp-ir``). Returns ``{"directory": path}`` like Prefect's own
    ``set_working_directory``.

    Raises:
        ConfigError: the directory does not hold the flows (``flows/``).
    """
    home = os.environ.get("MCP_IR_HOME", "").strip()
    directory = Path(home).expanduser() if home else CHECKOUT
    if not (directory / "flows").is_dir():
        raise ConfigError(
            f"MCP_IR_HOME={directory}: no flows/ there; set MCP_IR_HOME in the worker's "
            "environment to the mcp-ir checkout it runs"
        )
    os.chdir(directory)
    return {"directory": str(directory)}
