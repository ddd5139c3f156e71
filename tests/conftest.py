"""Shared pytest fixtures."""

from __future__ import annotations

import pytest
import torch

# ------------------------------------------------------------------ hardware / nn tests


@pytest.fixture
def one_thread():
    """Small tensors: one intra-op thread is faster, and immune to a busy machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
