"""Fresh effective weights of a newly drawn chip, one normal draw per weight (the
``resampled`` S-DDHR variant)."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
from scipy import special

from ...technology import CellTechnology

_MAX_CACHED = 4


class EffectiveWeightSampler:
    """Draws the effective weight ``w_eff = sum_j s_j 2^j c_j`` of freshly made cells for
    integer weights, exactly in distribution (up to the numerics below), with one normal
    draw per weight instead of two per cell.

    The B_w cells of one weight are independent of each other and of every other weight's,
    so a fresh chip's effective weight matrix is a matrix of independent draws, each from
    the distribution of its integer value v. For each v in ``[-2^(B_w-1), 2^(B_w-1))`` that
    distribution is computed once: every cell's contribution ``s_j 2^j c`` is binned on a
    common lattice (spacing 1/16 of the smaller cell standard deviation) from the exact
    cell CDF of the spec's technology (:meth:`sddhr.technology.CellTechnology.binned_pmf`:
    any technology, the empirical one's step CDF included), the B_w pmfs are convolved (FFT), the
    binning's mean offset is removed, and the quantile function is tabulated at 4097
    standard-normal quantiles ``z`` in [-8, 8]. A draw is ``Q_v(z)`` for ``z ~ N(0, 1)``,
    linearly interpolated. Lattice variance error ~ 1/3072 of the smallest cell variance;
    tails beyond 8 sigma are cut (probability 1e-15).
    """

    Z_MAX, Z_STEPS = 8.0, 4096

    def __init__(self, cm: CellTechnology, w_bits: int, device: torch.device | str | None = None) -> None:
        self.w_bits = w_bits
        self.offset = 2 ** (w_bits - 1)
        scales = [2.0**j for j in range(w_bits - 1)] + [-(2.0 ** (w_bits - 1))]
        states = ("AP", "P")
        sds = {s: math.sqrt(cm.var(s)) for s in states}
        self.deterministic = max(sds.values()) == 0
        values = np.arange(-self.offset, self.offset)
        z = np.linspace(-self.Z_MAX, self.Z_MAX, self.Z_STEPS + 1)
        if self.deterministic:
            q = np.array([[sum(a * cm.mean(states[(int(v) >> j) & 1]) for j, a in enumerate(scales))] * z.size
                          for v in np.mod(values, 2**w_bits)])
        else:
            h = min(v for v in sds.values() if v > 0) / 16.0
            ext = {}
            for s in states:  # where each cell's CDF leaves [1e-15, 1 - 1e-15]
                if sds[s] == 0:
                    ext[s] = (cm.mean(s), cm.mean(s))
                    continue
                grid = cm.mean(s) + np.linspace(-60, 60, 4801) * sds[s]
                f = cm.cdf(s, grid)
                inside = grid[(f > 1e-15) & (f < 1 - 1e-15)]
                ext[s] = (inside.min() - sds[s], inside.max() + sds[s]) if inside.size else (grid[0], grid[-1])
            span = sum(abs(a) * (max(e[1] for e in ext.values()) - min(e[0] for e in ext.values())) for a in scales)
            length = 1 << math.ceil(math.log2(2 * span / h + 16))
            # component pmfs on lattice offsets k*h, k in [-length/2, length/2)
            k = np.arange(length) - length // 2
            t = k * h
            q = np.empty((values.size, z.size))
            comp = {}
            for j, a in enumerate(scales):
                for s in states:
                    pmf, shift = cm.binned_pmf(s, t, h, scale=a)  # shift: binned minus true mean
                    comp[(j, s)] = (a * cm.mean(s), shift, np.fft.rfft(np.fft.ifftshift(pmf)))
            for row, v in enumerate(np.mod(values, 2**w_bits)):
                picked = [states[(int(v) >> j) & 1] for j in range(w_bits)]
                if all(sds[s] == 0 for s in picked):  # every cell exact (e.g. a cell state without spread)
                    q[row] = sum(a * cm.mean(s) for a, s in zip(scales, picked))
                    continue
                spec_prod: float | np.ndarray = 1.0  # the product of the components' spectra
                mu_sum, shift_sum = 0.0, 0.0
                for j in range(w_bits):
                    mu, shift, phi = comp[(j, states[(int(v) >> j) & 1])]
                    spec_prod = spec_prod * phi
                    mu_sum += mu
                    shift_sum += shift
                pmf = np.clip(np.fft.fftshift(np.fft.irfft(spec_prod, n=length)), 0, None)
                pmf /= pmf.sum()
                # lattice point i at mu_sum + t_i - shift_sum; its mass spread over +-h/2
                cdf_edges = np.concatenate([[0.0], np.cumsum(pmf)])
                edges = mu_sum - shift_sum + np.concatenate([t - h / 2, [t[-1] + h / 2]])
                p = special.ndtr(z)
                q[row] = np.interp(p, cdf_edges, edges)
        self.table = torch.as_tensor(q.reshape(-1), dtype=torch.float32, device=device)
        self.delta = torch.as_tensor(np.diff(q, axis=1, append=q[:, -1:]).reshape(-1), dtype=torch.float32,
                                     device=device)

    def sample(self, w_int: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fresh effective weights (float32, shaped like ``w_int``) for integer weights."""
        n = self.Z_STEPS + 1
        base = (w_int.detach().to(torch.int32) + self.offset).mul_(n)
        if self.deterministic:
            return self.table.index_select(0, base.view(-1)).view(w_int.shape)
        u = torch.randn(w_int.shape, device=w_int.device, generator=generator)
        u.add_(self.Z_MAX).mul_(self.Z_STEPS / (2 * self.Z_MAX)).clamp_(0, self.Z_STEPS - 1e-3)
        i = u.to(torch.int32)
        frac = u.sub_(i)
        idx = base.add_(i).view(-1)
        return self.table.index_select(0, idx).view(w_int.shape).addcmul_(
            frac, self.delta.index_select(0, idx).view(w_int.shape))


_WEIGHT_SAMPLERS: OrderedDict[tuple, EffectiveWeightSampler] = OrderedDict()


def get_weight_sampler(cm: CellTechnology, w_bits: int, device: torch.device | str) -> EffectiveWeightSampler:
    """The :class:`EffectiveWeightSampler` of a technology's cell model and weight width, cached."""
    key = (cm.device.model_dump_json(), cm.calibrated, cm.level, int(w_bits), str(torch.device(device)))
    if key in _WEIGHT_SAMPLERS:
        _WEIGHT_SAMPLERS.move_to_end(key)
        return _WEIGHT_SAMPLERS[key]
    _WEIGHT_SAMPLERS[key] = EffectiveWeightSampler(cm, w_bits, device)
    while len(_WEIGHT_SAMPLERS) > _MAX_CACHED:
        _WEIGHT_SAMPLERS.popitem(last=False)
    return _WEIGHT_SAMPLERS[key]
