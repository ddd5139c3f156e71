"""The command-line front end (thin: parse, call the library, print).

Each sub-command lives in a ``_cmd_*`` function registered in :data:`COMMANDS`; errors
from the library (:class:`~sddhr.config.SpecError`, which names the parameter) are printed
without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time

from .config import PRESETS, SpecError, make_spec, preset


def _spec_from_args(args) -> object:
    """The preset (or a JSON spec file), with the column / macro flags applied."""
    if getattr(args, "spec_file", None):
        from pathlib import Path

        path = Path(args.spec_file)
        if not path.is_file():
            raise SpecError(f"--spec-file: file not found: {path}")
        spec = make_spec(__import__("json").loads(path.read_text()))
    else:
        spec = preset(args.preset)
    column, macro = {}, {}
    for flag, key in (("rows", "rows"), ("adc_bits", "adc_bits"), ("full_scale", "full_scale_counts")):
        if getattr(args, flag, None) is not None:
            column[key] = getattr(args, flag)
    if getattr(args, "uncalibrated", False):
        column["calibrated"] = False
    for flag in ("w_bits", "x_bits"):
        if getattr(args, flag, None) is not None:
            macro[flag] = getattr(args, flag)
    changes = {k: v for k, v in (("column", column), ("macro", macro)) if v}
    return spec.replace(**changes) if changes else spec


def add_spec_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("hardware")
    g.add_argument("--preset", default="mram-22nm", help=f"hardware preset ({', '.join(sorted(PRESETS))})")
    g.add_argument("--spec-file", help="JSON hardware spec (overrides --preset)")
    g.add_argument("--rows", type=int, help="rows per column N")
    g.add_argument("--adc-bits", type=int, help="ADC bits B_adc")
    g.add_argument("--full-scale", type=float, help="ADC full scale in counts (default N)")
    g.add_argument("--uncalibrated", action="store_true", help="nominal (uncalibrated) ADC references")
    g.add_argument("--w-bits", type=int, help="weight bits B_w")
    g.add_argument("--x-bits", type=int, help="activation bits B_x")


def _cmd_abstraction(args) -> int:
    from .abstraction import build_table, validate_table

    spec = _spec_from_args(args)
    t0 = time.perf_counter()
    table = build_table(spec, args.level, args.method)
    print(table.summary())
    print(f"  built in {time.perf_counter() - t0:.2f} s")
    if args.validate:
        report = validate_table(table, samples=args.samples, seed=args.seed)
        print(report.summary())
    if args.out:
        print(f"wrote {table.save(args.out)}")
    return 0


def _cmd_fit_device(args) -> int:
    from .device import fit_device

    fit = fit_device(args.csv, base=preset(args.preset).device)
    print(fit.summary())
    if args.out:
        spec = preset(args.preset).replace(device=fit.device.model_dump(), name="fitted")
        from pathlib import Path

        Path(args.out).write_text(spec.model_dump_json(indent=2))
        print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sddhr", description=__import__("sddhr").__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("abstraction", help="compute the P(code | k, n) table of a spec")
    add_spec_args(p)
    p.add_argument("--level", type=float, default=1.0, help="variation level (0 = none, 1 = nominal)")
    p.add_argument("--method", choices=["exact", "gaussian"], default="exact")
    p.add_argument("--validate", action="store_true", help="check against a Monte Carlo of the device")
    p.add_argument("--samples", type=int, default=20000, help="Monte Carlo samples per (k, n)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the table (.npz)")
    p.set_defaults(func=_cmd_abstraction)

    p = sub.add_parser("fit-device", help="fit a device model to measured resistances (CSV)")
    p.add_argument("csv", help="CSV with columns state (P, AP or T) and r_ohm")
    p.add_argument("--preset", default="mram-22nm", help="spec to put the fitted device into")
    p.add_argument("--out", help="write the fitted hardware spec (JSON)")
    p.set_defaults(func=_cmd_fit_device)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SpecError as err:
        print(f"sddhr {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
