from pathlib import Path

import pytest

from tests.training.helpers import write_all


@pytest.fixture(scope="session")
def lra_data(tmp_path_factory) -> Path:
    """Every task's files in its official layout (built once per test worker)."""
    return write_all(tmp_path_factory.mktemp("lra-data"))
