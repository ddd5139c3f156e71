"""The backend structure: layers are real torch layers, each mode has one backend object per
layer, a new backend plugs in without touching the layers, and the weight-noise baseline has
the closed-form moments of its definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sddhr.config import SpecError
from sddhr.nn import Backend, IMCConv2d, IMCLinear, Mode, convert, imc_layers, make_backend, register
from sddhr.nn.backends import registered
from sddhr.nn.mode import IMPLS, KINDS, VARIANTS
from tests import helpers

pytestmark = pytest.mark.usefixtures("one_thread")


def test_layers_are_torch_layers():
    lin, conv = IMCLinear(5, 3), IMCConv2d(2, 4, 3, padding=1)
    assert isinstance(lin, nn.Linear) and isinstance(conv, nn.Conv2d)
    model = convert(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), helpers.spec_of())
    assert [type(m) for _, m in imc_layers(model)] == [IMCLinear, IMCLinear]
    # float mode is the parent class's own forward
    x = torch.randn(3, 5)
    lin.mode = Mode.float()
    assert torch.equal(lin(x), nn.Linear.forward(lin, x))


def test_every_mode_has_a_registered_backend():
    keys = set(registered())
    expected = {("float", None), ("ideal", None), ("noise", None)}
    expected |= {("instance", i) for i in IMPLS} | {("stochastic", v) for v in VARIANTS}
    assert keys == expected
    assert {k for k, _ in keys} == set(KINDS)


def test_backend_is_per_layer_and_follows_the_mode():
    a, b = IMCLinear(5, 3), IMCLinear(5, 3)
    mode = Mode.instance(2.0, 1)
    a.mode = b.mode = mode
    assert a.backend is not b.backend and a.backend is a.backend
    first = a.backend
    a.mode = Mode.instance(2.0, 2)
    assert a.backend is not first
    a.set_spec(helpers.spec_of(rows=8))
    assert a.backend.mode == a.mode


def test_a_new_backend_plugs_in_without_touching_the_layers():
    """Swap the registry entry of one key for a backend written here (an ideal product
    plus 1 per output): the layer uses it as is."""
    from sddhr.nn.backends import base

    class PlusOne(Backend):
        def product(self, layer, x_int, w_int):
            return layer.lin(x_int, w_int) + 1.0

    key = ("noise", None)
    old = base._REGISTRY.pop(key)
    try:
        register(*key)(PlusOne)
        layer = helpers.program_layer(IMCLinear(6, 2, bias=False, spec=helpers.spec_of()),
                                      np.array([[7, -3, 0, 1, 2, 5], [-7, 1, 1, 1, 0, 0]]))
        layer.mode = Mode.noise(0.1)
        assert isinstance(layer.backend, PlusOne)
        x = torch.tensor([[1.0, 2, 3, 0, 1, 15]])
        sx = float(layer.aq.alpha.detach()) / layer.aq.levels
        y = layer(x) / sx
        ref = x @ layer.weight.detach().T + 1.0
        torch.testing.assert_close(y, ref)
    finally:
        base._REGISTRY[key] = old


def test_unknown_modes_are_refused():
    with pytest.raises(SpecError, match="kind"):
        Mode("analog")
    with pytest.raises(SpecError, match="noise_std"):
        Mode.noise(-1.0)
    assert isinstance(make_backend(Mode.ideal()), Backend)


def test_noise_backend_has_its_closed_form_moments():
    """y = x . (w + std * max|w| * z): mean x . w, variance (std max|w|)^2 sum x^2, a fresh
    draw per forward pass, reproducible from the global seed."""
    rng = np.random.default_rng(3)
    w = helpers.int_weights(rng, (4, 12), 4)
    layer = helpers.program_layer(IMCLinear(12, 4, bias=False, spec=helpers.spec_of()), w)
    std = 0.2
    layer.mode = Mode.noise(std)
    x = torch.as_tensor(rng.integers(0, 16, size=(3, 12)), dtype=torch.float32)
    sx = float(layer.aq.alpha.detach()) / layer.aq.levels
    torch.manual_seed(0)
    with torch.no_grad():
        ys = torch.stack([layer(x * sx) / sx for _ in range(4000)]).double()
    mean = x.double() @ torch.as_tensor(w, dtype=torch.float64).T
    var = (std * np.abs(w).max()) ** 2 * (x.double() ** 2).sum(1, keepdim=True).expand_as(mean)
    se = (var / ys.shape[0]).sqrt()
    assert ((ys.mean(0) - mean).abs() / se).max() < 5
    rel = ys.var(0) / var
    assert (rel - 1).abs().max() < 5 * np.sqrt(2 / ys.shape[0])
    torch.manual_seed(5)
    a = layer(x)
    torch.manual_seed(5)
    assert torch.equal(a, layer(x))


def test_exact_sampler_row_index_stays_exact_at_4096_rows():
    """The exact backend reads table row ``k + (N + 1) n`` off one product with weights
    ``w + N + 1`` (plus 1/2, truncated). At N = 4096 that index exceeds 2^23, where float32
    loses the half: the backend then computes in float64. Checked against integer counts."""
    import torch.nn.functional as F

    rows = 4096
    spec = helpers.spec_of(rows=rows, adc_bits=8)
    layer = IMCLinear(rows, 2, bias=False, spec=spec)
    gen = torch.Generator().manual_seed(0)
    x_int = torch.randint(0, 16, (3, rows), generator=gen).float()
    x_int[0] = 15  # every row active: n = N
    w_int = torch.randint(-7, 8, (2, rows), generator=gen).float()
    w_int[1] = -1  # every weight bit 1: k = n
    n1 = rows + 1
    wmat = helpers.weight_planes(w_int, 4).add_(n1)
    seen = []

    def capture(t):
        seen.append(t.to(torch.int64).clone())
        return torch.zeros(t.shape, dtype=torch.float32)

    layer.conversions(x_int, wmat, capture, 1.0, bias=0.5, dtype=torch.float64)
    got = seen[0].view(4, 3, 4, 2)  # (input plane, sample, weight plane, output)
    xb = torch.stack([(x_int.long() >> b) & 1 for b in range(4)])  # (bx, M, K)
    wb = torch.stack([(w_int.long().remainder(16) >> j) & 1 for j in range(4)])  # (bw, out, K)
    k = torch.einsum("bmk,jok->bmjo", xb, wb)
    n = xb.sum(-1)[:, :, None, None]
    assert torch.equal(got, k + n1 * n)
    assert int(got.max()) > 1 << 23  # the regime where float32 would round
    # the same product in float32 rounds somewhere in that range (what the float64 path avoids)
    exact = (k + n1 * n)[:, 0, :, 0]  # sample 0 (all rows active), output 0 (random weights)
    assert bool((exact % 2 == 1).any()) and int(exact.max()) > 1 << 24
    t32 = F.linear(xb[:, 0].float(), wmat[:, 0].float()) + 0.5
    assert not torch.equal(t32.to(torch.int64), exact)


@pytest.mark.parametrize("mode_of", [lambda lv: Mode.instance(lv, 0, "fast"),
                                     lambda lv: Mode.stochastic(lv, "resampled")])
def test_linear_adc_forms_warn_where_the_adc_matters(mode_of):
    """At level 1 on the default column a conversion's static error (~0.6 counts) is below
    two 1-count steps, so rounding matters and the linear-ADC forms say so, once per layer;
    at level 10 (~6 counts) they are silent. A coarse ADC always warns."""
    import warnings

    from sddhr import preset

    layer = IMCLinear(600, 4, spec=preset("mram-22nm"))
    x = torch.rand(2, 600)

    def warnings_of(lv, times=2):
        layer.mode = mode_of(lv)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(times):
                layer(x)
        return [w for w in caught if "treats the ADC as linear" in str(w.message)]

    assert len(warnings_of(1.0)) == 1
    layer.set_spec(preset("mram-22nm"))  # resets the once-per-layer record
    assert warnings_of(10.0) == []
    layer.set_spec(preset("mram-22nm").replace(column={"adc_bits": 5}))
    assert len(warnings_of(10.0)) == 1


@pytest.mark.parametrize("mode_of", [lambda lv: Mode.instance(lv, 0, "fast"),
                                     lambda lv: Mode.stochastic(lv, "resampled")])
def test_adc_warning_prints_once_for_many_layers_of_one_spec(mode_of):
    """Under Python's default filter the warning prints once however many layers of the
    same spec it hits (a ResNet-20 evaluation used to print 19 lines); a different spec
    still gets its own line."""
    import warnings

    from sddhr import preset

    def layers_of(spec, n):
        out = [IMCLinear(600, 4, spec=spec, layer_id=i) for i in range(n)]
        for layer in out:
            layer.mode = mode_of(1.0)
        return out

    x = torch.rand(2, 600)
    fine, coarse = preset("mram-22nm"), preset("mram-22nm").replace(column={"adc_bits": 5})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for layer in layers_of(fine, 5) + layers_of(coarse, 3):
            layer(x)
    hits = [str(w.message) for w in caught if "treats the ADC as linear" in str(w.message)]
    assert len(hits) == 2 and len(set(hits)) == 2, hits


def test_fresh_chip_variant_is_a_new_bit_true_chip_every_pass():
    """The reference variant: each pass equals a bit-true chip instance whose seed comes from
    torch's global generator (reproduced here by drawing the same seed), and passes differ."""
    from sddhr.hardware import ChipInstance

    spec = helpers.spec_of(rows=16, adc_bits=5)
    rng = np.random.default_rng(5)
    w = helpers.int_weights(rng, (3, 40), 4)
    layer = helpers.program_layer(IMCLinear(40, 3, bias=False, spec=spec, layer_id=2), w)
    layer.mode = Mode.stochastic(6.0, "fresh_chip")
    x = torch.as_tensor(rng.integers(0, 16, size=(5, 40)), dtype=torch.float32)
    sx = float(layer.aq.alpha.detach()) / layer.aq.levels
    torch.manual_seed(9)
    with torch.no_grad():
        a = layer(x * sx) / sx
        b = layer(x * sx) / sx
    torch.manual_seed(9)
    seed = int(torch.randint(0, 2**31 - 1, (1,)))
    chip = ChipInstance(spec, 6.0, seed)
    c_p, c_ap = chip.cells(2, 3, 40)
    ref = ChipInstance(spec, 6.0, seed)
    ref.cells = lambda layer_id, out, k, device=None: (c_p, c_ap)
    expected = ref.matmul(x, torch.as_tensor(w), layer_id=2)
    torch.testing.assert_close(a, expected, rtol=1e-5, atol=1e-4)
    assert not torch.equal(a, b)
