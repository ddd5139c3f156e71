"""Column + ADC, the bit-scalable macro, and frozen chip instances: the one home of every
hardware primitive (bit planes, plane weights, ADC digitisation, row segments, programming,
"is this ADC lossless here") that the abstraction, the layers' backends and the energy model
call.

Conventions (see ``docs/MODEL.md``):

* A column sums the normalised contributions ``c`` of its active cells:
  ``u = sum_i x_i c_i`` (``c = 1`` for an ideal bit-1 cell, ``0`` for an ideal bit-0 cell;
  the cells' statistics and draws come from the spec's technology, :mod:`sddhr.technology`).
* ADC: ``code = clip(round(u / step), 0, 2**B_adc - 1)``, digital value ``code * step``.
* Weights: ``B_w``-bit two's complement, bit plane ``j`` weighs ``2**j`` (MSB: ``-2**(B_w-1)``),
  each plane in its own column. Activations: unsigned ``B_x``-bit, one plane per cycle.
* A dot product of length K uses ``ceil(K / N)`` row segments; row ``i`` of the flattened
  weight goes to segment ``i // N``.
* ``y = sum_seg sum_b sum_j s_j 2**(b+j) * value(seg, b, j)``.

:func:`bit_true_matmul` is the reference macro (one batched einsum per chunk of samples,
float64 shift-and-add); the layers compute the same conversions without unfolding
convolutions (:mod:`sddhr.nn.backends`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .config import ColumnSpec, HardwareSpec, SpecError, check_level
from .noise import apply_readout, static_errors, static_sources
from .technology import cell_model


def code_values(column: ColumnSpec) -> np.ndarray:
    """Digital value of each ADC code, in counts."""
    return np.arange(column.n_codes, dtype=np.float64) * column.step


def digitise(u: torch.Tensor, column: ColumnSpec, inplace: bool = False) -> torch.Tensor:
    """ADC codes (same dtype as ``u``) of normalised readouts ``u`` (counts):
    ``clip(round(u / step), 0, 2**B_adc - 1)``, rounding half to even. ``inplace`` reuses
    ``u``'s storage (the layers' hot path)."""
    if not inplace:
        return torch.clamp(torch.round(u / column.step), 0, column.n_codes - 1)
    if column.step != 1.0:
        u.div_(column.step)
    return u.round_().clamp_(0.0, float(column.n_codes - 1))


def readout(u: torch.Tensor, n: torch.Tensor | float, column: ColumnSpec, *static: torch.Tensor | None) -> torch.Tensor:
    """The analog readout of conversions, in place: every registered readout source
    (:mod:`sddhr.noise`) applied stage by stage, ``u' = (1 + G)(u + A) + B step``; built-in:
    ``u' = (1 + g)(u + e_read) + (o + e_adc) step`` with ``e_read ~ N(0, n sigma_read^2)`` (``n``
    active rows) and ``e_adc ~ N(0, sigma_adc^2)`` drawn fresh from torch's global generator,
    and the column's static errors ``static`` (one per static source, in
    :func:`sddhr.noise.static_sources` order: gain ``g``, offset ``o`` in ADC steps, then
    plug-ins; None = 0). ``n`` and ``static`` broadcast against ``u``. The ADC
    (:func:`digitise`) follows."""
    return apply_readout(u, n, column, static)


def plane_weights(w_bits: int) -> list[int]:
    """Signed weight ``s_j 2**j`` of each two's-complement bit plane ``j``."""
    return [2**j for j in range(w_bits - 1)] + [-(2 ** (w_bits - 1))]


def bit_planes(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Bit planes ``(bits, *x.shape)``, float32 in {0, 1}, of a tensor holding integers in
    [0, 255] (unchecked: the hot path; see :func:`input_planes` for the checked form)."""
    xu = x.to(torch.uint8)
    out = torch.empty((bits, *x.shape), dtype=torch.float32, device=x.device)
    for b in range(bits):
        out[b].copy_((xu >> b).bitwise_and_(1))
    return out


def twos_complement(w_int: torch.Tensor, bits: int) -> torch.Tensor:
    """Integers ``w_int`` as ``bits``-bit two's-complement codes (int16, in [0, 2**bits))."""
    return w_int.to(torch.int16).bitwise_and_((1 << bits) - 1)


def weight_bit_planes(w_int: torch.Tensor, bits: int) -> torch.Tensor:
    """Two's-complement bit planes ``(bits, *w.shape)`` of integer weights, float32 (unchecked)."""
    return bit_planes(twos_complement(w_int, bits), bits)


def weight_planes(w_int: torch.Tensor, w_bits: int) -> torch.Tensor:
    """Bit planes ``(B_w, *w.shape)`` in {0, 1} of two's-complement integers ``w_int`` (checked)."""
    lo, hi = -(2 ** (w_bits - 1)), 2 ** (w_bits - 1) - 1
    w = torch.as_tensor(w_int)
    if w.numel() and (w.min() < lo or w.max() > hi):
        raise SpecError(f"weights must be integers in [{lo}, {hi}] for w_bits={w_bits}")
    return weight_bit_planes(w, w_bits)


def input_planes(x_int: torch.Tensor, x_bits: int) -> torch.Tensor:
    """Bit planes ``(B_x, *x.shape)`` in {0, 1} of unsigned integers ``x_int`` (checked)."""
    x = torch.as_tensor(x_int)
    if x.numel() and (x.min() < 0 or x.max() > 2**x_bits - 1):
        raise SpecError(f"activations must be integers in [0, {2**x_bits - 1}] for x_bits={x_bits}")
    return bit_planes(x, x_bits)


def square_code(x: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """``sum_b 4^b bit_b(x)`` (bit-squared encoding; two's-complement bits if ``signed``),
    float32: with independent conversions, a product's variance is linear in these codes."""
    xi = twos_complement(x, bits) if signed else x.to(torch.int16)
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for b in range(bits):
        out.add_((xi >> b).bitwise_and_(1), alpha=4.0**b)
    return out


def n_segments(k: int, rows: int) -> int:
    """Row segments (separate conversions) of a dot product of length ``k``."""
    return max(1, math.ceil(k / rows))


def segment_bounds(k: int, rows: int) -> list[tuple[int, int]]:
    """``(first row, end row)`` of each row segment of a dot product of length ``k``."""
    return [(a, min(a + rows, k)) for a in range(0, k, rows)]


def pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """Zero-pad the last dim to a multiple of ``rows`` and split it into (S, rows)."""
    k = t.shape[-1]
    s = n_segments(k, rows)
    if s * rows != k:
        t = torch.nn.functional.pad(t, (0, s * rows - k))
    return t.reshape(*t.shape[:-1], s, rows)


def max_segment_ones(w_flat: torch.Tensor, w_bits: int, rows: int) -> int:
    """The most 1-bits any weight plane holds within one row segment of ``w_flat`` (out, K):
    the largest count an ideal conversion of these weights can reach."""
    planes = pad_rows(twos_complement(w_flat, w_bits), rows).to(torch.uint8)
    return max(int(((planes >> j) & 1).sum(-1, dtype=torch.int16).max()) for j in range(w_bits))


def programmed(w_planes: torch.Tensor, c_p: torch.Tensor, c_ap: torch.Tensor) -> torch.Tensor:
    """Cell contributions of weight bit planes: ``c_P`` where the bit is 1, else ``c_AP``
    (selected, not interpolated, so a cell's value is bit-identical to its draw)."""
    return torch.where(w_planes != 0, c_p, c_ap)


def effective_weights(contributions: torch.Tensor, w_bits: int) -> torch.Tensor:
    """Shift-added cell contributions ``sum_j s_j 2**j c_j``: (B_w, out, ...) -> (out, ...).

    Where the ADC can be treated as linear, a chip instance multiplies integer inputs
    by this matrix (one matrix product instead of ``B_x * B_w`` conversions per segment).
    """
    pw = torch.tensor(plane_weights(w_bits), dtype=contributions.dtype, device=contributions.device)
    return pw.view(1, -1).matmul(contributions.reshape(contributions.shape[0], -1)).view(contributions.shape[1:])


def bit_true_matmul(
    x_int: torch.Tensor,
    contributions: torch.Tensor,
    spec: HardwareSpec,
    chunk_elems: int = 1 << 25,
    adc: tuple[torch.Tensor | None, ...] | None = None,
) -> torch.Tensor:
    """Bit-true macro product (the reference the layers' backends are tested against).

    ``x_int``: (M, K) unsigned integers; ``contributions``: (B_w, out, K) normalised cell
    contributions of the programmed columns (weight bits for an ideal macro). Returns
    (M, out) float32 digital outputs: every (segment, input plane, weight plane)
    conversion read (:func:`readout`: the spec's temporal noise, fresh per conversion, and
    ``adc = (gain, offset, ...)``, each (B_w, out, S) or None, the columns' static errors, e.g.
    :meth:`ChipInstance.adc_errors`), digitised by the ADC, then shift-and-added. Without
    noise sources the readout is skipped (``u`` goes to the ADC as it is).
    """
    col, mac = spec.column, spec.macro
    bw, out, k = contributions.shape
    if bw != mac.w_bits:
        raise SpecError(f"contributions have {bw} weight planes, spec has w_bits={mac.w_bits}")
    if x_int.shape[-1] != k:
        raise SpecError(f"x has {x_int.shape[-1]} columns, weights have {k} rows")
    xb = pad_rows(input_planes(x_int, mac.x_bits).to(contributions.dtype), col.rows)  # (Bx,M,S,N)
    cb = pad_rows(contributions, col.rows)  # (Bw,out,S,N)
    s = cb.shape[2]
    dev = contributions.device
    wx = (2.0 ** torch.arange(mac.x_bits, device=dev, dtype=torch.float64)).view(-1, 1, 1, 1, 1)
    ww = torch.tensor(plane_weights(mac.w_bits), dtype=torch.float64, device=dev).view(1, -1, 1, 1, 1)
    scale = wx * ww * col.step  # float64: exact shift-and-add of the codes
    m = x_int.shape[0]
    per_row = mac.x_bits * bw * s * out
    step_m = max(1, chunk_elems // max(per_row, 1))
    outs = []
    for m0 in range(0, m, step_m):
        xc = xb[:, m0 : m0 + step_m]
        u = torch.einsum("bmsn,josn->bjsmo", xc, cb)
        static = adc if adc is not None else ()
        if col.temporal_noise or any(a is not None for a in static):
            # per conversion: active rows (b, 1, s, m, 1); static errors (1, j, s, 1, o)
            n = xc.sum(-1).permute(0, 2, 1)[:, None, :, :, None]
            errs = (None if a is None else a.to(u.device).permute(0, 2, 1)[None, :, :, None, :] for a in static)
            u = readout(u, n, col, *errs)
        code = digitise(u, col).to(torch.float64)
        outs.append((code * scale).sum(dim=(0, 1, 2)).to(torch.float32))
    return torch.cat(outs, 0) if outs else torch.zeros(0, out, device=dev)


def layer_seed(seed: int, layer_id: int) -> int:
    """Independent, reproducible 63-bit seed for one layer of one chip instance."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(layer_id)]).generate_state(2, np.uint64)[0] >> 1)


def adc_seed(seed: int, layer_id: int) -> int:
    """Seed of one layer's static ADC errors: a stream separate from its cells'
    (:func:`layer_seed`), so that adding ADC errors to a spec leaves every cell draw as it was."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(layer_id), 0xADC])
    return int(ss.generate_state(2, np.uint64)[0] >> 1)


def adc_errors(spec: HardwareSpec, seed: int, layer_id: int, out: int, k: int,
               device: torch.types.Device = None) -> tuple[torch.Tensor | None, ...]:
    """Static readout errors of one layer's columns, one per static source
    (:func:`sddhr.noise.static_sources`: ``(gain, offset)`` for the built-ins, then the plug-ins on),
    each (B_w, out, S) float32 (S row segments of a dot product of length ``k``), or None where
    the source is off: ``g ~ N(0, adc_gain_rel^2)`` (relative), ``o ~ N(0, adc_offset_lsb^2)``
    (ADC steps), independent per column, drawn in float64 on the CPU from :func:`adc_seed`
    (every one of them draws, in registration order, when one is on). Independent of the
    variation level (which scales only the cells)."""
    col = spec.column
    if not col.static_adc_errors:
        return tuple(None for _ in static_sources(col))
    gen = torch.Generator().manual_seed(adc_seed(seed, layer_id))
    shape = (spec.macro.w_bits, out, n_segments(k, col.rows))
    return static_errors(col, gen, shape, device)


class ChipInstance:
    """A chip drawn from the process: ``(spec, variation level, seed)``.

    Every cell of layer ``layer_id`` (shape ``(B_w, out, K)``) is drawn once in both states
    by the spec's technology (:meth:`~sddhr.technology.CellTechnology.sample_cells`; MRAM:
    its R_P, R_AP and R_T), from a generator seeded by ``(seed, layer_id)``; the draws are
    made in float64 on the CPU, so the same instance is the same on every device. Its columns'
    static ADC errors (:meth:`adc_errors`) come from a separate stream of the same seed.
    """

    def __init__(self, spec: HardwareSpec, level: float, seed: int):
        self.spec = spec
        self.level = check_level(level)
        self.seed = int(seed)
        self.cell_model = cell_model(spec.cell, self.level, spec.column.calibrated)

    def cells(self, layer_id: int, out: int, k: int, device: torch.types.Device = None,
              dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised contributions ``(c_P, c_AP)``, each (B_w, out, K), of one layer's cells."""
        gen = torch.Generator().manual_seed(layer_seed(self.seed, layer_id))
        c_p, c_ap = self.cell_model.sample_cells((self.spec.macro.w_bits, out, k), gen)
        return c_p.to(device=device, dtype=dtype), c_ap.to(device=device, dtype=dtype)

    def adc_errors(self, layer_id: int, out: int, k: int,
                   device: torch.types.Device = None) -> tuple[torch.Tensor | None, ...]:
        """Static readout errors (``(gain, offset, ...)``) of one layer's columns (:func:`adc_errors`)."""
        return adc_errors(self.spec, self.seed, layer_id, out, k, device)

    def program(self, w_int: torch.Tensor, layer_id: int = 0) -> torch.Tensor:
        """Contributions (B_w, out, K) of integer weights (out, K) written onto this chip."""
        out, k = w_int.shape
        c_p, c_ap = self.cells(layer_id, out, k, device=w_int.device)
        return programmed(weight_planes(w_int, self.spec.macro.w_bits), c_p, c_ap)

    def matmul(self, x_int: torch.Tensor, w_int: torch.Tensor, layer_id: int = 0) -> torch.Tensor:
        """Bit-true ``x_int @ w_int.T`` (M, K) x (out, K) -> (M, out) on this chip."""
        out, k = w_int.shape
        adc = self.adc_errors(layer_id, out, k, w_int.device)
        return bit_true_matmul(x_int, self.program(w_int, layer_id), self.spec, adc=adc)


def ideal_matmul(x_int: torch.Tensor, w_int: torch.Tensor, spec: HardwareSpec) -> torch.Tensor:
    """Variation-free bit-true product (ADC quantisation still applies)."""
    return bit_true_matmul(x_int, weight_planes(w_int, spec.macro.w_bits), spec)
