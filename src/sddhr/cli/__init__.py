"""The command-line front end (thin: parse, call the library, print).

Each sub-command is a ``cmd_*`` function of :mod:`sddhr.cli.commands`, registered in
:func:`build_parser` (which looks it up in this module as ``_cmd_*``); flags reach the configs
through one table per command (``TRAIN_FLAGS`` ...) and :func:`config_from_args`
(:mod:`sddhr.cli.config_flags`); the parser's building blocks are in :mod:`sddhr.cli.parsing`
and the flags of train / evaluate in :mod:`sddhr.cli.arguments`. Errors from the library
(:class:`~sddhr.config.SpecError`, which names the parameter) are printed without a traceback
and exit with status 2. Plug-ins (:mod:`sddhr.plugins`: ``$SDDHR_PLUGINS``, the ``sddhr.plugins``
entry points) are imported before the parser is built, so their data sets and S-DDHR variants
are among the choices.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from .. import __version__
from .arguments import add_eval_args, add_train_args
from .commands import cmd_abstraction as _cmd_abstraction
from .commands import cmd_demo as _cmd_demo
from .commands import cmd_download as _cmd_download
from .commands import cmd_evaluate as _cmd_evaluate
from .commands import cmd_explore as _cmd_explore
from .commands import cmd_fit_device as _cmd_fit_device
from .commands import cmd_report as _cmd_report
from .commands import cmd_train as _cmd_train
from .config_flags import EVAL_FLAGS, EXPLORE_FLAGS, TRAIN_FLAGS, config_from_args, unknown_keys
from .parsing import DEFAULT_THREADS, Choices, Parser, add_threads, config_defaults, deprecated_alias, with_defaults
from .plugin_commands import add_plugin_commands, register_command

# Everything else (pydantic, numpy, torch and the modules that use them) is imported where it
# is used: ``sddhr --version`` and ``sddhr -V`` answer before any of it loads
# (tests/test_cli_flags.py checks that). build_parser reads the ``_cmd_*`` names of this
# module when it runs, so a command replaced here (as tests do) is the one that runs.

__all__ = ["DEFAULT_THREADS", "EVAL_FLAGS", "EXPLORE_FLAGS", "TRAIN_FLAGS", "build_parser", "config_from_args", "main",
           "one_line", "register_command", "unknown_keys"]


def _version() -> str:
    return f"sddhr {__version__}"


def build_parser() -> argparse.ArgumentParser:
    from ..config import PRESETS
    from ..evaluate import EvalConfig
    from ..explore import ExploreConfig
    from ..recipes import TrainConfig
    from ..spec_flags import DEFAULT_PRESET, add_spec_args, spec_from_args

    e = Choices()
    parser = Parser(prog="sddhr", description=__import__("sddhr").__doc__)
    parser.add_argument("-V", "--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("abstraction", help="compute the P(code | k, n) table of a spec")
    add_spec_args(p)
    p.add_argument("--level", type=float, default=1.0, help="variation level (0 = none, 1 = nominal)")
    p.add_argument("--method", choices=e.METHODS, default="exact", help="how the table is computed")
    p.add_argument("--validate", action="store_true", help="check against a Monte Carlo of the device")
    p.add_argument("--samples", type=int, default=20000, help="Monte Carlo samples per (k, n)")
    p.add_argument("--seed", type=int, default=0, help="Monte Carlo seed")
    p.add_argument("--out", help="write the table (.npz, compressed; default: print the summary only)")
    add_threads(p)
    p.set_defaults(func=_cmd_abstraction)

    p = sub.add_parser("fit-device", help="fit a device model to measured resistances (CSV)")
    p.add_argument("csv", help="CSV with columns state (P, AP or T) and r_ohm")
    p.add_argument("--preset", default=DEFAULT_PRESET, help="spec to put the fitted device into")
    p.add_argument("--out", help="write the fitted hardware spec (JSON; default: print the fit only)")
    p.set_defaults(func=_cmd_fit_device)

    from ..fit import add_command as add_fit_column  # sddhr fit-column (its flags live with the fit)

    add_fit_column(sub, add_spec_args, spec_from_args, e.METHODS)
    add_threads(sub.choices["fit-column"])

    p = sub.add_parser("train", help=f"train a network with a recipe ({', '.join(e.RECIPES)})")
    add_train_args(p, e)
    with_defaults(p, config_defaults(TrainConfig, TRAIN_FLAGS))
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", aliases=["compare"],
                       help="evaluate checkpoints on the same chip instances across variation levels")
    add_eval_args(p, e)
    with_defaults(p, config_defaults(EvalConfig, EVAL_FLAGS))
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("report", help="plot + Markdown table from saved results (no re-run)")
    p.add_argument("results", nargs="+", help="results.json or its folder; several are merged into one report")
    p.add_argument("--out", help="output folder (default: next to the results; required when merging)")
    p.add_argument("--title", help="plot title (default: the chip count and chip model of the results)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("demo", help="the main job: conventional vs DDHR vs S-DDHR on the embedded digits")
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--quick", action="store_true", help="a much shorter run (smoke test)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--preset", help=f"hardware preset, any technology ({', '.join(sorted(PRESETS))}; default "
                                    f"{DEFAULT_PRESET}); the levels follow its cell spread (docs/MODEL.md)")
    p.add_argument("--cell-csv", help="measured cell (CSV, as for abstraction) in place of the preset's device "
                                      "(default: none)")
    add_threads(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("explore", help="sweep operating points: accuracy vs energy / throughput (Pareto)")
    p.add_argument("--config", help="YAML / TOML / JSON explore config; flags override it (default: none)")
    p.add_argument("--rows", type=int, nargs="+", help="rows per column to sweep")
    p.add_argument("--adc-bits", type=int, nargs="+", help="ADC bits to sweep")
    p.add_argument("--w-bits", type=int, nargs="+", help="weight bits to sweep")
    p.add_argument("--x-bits", type=int, nargs="+", help="activation bits to sweep")
    p.add_argument("--levels", type=float, nargs="+", help="variation levels to sweep")
    p.add_argument("--float-epochs", type=int, help="epochs of the float network each point starts from")
    p.add_argument("--finetune-epochs", type=int, help="epochs of each DDHR / S-DDHR fine-tune")
    p.add_argument("--instances", type=int, help="chip instances per point")
    p.add_argument("--variant", choices=e.VARIANTS, help="S-DDHR variant")
    p.add_argument("--energy", help=f"energy preset ({', '.join(e.ENERGY_PRESETS)})")
    p.add_argument("--arch", choices=e.ARCHS, help="network architecture")
    p.add_argument("--width", type=int, help="network width (default: the architecture's own)")
    p.add_argument("--batch-size", type=int, help="images per step")
    p.add_argument("--seed", type=int, help="training seed")
    p.add_argument("--data", choices=e.DATASETS, help="data set (digits is embedded)")
    p.add_argument("--data-dir", help="data folder (default: $SDDHR_DATA_DIR)")
    p.add_argument("--train-subset", type=int, help="use only the first N training images (default: all)")
    p.add_argument("--test-subset", type=int, help="use only the first N test images (default: all)")
    p.add_argument("--out", required=True, help="output folder (explore.json, explore.csv, pareto.png)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    add_threads(p)
    with_defaults(p, config_defaults(ExploreConfig, EXPLORE_FLAGS))
    p.set_defaults(func=_cmd_explore)

    p = sub.add_parser("download", help="fetch an official data set and check its checksums (needs internet)")
    p.add_argument("name", choices=e.DOWNLOADS, help="data set")
    p.add_argument("--data-dir", help="data folder to download into (default: $SDDHR_DATA_DIR)")
    deprecated_alias(p, "--root", "--data-dir")
    p.set_defaults(func=_cmd_download)
    add_plugin_commands(sub)  # plug-ins' commands (sddhr.cli.register_command), after the built-ins
    for p in {id(p): p for p in sub.choices.values()}.values():  # --debug also after the sub-command (aliases once)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        with_defaults(p)
    return parser


def _asks_version(argv: list[str]) -> bool:
    """``-V`` / ``--version`` among the options before the sub-command."""
    for arg in argv:
        if arg in ("-V", "--version"):
            return True
        if not arg.startswith("-"):
            return False
    return False



def one_line(err: BaseException) -> str:
    """An error message on one line (a multi-line validation message joined with '; ')."""
    text = str(err).strip() or type(err).__name__
    return "; ".join(ln.strip() for ln in text.splitlines() if ln.strip())


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the command (restored after it: ``main`` is
    also called in-process, by tests and scripts)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def main(argv: list[str] | None = None) -> int:
    """Run the ``sddhr`` command. Every error is one line on stderr naming the file or
    parameter, with exit status 2 (``--debug``: the traceback instead)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if _asks_version(argv):  # before anything else: building the parser imports torch
        print(_version())
        return 0
    from .._io import os_error_message
    from ..config import SpecError
    reconfigure = getattr(sys.stdout, "reconfigure", None)  # a replaced stdout may lack it
    with contextlib.suppress(AttributeError, ValueError):
        if reconfigure is not None:
            reconfigure(line_buffering=True)  # progress lines reach a pipe / log file at once
    from ..plugins import PluginError, load_plugins

    try:  # before the parser: a plug-in's names are among its choices
        load_plugins()
    except PluginError as err:
        if "--debug" in argv:
            raise
        print(f"sddhr: error: {one_line(err)}", file=sys.stderr, flush=True)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..data import DataError
    from ..distributed import world

    threads = getattr(args, "threads", None)
    try:
        with _torch_threads(threads):
            return args.func(args)
    except KeyboardInterrupt:
        print(f"sddhr {args.command}: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as err:
        if args.debug:
            raise
        if isinstance(err, (SpecError, DataError, PluginError)):
            msg = one_line(err)
        elif isinstance(err, OSError):
            msg = os_error_message(err, err.filename or "(file)", "use")
        else:
            msg = f"unexpected {type(err).__name__}: {one_line(err)} (rerun with --debug for the traceback)"
        if world().is_main:
            print(f"sddhr {args.command}: error: {msg[:2000]}", file=sys.stderr, flush=True)
        return 2
