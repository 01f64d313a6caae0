"""Session fixtures live in tests/plugins/, one module per real component; every
module there is loaded as a pytest plugin."""

import pkgutil
from pathlib import Path

pytest_plugins = [
    f"tests.plugins.{m.name}"
    for m in pkgutil.iter_modules([str(Path(__file__).parent / "plugins")])
]
