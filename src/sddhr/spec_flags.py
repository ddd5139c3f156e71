"""The command line's hardware flags (``--preset``, ``--spec-file``, ``--cell-csv`` and the
column / macro flags): the parser group and the spec they describe."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._io import read_json
from .config import PRESETS, ColumnSpec, HardwareSpec, SpecError, make_spec, preset
from .noise import noise_sources

DEFAULT_PRESET = "mram-22nm"


def flag_dest(flag: str) -> str:
    """The argparse destination of a flag: ``--read-noise`` -> ``read_noise``."""
    return flag.lstrip("-").replace("-", "_")


def base_spec(args: argparse.Namespace) -> HardwareSpec:
    """``--spec-file`` if given, else ``--preset`` (default :data:`DEFAULT_PRESET`); with
    ``--cell-csv``, its device replaced by the measured (empirical) cell of that CSV."""
    if getattr(args, "spec_file", None):
        data = read_json(args.spec_file, "--spec-file", "hardware spec")
        try:
            spec = make_spec(data)
        except SpecError as err:
            raise SpecError(f"--spec-file {args.spec_file}: {err}") from None
    else:
        name = getattr(args, "preset", None)
        spec = preset(DEFAULT_PRESET if name is None else name)  # "" is refused by preset(), not the default
    if getattr(args, "cell_csv", None):
        from .technology import empirical_spec

        cell = empirical_spec(args.cell_csv)
        spec = spec.replace(cell=cell.model_dump(), name=f"empirical-{Path(args.cell_csv).stem}")
    return spec


def spec_changes_from_args(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """The column / macro flags given, as :meth:`HardwareSpec.replace` changes."""
    column: dict[str, object] = {}
    macro: dict[str, object] = {}
    for flag, key in (("rows", "rows"), ("adc_bits", "adc_bits"), ("full_scale", "full_scale_counts")):
        if getattr(args, flag, None) is not None:
            column[key] = getattr(args, flag)
    plugins: dict[str, float] = {}
    for src in noise_sources():  # each readout source's flag (sddhr.noise)
        val = getattr(args, flag_dest(src.flag), None)
        if val is None:
            continue
        if src.name in ColumnSpec.model_fields:
            column[src.name] = val
        else:
            plugins[src.name] = val
    if plugins:
        column["noise"] = plugins
    if getattr(args, "uncalibrated", False):
        column["calibrated"] = False
    for flag in ("w_bits", "x_bits"):
        if getattr(args, flag, None) is not None:
            macro[flag] = getattr(args, flag)
    return {k: v for k, v in (("column", column), ("macro", macro)) if v}


def spec_from_args(args: argparse.Namespace) -> HardwareSpec:
    """The base spec with the column / macro flags applied."""
    spec, changes = base_spec(args), spec_changes_from_args(args)
    return spec.replace(**changes) if changes else spec


#: the default of every column / macro flag: the base spec's value (the preset's, the spec
#: file's or, for a fine-tune or an evaluation, the checkpoint's)
_OWN = "default: the base spec's"


def add_spec_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("hardware")
    g.add_argument("--preset", help=f"hardware preset ({', '.join(sorted(PRESETS))}; default {DEFAULT_PRESET})")
    g.add_argument("--spec-file", help="JSON hardware spec (overrides --preset; default: none)")
    g.add_argument("--cell-csv", help="measured cell: CSV with columns state (1 / 0) and one of g_siemens, g_us, "
                                      "q_coulomb, q_fc; replaces the preset's device (samples embedded in the spec; "
                                      "default: none)")
    g.add_argument("--rows", type=int, help=f"rows per column N ({_OWN})")
    g.add_argument("--adc-bits", type=int, help=f"ADC bits B_adc ({_OWN})")
    g.add_argument("--full-scale", type=float,
                   help="ADC full scale in counts (default: the base spec's; N when it sets none)")
    g.add_argument("--uncalibrated", action="store_true",
                   help="nominal (uncalibrated) ADC references (default: the base spec's calibration)")
    for src in noise_sources():  # one flag per registered readout source (sddhr.noise)
        g.add_argument(src.flag, type=float, dest=flag_dest(src.flag), help=f"{src.flag_help} ({_OWN})")
    g.add_argument("--w-bits", type=int, help=f"weight bits B_w ({_OWN})")
    g.add_argument("--x-bits", type=int, help=f"activation bits B_x ({_OWN})")
