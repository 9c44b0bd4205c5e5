import shutil
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="session")
def node_client() -> Path:
    """The @fluent-org/logger driver script; installed by the test command (npm ci in tests/node)."""
    if shutil.which("node") is None:
        pytest.fail("node is not installed: the test command installs it (see Makefile)")
    if not (NODE_DIR / "node_modules" / "@fluent-org" / "logger").is_dir():
        pytest.fail("tests/node/node_modules is missing: run `make test` (it runs npm ci in tests/node)")
    return NODE_DIR / "send.js"
