"""The bit-true macro against plain integer arithmetic and per-conversion loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from sddhr.config import SpecError
from sddhr.device import CellModel
from sddhr.hardware import (
    ChipInstance,
    bit_true_matmul,
    code_values,
    digitise,
    effective_weights,
    ideal_matmul,
    input_planes,
    layer_seed,
    n_segments,
    plane_weights,
    programmed,
    weight_planes,
)
from tests import helpers


def spec_of(rows=15, adc_bits=4, fs=None, *args, **kw):
    return helpers.spec_of(rows, adc_bits, fs, *args, **kw)


def random_operands(gen: torch.Generator, m: int, out: int, k: int, w_bits: int, x_bits: int):
    lo, hi = -(2 ** (w_bits - 1)), 2 ** (w_bits - 1) - 1
    w = torch.randint(lo, hi + 1, (out, k), generator=gen)
    x = torch.randint(0, 2**x_bits, (m, k), generator=gen)
    # make sure the extremes are exercised
    w[0, :3] = torch.tensor([lo, hi, 0])[: min(3, k)]
    x[0, :2] = torch.tensor([2**x_bits - 1, 0])[: min(2, k)]
    return x, w


def reference_macro(x, contrib, rows, adc_bits, fs, w_bits, x_bits):
    """Per-conversion loop in float64 numpy: segment sums of bit-plane products, the ADC
    ``clip(round(u / step), 0, 2^B - 1)`` (Python's round: ties to even), shift-and-add."""
    x = np.asarray(x, dtype=np.int64)
    c = np.asarray(contrib, dtype=np.float64)  # (B_w, out, K)
    m, k = x.shape
    out = c.shape[1]
    step = fs / 2**adc_bits
    y = np.zeros((m, out))
    for mi, o in itertools.product(range(m), range(out)):
        for s0 in range(0, k, rows):
            seg = slice(s0, min(s0 + rows, k))
            for b in range(x_bits):
                xb = (x[mi, seg] >> b) & 1
                for j in range(w_bits):
                    u = float(np.dot(xb, c[j, o, seg]))
                    code = min(max(round(u / step), 0), 2**adc_bits - 1)
                    sign = -1 if j == w_bits - 1 else 1
                    y[mi, o] += sign * 2 ** (b + j) * code * step
    return y


# ------------------------------------------------------------------------- bit planes


@pytest.mark.parametrize("w_bits", range(1, 9))
def test_weight_planes_decode_to_the_integers(w_bits):
    lo, hi = -(2 ** (w_bits - 1)), 2 ** (w_bits - 1) - 1
    w = torch.arange(lo, hi + 1).view(1, -1)
    planes = weight_planes(w, w_bits)
    assert planes.shape == (w_bits, 1, hi - lo + 1)
    assert set(planes.unique().tolist()) <= {0.0, 1.0}
    decoded = sum(s * planes[j].long() for j, s in enumerate(plane_weights(w_bits)))
    assert torch.equal(decoded, w)
    # the MSB plane is the sign bit
    assert torch.equal(planes[-1].bool(), w < 0)
    with pytest.raises(SpecError):
        weight_planes(torch.tensor([hi + 1]), w_bits)
    with pytest.raises(SpecError):
        weight_planes(torch.tensor([lo - 1]), w_bits)


@pytest.mark.parametrize("x_bits", range(1, 9))
def test_input_planes_decode_to_the_integers(x_bits):
    x = torch.arange(0, 2**x_bits).view(2, -1) if x_bits > 1 else torch.tensor([[0, 1]])
    planes = input_planes(x, x_bits)
    decoded = sum(2**b * planes[b].long() for b in range(x_bits))
    assert torch.equal(decoded, x)
    with pytest.raises(SpecError):
        input_planes(torch.tensor([2**x_bits]), x_bits)
    with pytest.raises(SpecError):
        input_planes(torch.tensor([-1]), x_bits)


def test_plane_weights_and_segments():
    assert plane_weights(1) == [-1]
    assert plane_weights(4) == [1, 2, 4, -8]
    assert [n_segments(k, 16) for k in (1, 15, 16, 17, 32, 33)] == [1, 1, 1, 2, 2, 3]


def test_digitise_rounds_and_clips():
    col = spec_of(rows=16, adc_bits=3, fs=4.0).column  # step 1/2, codes 0..7
    u = torch.tensor([-3.0, -0.2, 0.2, 0.3, 1.74, 1.76, 3.4, 3.8, 100.0])
    assert digitise(u, col).tolist() == [0, 0, 0, 1, 3, 4, 7, 7, 7]
    np.testing.assert_allclose(code_values(col), np.arange(8) * 0.5)


# --------------------------------------------------------------- exactness, no variation


@pytest.mark.parametrize("w_bits, x_bits", list(itertools.product(range(1, 9), range(1, 9))))
def test_ideal_macro_is_exact_integer_arithmetic(w_bits, x_bits):
    """step = 1 and N = 2^B_adc - 1: no conversion clips or coarsens, so the bit-true
    product is x @ w.T exactly; K = 40 spans three segments of 15 (the last one partial)."""
    spec = spec_of(rows=15, adc_bits=4, fs=16.0, w_bits=w_bits, x_bits=x_bits)
    assert spec.column.step == 1.0
    gen = torch.Generator().manual_seed(100 * w_bits + x_bits)
    x, w = random_operands(gen, 5, 3, 40, w_bits, x_bits)
    exact = x.double() @ w.double().T
    assert torch.equal(ideal_matmul(x, w, spec).double(), exact)
    chip = ChipInstance(spec, 0.0, seed=w_bits * x_bits)
    assert torch.equal(chip.matmul(x, w).double(), exact)


@pytest.mark.parametrize("calibrated", [True, False])
@pytest.mark.parametrize("rows, adc_bits, fs", [(16, 8, 32.0), (64, 7, 128.0), (7, 3, None), (5, 8, 0.5 * 256)])
def test_exact_with_fine_adc_and_level_zero(rows, adc_bits, fs, calibrated):
    """1/step an integer and the full scale covering N: still exact, for chips at level 0
    (calibrated or not) and for the ideal planes. (7, 3, None) has step 7/8 and coarsens:
    there the result must differ for some inputs -- the test checks that too."""
    spec = spec_of(rows=rows, adc_bits=adc_bits, fs=fs, w_bits=5, x_bits=3, calibrated=calibrated)
    gen = torch.Generator().manual_seed(rows)
    x, w = random_operands(gen, 6, 4, 3 * rows + 2, 5, 3)
    exact = x.double() @ w.double().T
    got_ideal = ideal_matmul(x, w, spec).double()
    got_chip = ChipInstance(spec, 0, seed=5).matmul(x, w).double()
    assert torch.equal(got_ideal, got_chip)
    if spec.column.lossless:
        assert torch.equal(got_ideal, exact)
    else:
        assert not torch.equal(got_ideal, exact)


@pytest.mark.parametrize(
    "rows, adc_bits, fs",
    [
        (16, 2, 12.0),  # step 3: coarsens (no ties: k / 3 is never x.5) and clips above 10.5
        (16, 3, 4.0),  # step 1/2 but full scale 4: clips sums above 3.5
        (8, 2, 8.0),  # step 2: ties at odd counts go to the even code
        (16, 3, None),  # step 2, full scale 16: coarsens and clips 15, 16
    ],
)
def test_coarse_or_clipping_adc_matches_per_conversion_loop(rows, adc_bits, fs):
    spec = spec_of(rows=rows, adc_bits=adc_bits, fs=fs, w_bits=3, x_bits=2)
    gen = torch.Generator().manual_seed(42)
    x, w = random_operands(gen, 4, 3, 2 * rows + 3, 3, 2)
    # dense operands so that the sums reach the clipping region
    x[1:] = 2**2 - 1
    w[1] = -1  # all weight bits set
    planes = weight_planes(w, 3)
    want = reference_macro(x, planes, rows, adc_bits, spec.column.fs, 3, 2)
    got = ideal_matmul(x, w, spec).double().numpy()
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(want, (x.double() @ w.double().T).numpy())  # the ADC did something


def test_clipping_closed_form_single_column():
    """One segment of N = 16 all-ones cells, B_w = 1 (the single plane has weight -1),
    B_x = 1: y = -step * min(round(16 / step), 2^B - 1)."""
    for adc_bits, fs in [(3, 4.0), (2, 16.0), (4, 8.0), (5, 64.0)]:
        spec = spec_of(rows=16, adc_bits=adc_bits, fs=fs, w_bits=1, x_bits=1)
        step = fs / 2**adc_bits
        y = ideal_matmul(torch.ones(1, 16, dtype=torch.long), -torch.ones(1, 16, dtype=torch.long), spec)
        assert y.item() == -step * min(round(16 / step), 2**adc_bits - 1)


def test_bit_true_matmul_shape_errors():
    spec = spec_of(w_bits=4)
    with pytest.raises(SpecError, match="weight planes"):
        bit_true_matmul(torch.zeros(2, 5, dtype=torch.long), torch.zeros(3, 2, 5), spec)
    with pytest.raises(SpecError, match="columns"):
        bit_true_matmul(torch.zeros(2, 6, dtype=torch.long), torch.zeros(4, 2, 5), spec)
    assert bit_true_matmul(torch.zeros(0, 5, dtype=torch.long), torch.zeros(4, 2, 5), spec).shape == (0, 2)


def test_chunking_does_not_change_the_result():
    spec = spec_of(rows=16, adc_bits=5, fs=16.0, w_bits=3, x_bits=3)
    gen = torch.Generator().manual_seed(8)
    x, w = random_operands(gen, 37, 5, 50, 3, 3)
    contrib = ChipInstance(spec, 3, seed=2).program(w)
    a = bit_true_matmul(x, contrib, spec)
    b = bit_true_matmul(x, contrib, spec, chunk_elems=100)  # one row per chunk
    assert torch.equal(a, b)


# -------------------------------------------------------------------------- chip instances


def test_chip_instance_is_a_deterministic_function_of_its_seed():
    spec = spec_of(rows=16, adc_bits=6, fs=16.0, w_bits=4, x_bits=4)
    gen = torch.Generator().manual_seed(0)
    x, w = random_operands(gen, 8, 6, 40, 4, 4)
    a1 = ChipInstance(spec, 4, seed=11).matmul(x, w)
    a2 = ChipInstance(spec, 4, seed=11).matmul(x, w)
    b = ChipInstance(spec, 4, seed=12).matmul(x, w)
    assert torch.equal(a1, a2)
    assert not torch.equal(a1, b)
    # different layers of one chip get different cells, each reproducible
    chip = ChipInstance(spec, 4, seed=11)
    c0, c1 = chip.cells(0, 6, 40)[0], chip.cells(1, 6, 40)[0]
    assert not torch.equal(c0, c1) and torch.equal(c1, chip.cells(1, 6, 40)[0])
    assert layer_seed(11, 0) != layer_seed(11, 1) != layer_seed(12, 1)
    assert 0 <= layer_seed(2**40 + 3, 7) < 2**63


def test_chip_instance_matches_per_conversion_loop():
    spec = spec_of(rows=16, adc_bits=6, fs=32.0, w_bits=3, x_bits=3)  # step 1/2
    gen = torch.Generator().manual_seed(1)
    x, w = random_operands(gen, 4, 3, 37, 3, 3)
    chip = ChipInstance(spec, 6, seed=3)
    contrib = chip.program(w)
    c_p, c_ap = chip.cells(0, 3, 37)
    planes = weight_planes(w, 3)
    assert torch.equal(contrib, torch.where(planes.bool(), c_p, c_ap))
    assert torch.equal(programmed(planes, c_p, c_ap), contrib)
    want = reference_macro(x, contrib, 16, 6, 32.0, 3, 3)
    got = chip.matmul(x, w).double().numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)


def test_effective_weights_equal_the_unrounded_macro():
    """x @ effective_weights.T == sum over segments and planes of 2^(b+j) s_j u(seg, b, j),
    the readouts before the ADC (loop below), for a chip at level 5."""
    spec = spec_of(rows=8, w_bits=4, x_bits=3)
    gen = torch.Generator().manual_seed(4)
    x, w = random_operands(gen, 3, 4, 21, 4, 3)
    contrib = ChipInstance(spec, 5, seed=9).program(w).double()
    eff = effective_weights(contrib, 4)
    assert eff.shape == (4, 21)
    fast = x.double() @ eff.T
    c = contrib.numpy()
    xs = x.numpy()
    want = np.zeros((3, 4))
    for mi, o, b, j in itertools.product(range(3), range(4), range(3), range(4)):
        s = -1 if j == 3 else 1
        for s0 in range(0, 21, 8):
            u = sum(((xs[mi, i] >> b) & 1) * c[j, o, i] for i in range(s0, min(s0 + 8, 21)))
            want[mi, o] += s * 2 ** (b + j) * u
    np.testing.assert_allclose(fast.numpy(), want, rtol=1e-12, atol=1e-9)
    # and without variation the effective weights are the integers themselves
    assert torch.equal(effective_weights(weight_planes(w, 4).double(), 4), w.double())


def test_fine_adc_chip_stays_within_the_rounding_bound_of_the_fast_form():
    """With a fine ADC, each conversion is off by at most step / 2, plus ``-u`` where the
    readout ``u`` is negative (clipped to code 0; no readout reaches the top code here), so
    |bit-true - fast| <= sum_{seg,b,j} 2^(b+j) (step / 2 + max(0, -u))."""
    spec = spec_of(rows=16, adc_bits=10, fs=64.0, w_bits=4, x_bits=4)  # step 1/16, codes to ~64
    gen = torch.Generator().manual_seed(6)
    x, w = random_operands(gen, 10, 5, 48, 4, 4)
    chip = ChipInstance(spec, 1, seed=4)
    contrib = chip.program(w)
    xb = input_planes(x, 4).reshape(4, 10, 3, 16).double()
    u = torch.einsum("bmsn,josn->bjsmo", xb, contrib.reshape(4, 5, 3, 16).double())
    assert u.max() < (2**10 - 1) * spec.column.step  # precondition: no clipping at the top
    coef = (2.0 ** torch.arange(4.0)).view(4, 1) * (2.0 ** torch.arange(4.0)).view(1, 4)
    bound = (coef.view(4, 4, 1, 1, 1) * (spec.column.step / 2 + torch.relu(-u))).sum(dim=(0, 1, 2))
    slow = chip.matmul(x, w).double()
    fast = x.double() @ effective_weights(contrib.double(), 4).T
    assert bool(((slow - fast).abs() <= bound + 1e-4).all())
    assert (slow - fast).abs().max() > 0  # the ADC did round


@pytest.mark.parametrize("level", [1, 8])
def test_chip_cells_follow_the_cell_model(level):
    """The torch sampler of a chip's cells against the model's moments (many cells)."""
    spec = spec_of(w_bits=8)
    chip = ChipInstance(spec, level, seed=77)
    c_p, c_ap = chip.cells(3, 250, 100, dtype=torch.float64)
    cm = CellModel(spec.device, level)
    for c, state in ((c_p, "P"), (c_ap, "AP")):
        c = c.numpy().ravel()
        n = len(c)
        assert abs(c.mean() - cm.mean(state)) < 5 * c.std() / math.sqrt(n)
        se_v = math.sqrt((np.mean((c - c.mean()) ** 4) - c.var() ** 2) / n)
        assert abs(c.var() - cm.var(state)) < 5 * se_v
