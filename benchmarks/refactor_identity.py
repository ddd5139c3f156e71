"""Bit-identity check for refactors of :mod:`sddhr.nn`: outputs and input / weight gradients
of a few small IMC layers in every mode, with fixed seeds.

    python benchmarks/refactor_identity.py --save before.pt     # on the reference code
    python benchmarks/refactor_identity.py --compare before.pt  # after the change

``--compare`` reloads the saved tensors and requires every one to be equal (``torch.equal``),
printing one line per case. Runs on one thread in well under a minute.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable

import torch

from sddhr.config import make_spec
from sddhr.nn import IMCConv2d, IMCLayer, IMCLinear, Mode
from sddhr.nn.mode import VARIANTS

LEVEL = 6.0
SEED = 1234


def _spec(rows: int, adc_bits: int, w_bits: int = 4, **column):
    return make_spec({
        "column": {"rows": rows, "adc_bits": adc_bits, **column},
        "macro": {"w_bits": w_bits, "x_bits": 4},
    })


def _program(layer: IMCLayer, seed: int) -> IMCLayer:
    """Random float weights and bias, and a calibrated activation range."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g))
        if layer.bias is not None:
            layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=g))
        layer.aq.alpha.fill_(2.0)
        layer.aq.calibrated.fill_(True)
    return layer


def _input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) * 2.5
    x[: shape[0] // 2] *= torch.rand(shape[0] // 2, *shape[1:], generator=g) < 0.3  # sparse inputs too
    return x


def layers() -> dict[str, tuple[Callable[[], IMCLayer], tuple[int, ...]]]:
    """Name -> (layer factory, input shape)."""
    return {
        "linear": (lambda: _program(IMCLinear(40, 6, spec=_spec(16, 8), layer_id=3), 1), (6, 40)),
        "conv_g2": (lambda: _program(IMCConv2d(4, 6, 3, padding=1, groups=2, spec=_spec(8, 8), layer_id=5), 2),
                    (3, 4, 5, 5)),
        "adc5": (lambda: _program(IMCLinear(36, 5, spec=_spec(16, 5), layer_id=7), 3), (6, 36)),
        "conv_noisy": (lambda: _program(IMCConv2d(3, 4, 3, stride=2, padding=1, layer_id=2,
                                                  spec=_spec(8, 6, read_noise_counts=0.3, adc_noise_lsb=0.2,
                                                             adc_offset_lsb=0.5, adc_gain_rel=0.02)), 4),
                       (2, 3, 6, 6)),
        "binary": (lambda: _program(IMCLinear(24, 4, spec=_spec(16, 8, w_bits=1), layer_id=1), 5), (5, 24)),
    }


def modes() -> dict[str, Mode]:
    out = {
        "float": Mode.float(),
        "ideal": Mode.ideal(),
        "instance_bit_true": Mode.instance(LEVEL, 11, "bit_true"),
        "instance_fast": Mode.instance(LEVEL, 11, "fast"),
        "instance_bit_true_x2": Mode.instance(LEVEL, 11, "bit_true", copies=2),
        "instance_fast_x2": Mode.instance(LEVEL, 11, "fast", copies=2),
        "noise": Mode.noise(0.1),
    }
    for variant in VARIANTS:
        out[f"stochastic_{variant}"] = Mode.stochastic(LEVEL, variant)
    return out


def run() -> dict[str, dict[str, torch.Tensor]]:
    results: dict[str, dict[str, torch.Tensor]] = {}
    for lname, (make, shape) in layers().items():
        layer = make()
        x0 = _input(shape, SEED)
        for mname, mode in modes().items():
            layer.mode = mode
            for rep in range(2):  # a second pass: cached chips / tables
                layer.zero_grad()
                x = x0.clone().requires_grad_(True)
                torch.manual_seed(SEED + rep)
                y = layer(x)
                g = torch.randn(y.shape, generator=torch.Generator().manual_seed(SEED + 7))
                y.backward(g)
                assert x.grad is not None and layer.weight.grad is not None
                results[f"{lname}/{mname}/{rep}"] = {
                    "y": y.detach().clone(), "gx": x.grad.clone(), "gw": layer.weight.grad.clone(),
                    "rng": torch.rand(2),  # the global stream after the pass
                }
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", metavar="FILE")
    group.add_argument("--compare", metavar="FILE")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # the linear-ADC forms warn on these specs, as intended
    t0 = time.perf_counter()
    results = run()
    if args.save:
        torch.save(results, args.save)
        print(f"saved {len(results)} cases to {args.save} ({time.perf_counter() - t0:.1f} s)")
        return 0
    ref = torch.load(args.compare)
    bad = 0
    for case in sorted(set(ref) | set(results)):
        if case not in ref or case not in results:
            print(f"{case:45s} MISSING")
            bad += 1
            continue
        diff = [k for k in ref[case] if not torch.equal(ref[case][k], results[case][k])]
        print(f"{case:45s} {'ok' if not diff else 'DIFFERS: ' + ', '.join(diff)}")
        bad += bool(diff)
    print(f"{len(results) - bad} of {len(results)} cases identical ({time.perf_counter() - t0:.1f} s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
