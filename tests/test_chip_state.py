"""A layer's state on a chip (:mod:`sddhr.nn.chip_state`) and redundancy.

References: the cells and static ADC errors of :class:`sddhr.hardware.ChipInstance` drawn
directly from the chip's seed (copy ``c`` of a layer is the chip's layer ``layer_id + c *
COPY_STRIDE``); draws counted and tracked by weak reference (a chip already drawn is not
drawn again, a new chip's draw starts after the old one is gone); redundancy against the
mean, taken by hand in copy order, of single-copy layers that sit on each copy's columns.
"""

from __future__ import annotations

import dataclasses
import weakref

import numpy as np
import pytest
import torch

from sddhr.config import make_spec
from sddhr.hardware import ChipInstance
from sddhr.nn import IMCConv2d, IMCLinear, Mode
from sddhr.nn.chip_state import ChipColumns, LayerChip
from sddhr.nn.context import ProductContext
from sddhr.nn.layers import COPY_STRIDE
from tests import helpers

pytestmark = pytest.mark.usefixtures("one_thread")

LEVEL, SEED = 6.0, 11


def noisy_spec(rows=16, adc_bits=8):
    """A spec whose columns have static ADC offset and gain errors (no temporal noise)."""
    return make_spec({"column": {"rows": rows, "adc_bits": adc_bits, "adc_offset_lsb": 0.4, "adc_gain_rel": 0.03},
                      "macro": {"w_bits": 4, "x_bits": 4}})


def linear_case(layer_id=3, spec=None, k=40, out=5, seed=0):
    layer = IMCLinear(k, out, bias=False, spec=spec or noisy_spec(), layer_id=layer_id)
    w = helpers.int_weights(np.random.default_rng(seed), (out, k), 4)
    helpers.program_layer(layer, w)
    x = torch.randint(0, 16, (7, k), generator=torch.Generator().manual_seed(seed)).float()
    return layer, x, w


@pytest.fixture
def count_draws(monkeypatch):
    """Every ChipInstance.cells call, as (layer_id, whether the previously drawn cells were still alive)."""
    calls: list[tuple[int, bool]] = []
    last: list[weakref.ref] = []
    real = ChipInstance.cells

    def cells(self, layer_id, out, k, device=None, dtype=torch.float32):
        calls.append((layer_id, bool(last) and last[-1]() is not None))
        c = real(self, layer_id, out, k, device, dtype)
        last.append(weakref.ref(c[0]))
        return c

    monkeypatch.setattr(ChipInstance, "cells", cells)
    return calls


def test_copies_are_the_chip_instance_drawn_from_the_seed():
    spec = noisy_spec(rows=8)
    layer = IMCConv2d(3, 4, 3, padding=1, spec=spec, layer_id=5)
    out, k = 4, 3 * 3 * 3
    chip = ChipInstance(spec, LEVEL, SEED)
    seen = []
    for c in range(3):
        cols = layer.chip(LEVEL, SEED, "cpu", copy=c)
        ref_p, ref_ap = chip.cells(5 + c * COPY_STRIDE, out, k)
        assert torch.equal(cols.cells[0], ref_p) and torch.equal(cols.cells[1], ref_ap)
        gain, offset = cols.adc
        ref_gain, ref_offset = chip.adc_errors(5 + c * COPY_STRIDE, out, k)
        assert torch.equal(gain, ref_gain) and torch.equal(offset, ref_offset)
        assert gain.shape == (4, out, 4)  # (B_w, out, segments of 8 rows in 27)
        assert layer.chip_cells(LEVEL, SEED, "cpu", copy=c)[0] is cols.cells[0]  # the kept draw
        seen.append(ref_p)
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])  # independent copies


def test_switching_modes_on_one_chip_draws_nothing(count_draws):
    layer, x, _ = linear_case()
    with torch.no_grad():
        for mode in (Mode.instance(LEVEL, SEED, "bit_true", copies=2), Mode.instance(LEVEL, SEED, "fast", copies=2),
                     Mode.float(), Mode.ideal(), Mode.stochastic(LEVEL, "faithful"),
                     Mode.instance(LEVEL, SEED, "bit_true", copies=2)):
            layer.mode = mode
            layer(x)
    assert [lid for lid, _ in count_draws] == [3, 3 + COPY_STRIDE]  # each copy drawn once


def test_a_new_chip_frees_the_old_draw_first(count_draws):
    layer, x, _ = linear_case()
    with torch.no_grad():
        layer.mode = Mode.instance(LEVEL, SEED, "bit_true")
        layer(x)
        old = weakref.ref(layer.chip(LEVEL, SEED, "cpu").cells[0])
        layer.mode = Mode.instance(LEVEL, SEED + 1, "bit_true")
        layer(x)
    assert old() is None
    assert count_draws == [(3, False), (3, False)]  # the first chip was gone when the second was drawn
    assert set(layer.chip_state.kept()) == {0}


def test_layer_chip_keeps_the_last_chip_per_copy():
    spec = noisy_spec()
    held = LayerChip()
    a = held.columns(0, spec, LEVEL, SEED, 3, 5, 40, "cpu")
    assert held.columns(0, spec, LEVEL, SEED, 3, 5, 40, "cpu") is a
    b = held.columns(1, spec, LEVEL, SEED, 3 + COPY_STRIDE, 5, 40, "cpu")
    assert held.kept() == {0: a, 1: b}
    drawn = weakref.ref(a.cells[0])
    c = held.columns(0, spec, LEVEL + 1.0, SEED, 3, 5, 40, "cpu")  # another chip for copy 0
    assert c is not a and not c.drawn and held.kept() == {0: c, 1: b}
    del a
    assert drawn() is None


def test_derived_values_are_kept_per_key_and_go_with_the_mode():
    layer, _, _ = linear_case()
    made = []

    def make():
        made.append(1)
        return len(made)

    cols = layer.chip(LEVEL, SEED, "cpu")
    assert not cols.drawn and cols.cells[0].shape == (4, 5, 40) and cols.drawn
    assert cols.derived("t", "k1", make) == 1
    assert cols.derived("t", "k1", make) == 1 and len(made) == 1
    assert cols.derived("t", "k2", make) == 2
    layer.mode = Mode.float()  # the backend that derived it goes
    assert layer.chip(LEVEL, SEED, "cpu") is cols and cols.drawn
    assert cols.derived("t", "k2", make) == 3


def test_changed_weights_are_programmed_again():
    """The programmed contributions kept on the chip follow in-place weight updates: the
    layer after the update equals a fresh layer holding the new weights on the same chip."""
    for impl in ("bit_true", "fast"):
        layer, x, w = linear_case()
        layer.mode = Mode.instance(LEVEL, SEED, impl)
        with torch.no_grad():
            layer(x)
            layer.weight.neg_()
            y = layer(x)
            fresh, _, _ = linear_case()
            helpers.program_layer(fresh, -w)
            fresh.mode = Mode.instance(LEVEL, SEED, impl)
            assert torch.equal(y, fresh(x))


@pytest.mark.parametrize("impl", ["bit_true", "fast"])
def test_redundancy_is_the_mean_of_single_copy_layers(impl):
    """Copy ``c`` of layer 3 sits on the chip's columns of layer ``3 + c * COPY_STRIDE``: the
    redundant output is bit-identical to ``(y_0 + y_1 + y_2) / 3`` of single-copy layers with
    those ids, summed in copy order."""
    layer, x, w = linear_case()
    layer.mode = Mode.instance(LEVEL, SEED, impl, copies=3)
    with torch.no_grad():
        y = layer(x)
        singles = []
        for c in range(3):
            twin, _, _ = linear_case(layer_id=3 + c * COPY_STRIDE)
            twin.mode = Mode.instance(LEVEL, SEED, impl)
            singles.append(twin(x))
    expected = singles[0].clone()
    expected += singles[1]
    expected += singles[2]
    expected /= 3
    assert torch.equal(y, expected)
    assert not torch.equal(singles[0], singles[1])


def test_product_context_is_immutable_and_hands_its_copy():
    layer, _, _ = linear_case()
    ctx = ProductContext(layer, 2)
    cols = ctx.chip(LEVEL, SEED, torch.device("cpu"))
    assert isinstance(cols, ChipColumns) and cols is layer.chip(LEVEL, SEED, torch.device("cpu"), copy=2)
    assert cols.layer_id == 3 + 2 * COPY_STRIDE
    assert ctx.chip_cells(LEVEL, SEED, torch.device("cpu"))[0] is cols.cells[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.copy_index = 0  # type: ignore[misc]
