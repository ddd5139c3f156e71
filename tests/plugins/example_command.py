"""An ``sddhr`` sub-command defined outside the package (tests/plugins/test_command_plugin.py
loads it as ``SDDHR_PLUGINS=example_command`` with this folder on the path).

``sddhr columns --in-features K --out-features N [--rows R] [--w-bits B]`` prints how many
macro columns a dense layer occupies: its weight rows split into segments of at most R rows
(:func:`sddhr.hardware.n_segments`), one column per segment, output and weight bit plane.
"""

from __future__ import annotations

import argparse

from sddhr.cli import register_command


def _flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--in-features", type=int, required=True, help="K, the layer's inputs")
    p.add_argument("--out-features", type=int, required=True, help="N, the layer's outputs")
    p.add_argument("--rows", type=int, default=256, help="rows per column (default 256)")
    p.add_argument("--w-bits", type=int, default=4, help="weight bits (default 4)")


@register_command("columns", help="macro columns a dense layer occupies", add_arguments=_flags)
def columns(args: argparse.Namespace) -> int:
    from sddhr.config import SpecError
    from sddhr.hardware import n_segments

    for flag, value in (("--in-features", args.in_features), ("--out-features", args.out_features),
                        ("--rows", args.rows), ("--w-bits", args.w_bits)):
        if value < 1:
            raise SpecError(f"{flag} must be >= 1, got {value}")
    print(n_segments(args.in_features, args.rows) * args.out_features * args.w_bits)
    return 0
