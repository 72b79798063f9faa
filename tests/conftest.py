"""Every test starts from the same random state, so a failure reproduces."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield
