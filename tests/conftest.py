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


# ------------------------------------------------------- experiment / CLI tests (train, evaluate, explore)


class TinySplit:
    """In-memory split with the data-split protocol train() uses (in_shape, classes, batches):
    three well separated clusters of 1 x 4 x 4 images."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        centers = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, -2.0]])
        base = centers[self.y].repeat_interleave(8, 1).view(n, 1, 4, 4)
        self.x = base + 0.5 * torch.randn(n, 1, 4, 4, generator=g)
        self.in_shape, self.classes = (1, 4, 4), 3
        self.fail_after: int | None = None  # simulate a kill after this many batches

    def __len__(self):
        return len(self.y)

    def batches(self, batch_size, shuffle=False, augment=False, generator=None):
        idx = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for i, s in enumerate(range(0, len(self), batch_size)):
            if self.fail_after is not None and i >= self.fail_after:
                raise KeyboardInterrupt("simulated kill")
            j = idx[s : s + batch_size]
            yield self.x[j], self.y[j]


@pytest.fixture
def tiny_split():
    """Factory: ``tiny_split(n, seed)`` -> a :class:`TinySplit`."""
    return TinySplit


@pytest.fixture(scope="module")
def tiny_splits():
    """A (train, test) pair of tiny splits: 96 and 48 images."""
    return TinySplit(96, 0), TinySplit(48, 1)
