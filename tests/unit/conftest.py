"""Unit-test fixtures shared by the model-layer tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded_torch():
    """Every test starts from the same torch seed, so random parameters and inputs repeat."""
    torch.manual_seed(0)
