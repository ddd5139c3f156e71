"""The command-line front end (thin: parse, call the library, print).

Each sub-command lives in a ``_cmd_*`` function registered in :func:`build_parser`; flags
reach the configs through one table per command (``TRAIN_FLAGS`` ...) and
:func:`config_from_args`; errors
from the library (:class:`~sddhr.config.SpecError`, which names the parameter) are printed
without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import sys
import time
from pathlib import Path

from . import __version__

# Everything else (pydantic, numpy, torch and the modules that use them) is imported where it
# is used: ``sddhr --version`` and ``sddhr -V`` answer before any of it loads
# (tests/test_cli_flags.py checks that).


def _cmd_abstraction(args) -> int:
    from ._io import check_writable
    from .abstraction import build_table, validate_table
    from .spec_flags import spec_from_args

    spec = spec_from_args(args)
    if args.out:
        check_writable(args.out, is_file=True)
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
    from ._io import atomic_write_text, check_writable, reading
    from .config import preset
    from .device import fit_device, read_resistance_csv

    base = preset(args.preset)
    if args.out:
        check_writable(args.out, is_file=True)
    with reading(args.csv, "measurement file"):
        data = read_resistance_csv(args.csv)
    fit = fit_device(args.csv, base=base.device, data=data)
    print(fit.summary())
    if args.out:
        spec = base.replace(device=fit.device.model_dump(), name="fitted")
        atomic_write_text(args.out, spec.model_dump_json(indent=2))
        print(f"wrote {args.out}")
    return 0


# ------------------------------------------------------------------- experiments

#: command-line flag (argparse dest) -> dotted config path, per command
TRAIN_FLAGS = {
    "recipe": "recipe", "arch": "arch", "width": "width", "keep_digital": "keep_digital", "level": "level",
    "variant": "variant", "table": "table", "chip_seed": "chip_seed", "impl": "instance_impl",
    "noise_std": "noise_std", "weight_step_scale": "weight_step_scale", "level_ramp_epochs": "level_ramp_epochs",
    "clip_gradient": "clip_gradient", "batch_norm": "batch_norm", "model": "arch",
    "distill_from": "distill_from", "distill_weight": "distill_weight", "distill_temperature": "distill_temperature",
    "epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "optimizer": "optimizer",
    "weight_decay": "weight_decay", "label_smoothing": "label_smoothing",
    "seed": "seed", "init_from": "init_from", "max_steps_per_epoch": "max_steps_per_epoch", "data": "data.name",
    "data_dir": "data.data_dir", "train_subset": "data.train_subset", "test_subset": "data.test_subset",
}
EVAL_FLAGS = {
    "levels": "levels", "instances": "instances", "first_seed": "first_seed", "impl": "impl",
    "batch_size": "batch_size", "data": "data.name", "data_dir": "data.data_dir", "test_subset": "data.test_subset",
    "redundancy": "redundancy", "recalibrate": "recalibrate",
}
EXPLORE_FLAGS = {
    "rows": "rows", "adc_bits": "adc_bits", "w_bits": "w_bits", "x_bits": "x_bits", "levels": "levels",
    "float_epochs": "float_epochs", "finetune_epochs": "finetune_epochs", "instances": "instances",
    "energy": "energy", "variant": "sddhr_variant", "arch": "base.arch", "width": "base.width",
    "batch_size": "base.batch_size", "seed": "base.seed", "data": "base.data.name", "data_dir": "base.data.data_dir",
    "train_subset": "base.data.train_subset", "test_subset": "base.data.test_subset",
}


def _nested_model(annotation):
    """The pydantic model class of a field annotated ``Model`` or ``Model | None``, else None."""
    import typing

    from pydantic import BaseModel

    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def unknown_keys(data: dict, model, prefix: str = "") -> list[str]:
    """Every key of ``data`` (recursively, dotted) that ``model`` does not have, each with
    the closest valid keys ("did you mean"). The hardware spec is left to its own checks."""
    from .config import HardwareSpec

    fields = model.model_fields
    problems = []
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(prefix + c for c in close)}?)" if close else ""
            problems.append(f"unknown key {prefix}{key}{hint}")
            continue
        sub = _nested_model(fields[key].annotation)
        if sub is not None and sub is not HardwareSpec and isinstance(value, dict):
            problems += unknown_keys(value, sub, f"{prefix}{key}.")
    return problems


def config_from_args(args, flags: dict[str, str], model=None) -> dict:
    """The ``--config`` file (if any) as a dict, with every flag given on the command line
    (not None) written to its dotted config path from ``flags``. With ``model`` (the config's
    pydantic class), a key the file has and the model does not is an error naming the key
    and the closest valid ones."""
    from .config import SpecError
    from .train import load_config_file

    data = load_config_file(args.config) if getattr(args, "config", None) else {}
    if model is not None and isinstance(data, dict):
        problems = unknown_keys(data, model)
        if problems:
            raise SpecError(f"--config {args.config}: " + "; ".join(problems))
    for flag, path in flags.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        *parents, leaf = path.split(".")
        node = data
        for depth, key in enumerate(parents):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                where = f"{args.config}: " if getattr(args, "config", None) else ""
                raise SpecError(f"{where}{'.'.join(parents[:depth + 1])} must be a mapping, got {node!r}")
        node[leaf] = value
    return data


def _train_config_from_args(args):
    from .config import SpecError, make_spec, preset
    from .recipes import TrainConfig
    from .spec_flags import DEFAULT_PRESET, spec_changes_from_args, spec_from_args
    from .train import inherit_from_checkpoint, make_config

    if getattr(args, "arch", None) and getattr(args, "model", None):
        raise SpecError(f"--arch {args.arch} and --model {args.model}: give one (--model names your own network)")
    data = config_from_args(args, TRAIN_FLAGS, TrainConfig)
    if not isinstance(data.get("data", {}), dict):
        raise SpecError(f"{args.config}: data must be a mapping (name, data_dir, ...), got {data['data']!r}")
    if args.no_augment:
        data.setdefault("data", {})["augment"] = False
    if args.preset is not None or args.spec_file or args.cell_csv:  # a named base spec replaces the config's hardware
        data["hardware"] = spec_from_args(args).model_dump()
    data, note = inherit_from_checkpoint(data)
    changes = spec_changes_from_args(args)
    if changes:  # column / macro flags change the config's (or the checkpoint's) hardware
        hw = data.get("hardware") or DEFAULT_PRESET
        data["hardware"] = (preset(hw) if isinstance(hw, str) else make_spec(hw)).replace(**changes).model_dump()
        if note:
            note += "; then the hardware flags applied"
    return make_config(data), note


def _cmd_train(args) -> int:
    from ._io import check_writable
    from .config import SpecError, check_device
    from .distributed import env_world_size, session, world
    from .train import train

    if args.resume and args.force:
        raise SpecError("--resume and --force: give one (--resume continues the run in --out, --force replaces it)")
    check_device(args.device)
    check_writable(args.out)
    if env_world_size() > 1 and str(args.device).startswith("cuda") and ":" in str(args.device):
        raise SpecError(f"--device {args.device}: under torchrun give --device cuda (rank r uses cuda:LOCAL_RANK)")
    cfg, note = _train_config_from_args(args)
    with session(args.device) as device:
        w = world()
        if note and w.is_main:
            print(f"sddhr train: {note}")
        if w.size > 1 and w.is_main:
            print(f"sddhr train: {w.size} processes, global batch {cfg.batch_size}", flush=True)
        ck = train(cfg, args.out, resume=args.resume, device=device, force=args.force, tensorboard=args.tensorboard)
        h = ck["history"][-1]
        if w.is_main:
            print(f"{cfg.recipe}: {ck['epoch']} epochs, final test accuracy {100 * h['test_acc']:.2f}% -> {args.out}")
    return 0


def _cmd_evaluate(args) -> int:
    from ._io import check_writable
    from .config import SpecError, check_device
    from .evaluate import EvalConfig, format_table, make_eval_config
    from .experiment import compare
    from .spec_flags import spec_changes_from_args, spec_from_args

    check_device(args.device)
    check_writable(args.out)
    data = config_from_args(args, EVAL_FLAGS, EvalConfig)
    cfg = make_eval_config(data)
    # --spec-file replaces every checkpoint's spec; --rows / --adc-bits / --full-scale alone change each one's own
    spec = spec_from_args(args) if args.spec_file else None
    if args.ray_address and args.executor != "ray":
        raise SpecError("--ray-address needs --executor ray")
    results = compare(args.checkpoints, cfg, args.out, args.names, args.device, spec, executor=args.executor,
                      workers=args.workers, ray_address=args.ray_address,
                      spec_changes=None if args.spec_file else spec_changes_from_args(args))
    print(format_table(results))
    print(f"wrote {Path(args.out) / 'results.json'}")
    return 0


def _cmd_report(args) -> int:
    from ._io import check_writable
    from .report import write_report

    if args.out:
        check_writable(args.out)
    png, md = write_report(args.results, args.out, args.title)
    print(md.read_text(encoding="utf-8"))
    print(f"wrote {png} and {md}")
    return 0


def _cmd_demo(args) -> int:
    from ._io import check_writable
    from .config import check_device
    from .demo import run_demo
    from .spec_flags import spec_from_args

    check_device(args.device)
    check_writable(args.out)
    run_demo(args.out, quick=args.quick, device=args.device, spec=spec_from_args(args))
    return 0


def _cmd_download(args) -> int:
    from ._io import check_writable
    from .config import SpecError
    from .data import download

    root = args.data_dir or os.environ.get("SDDHR_DATA_DIR")
    if not root:
        raise SpecError("--data-dir: give the data folder to download into (or set SDDHR_DATA_DIR)")
    check_writable(root)
    for path in download(args.name, root, progress=sys.stderr.isatty()):
        print(f"ok {path}")
    return 0


def _cmd_explore(args) -> int:
    from ._io import check_writable
    from .config import SpecError, check_device
    from .explore import ExploreConfig, make_explore_config, run_explore

    check_device(args.device)
    check_writable(args.out)
    data = config_from_args(args, EXPLORE_FLAGS, ExploreConfig)
    if not isinstance(data.get("base", {}), dict):
        raise SpecError(f"{args.config}: base must be a mapping (a training config), got {data['base']!r}")
    cfg = make_explore_config(data)
    rows = run_explore(cfg, args.out, device=args.device)
    from .report import pareto_plot

    pareto_plot(rows, Path(args.out) / "pareto.png")  # the labelled version of the plot run_explore drew
    head = f"{'rows':>5}{'adc':>5}{'wb':>4}{'xb':>4}{'level':>7}  {'method':<13}{'acc %':>8}{'nJ/inf':>10}{'TOPS/W':>9}"
    print(head)
    for r in rows:
        print(f"{r['rows']:>5}{r['adc_bits']:>5}{r['w_bits']:>4}{r['x_bits']:>4}{r['level']:>7g}  {r['method']:<13}"
              f"{100 * r['acc_mean']:>8.2f}{r['energy_per_inference_j'] * 1e9:>10.3f}{r['tops_per_w_1b']:>9.1f}")
    print(f"wrote {args.out}/explore.json, explore.csv, pareto.png")
    return 0


# ------------------------------------------------------------------- the parser


class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a mistyped sub-command or choice (difflib)."""

    def _check_value(self, action, value):
        if action.choices is None or value in action.choices:
            return
        names = [str(c) for c in action.choices]
        close = difflib.get_close_matches(str(value), names, n=3, cutoff=0.6)
        what = "command" if isinstance(action, argparse._SubParsersAction) else "choice"
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise argparse.ArgumentError(action, f"invalid {what} {value!r}{hint} (choose from {', '.join(names)})")


class _DeprecatedAlias(argparse.Action):
    """An old flag name that still works: it stores into its new name's destination and
    prints a one-line note on stderr."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is deprecated and will be removed; use {self.new} (same meaning)",
              file=sys.stderr, flush=True)
        setattr(namespace, self.dest, values)


def _deprecated_alias(p, old: str, new: str, **kwargs) -> None:
    """Keep ``old`` working as a hidden alias of the flag ``new`` (same type / choices)."""
    p.add_argument(old, dest=new.lstrip("-").replace("-", "_"), action=_DeprecatedAlias, new=new,
                   default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)


#: torch threads of a computing command when --threads is not given. Measured on the
#: 2-core machine the project is developed on while another job kept both cores busy: the
#: tour's MNIST MLP (200 steps + test) took 14 s on 1 thread and 105 s on 2; an S-DDHR
#: fine-tune (40 steps + test) 19 s and 46 s (README, "Threads").
DEFAULT_THREADS = 1


def _threads(text: str) -> int:
    cores = os.cpu_count() or 1
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {cores}, got {text!r}") from None
    if not 1 <= n <= cores:
        raise argparse.ArgumentTypeError(f"must be from 1 to {cores} (the cores of this machine), got {n}")
    return n


def _add_threads(p) -> None:
    p.add_argument("--threads", type=_threads, default=DEFAULT_THREADS, metavar="N",
                   help="torch threads for the computation; more than 1 pays only on idle cores (README, "
                        "\"Threads\")")


def _fmt_default(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_fmt_default(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _config_defaults(model, flags: dict[str, str]) -> dict[str, object]:
    """flag dest -> the default of its config path in ``model`` (the value a run gets
    without the flag and without a config file)."""
    out = {}
    for flag, path in flags.items():
        node = model()
        for key in path.split("."):
            node = getattr(node, key, None)
            if node is None:
                break
        if node is not None:
            out[flag] = node.name if hasattr(node, "model_dump") and hasattr(node, "name") else node
    return out


def _with_defaults(p, defaults: dict[str, object] | None = None) -> None:
    """Append "(default: ...)" to each option's help that does not say its default already:
    the argparse default, else the config's (``defaults``, from :func:`_config_defaults`),
    else none (the option is off unless given)."""
    defaults = defaults or {}
    for a in p._actions:
        if not a.option_strings or a.help in (None, argparse.SUPPRESS) or a.required or a.nargs == 0:
            continue
        if "default" in a.help:
            continue
        value = a.default if a.default not in (None, argparse.SUPPRESS) else defaults.get(a.dest)
        a.help += f" (default: {'none' if value is None else _fmt_default(value)})"


def _add_train_args(p, e):
    from .spec_flags import add_spec_args
    p.add_argument("--config", help="YAML / TOML / JSON training config; flags override it (default: none)")
    p.add_argument("--recipe", choices=e.RECIPES, help="training recipe")
    p.add_argument("--arch", choices=e.ARCHS, help="network architecture")
    p.add_argument("--model", help="your own network instead of --arch: a factory's import path, "
                                   "package.module:function or file.py:function, called as factory(in_shape, "
                                   "classes) (default: none)")
    p.add_argument("--width", type=int, help="network width, channels of the first conv / MLP scale (default: the "
                                             "architecture's own)")
    p.add_argument("--keep-digital", nargs="*", help="layers kept digital (names, 'first', 'last')")
    p.add_argument("--level", type=float, help="variation level for ddhr / sddhr")
    p.add_argument("--variant", choices=e.VARIANTS, help="sddhr variant (docs/MODEL.md)")
    p.add_argument("--table", help="sddhr: train from this abstraction table (.npz; faithful, exact and composed "
                                   "read it; default: computed from the hardware spec)")
    p.add_argument("--chip-seed", type=int, help="ddhr: the training chip's seed")
    p.add_argument("--impl", choices=e.IMPLS, help="ddhr: chip model during training")
    _deprecated_alias(p, "--instance-impl", "--impl", choices=e.IMPLS)
    p.add_argument("--noise-std", type=float, help="noise recipe: weight noise relative to max|w|")
    p.add_argument("--weight-step-scale", type=float,
                   help="weight step / (max|w| / qmax), in (0, 4] (default: 1 for float / conventional, "
                        "0.35 for ddhr / sddhr / noise)")
    p.add_argument("--clip-gradient", choices=("zero", "inward"), help="gradient of clipped weights")
    p.add_argument("--batch-norm", choices=("batch", "frozen"), help="batch norm in training: batch statistics, "
                   "or frozen running statistics re-estimated under the training mode each epoch (docs/MODEL.md)")
    p.add_argument("--level-ramp-epochs", type=int, help="sddhr: raise the level linearly over these first epochs")
    p.add_argument("--distill-from", help="teacher checkpoint (e.g. the float run) for distillation (default: none)")
    p.add_argument("--distill-weight", type=float, help="share of the distillation loss, in (0, 1]")
    p.add_argument("--distill-temperature", type=float, help="distillation temperature, in [1, 20]")
    p.add_argument("--epochs", type=int, help="training epochs")
    p.add_argument("--batch-size", type=int, help="images per step")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--optimizer", choices=e.OPTIMIZERS, help="optimiser")
    p.add_argument("--weight-decay", type=float,
                   help="coupled L2 weight decay (default 5e-4; 0 for Adam in ddhr / sddhr / noise)")
    p.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing, in [0, 1) (default 0)")
    p.add_argument("--seed", type=int, help="seed of initialisation, data order and training noise")
    p.add_argument("--init-from", help="checkpoint to fine-tune from; its network, data and hardware are "
                                       "taken unless given (default: none, train from scratch)")
    p.add_argument("--max-steps-per-epoch", type=int, help="cap on steps per epoch, for quick runs (default: none)")
    _deprecated_alias(p, "--max-steps", "--max-steps-per-epoch", type=int)
    p.add_argument("--data", choices=e.DATASETS, help="data set (digits is embedded)")
    p.add_argument("--data-dir", help="data folder (default: $SDDHR_DATA_DIR)")
    p.add_argument("--train-subset", type=int, help="use only the first N training images (default: all)")
    p.add_argument("--test-subset", type=int, help="use only the first N test images (default: all)")
    p.add_argument("--no-augment", action="store_true", help="no random crops / flips (default: augment)")
    p.add_argument("--out", required=True, help="run folder (checkpoint.pt, config.json)")
    p.add_argument("--resume", action="store_true", help="continue a stopped run in --out (a larger --epochs extends "
                                                            "a finished one)")
    p.add_argument("--force", action="store_true", help="replace the run --out holds (default: refuse)")
    p.add_argument("--tensorboard", action="store_true", help="also log the per-epoch metrics for TensorBoard "
                                                              "(--out/tensorboard; needs the tensorboard package)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (under torchrun: cpu or cuda)")
    _add_threads(p)
    add_spec_args(p)


def _add_eval_args(p, e):
    p.add_argument("checkpoints", nargs="+", help="checkpoint files or run folders")
    p.add_argument("--names", nargs="*", help="display names, one per checkpoint (default: each one's recipe, "
                                                  "numbered where two share one)")
    p.add_argument("--config", help="YAML / TOML / JSON evaluation config; flags override it (default: none)")
    p.add_argument("--levels", type=float, nargs="+", help="variation levels")
    p.add_argument("--instances", type=int, help="chip instances per level")
    p.add_argument("--first-seed", type=int, help="first chip seed")
    p.add_argument("--impl", choices=e.IMPLS, help="chip model")
    p.add_argument("--batch-size", type=int, help="test images per batch")
    p.add_argument("--data", choices=e.DATASETS, help="test data set (default: the training one)")
    p.add_argument("--data-dir", help="data folder (default: $SDDHR_DATA_DIR)")
    p.add_argument("--test-subset", type=int, help="use only the first N test images (default: all)")
    d = p.add_argument_group("deployment options (report them apart from plain S-DDHR)")
    d.add_argument("--redundancy", type=int, help="copies of every IMC layer per chip, outputs averaged")
    d.add_argument("--recalibrate", type=int, metavar="IMAGES",
                   help="re-estimate batch-norm statistics on each chip from this many unlabelled training images "
                        "(default: 0, off)")
    p.add_argument("--out", required=True, help="results folder (results.sqlite keeps every finished evaluation: "
                                                 "rerun the command to complete an interrupted one)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    from .executors import EXECUTORS

    g = p.add_argument_group("parallel evaluation")
    g.add_argument("--executor", choices=EXECUTORS,
                   help="serial: this process; local: a process per core; ray: a Ray cluster (default: local, "
                        "after a start in this process that leaves short sweeps serial)")
    g.add_argument("--workers", type=int, help="worker processes (local) / CPUs of a local Ray (default: all cores)")
    g.add_argument("--ray-address", help="Ray cluster to connect to (default: $RAY_ADDRESS, else a local Ray)")
    _add_threads(p)  # the chip jobs themselves run one thread each (--workers sets how many run at once)
    g = p.add_argument_group("evaluate under another hardware spec (optional)")
    g.add_argument("--spec-file", help="JSON hardware spec every checkpoint is moved onto (default: each one's own)")
    g.add_argument("--rows", type=int, help="rows per column (changes each checkpoint's own spec; default: its own)")
    g.add_argument("--adc-bits", type=int, help="ADC bits (changes each checkpoint's own spec; default: its own)")
    g.add_argument("--full-scale", type=float, help="ADC full scale, counts (changes each checkpoint's own spec; "
                                                    "default: its own)")


class _Choices:
    """The enumerations the flags offer, each from its one definition in the library."""

    def __init__(self):
        from .abstraction import METHODS
        from .data import DATASETS, REMOTE_FILES
        from .energy import ENERGY_PRESETS
        from .models import ARCHS
        from .nn import IMPLS, VARIANTS
        from .train import OPTIMIZERS, RECIPES

        self.METHODS, self.DATASETS, self.DOWNLOADS, self.ARCHS = METHODS, DATASETS, tuple(REMOTE_FILES), ARCHS
        self.IMPLS, self.VARIANTS, self.OPTIMIZERS, self.RECIPES = IMPLS, VARIANTS, OPTIMIZERS, RECIPES
        self.ENERGY_PRESETS = tuple(ENERGY_PRESETS)


def _version() -> str:
    return f"sddhr {__version__}"


def build_parser() -> argparse.ArgumentParser:
    from .config import PRESETS
    from .evaluate import EvalConfig
    from .explore import ExploreConfig
    from .recipes import TrainConfig
    from .spec_flags import DEFAULT_PRESET, add_spec_args, spec_from_args

    e = _Choices()
    parser = _Parser(prog="sddhr", description=__import__("sddhr").__doc__)
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
    _add_threads(p)
    p.set_defaults(func=_cmd_abstraction)

    p = sub.add_parser("fit-device", help="fit a device model to measured resistances (CSV)")
    p.add_argument("csv", help="CSV with columns state (P, AP or T) and r_ohm")
    p.add_argument("--preset", default=DEFAULT_PRESET, help="spec to put the fitted device into")
    p.add_argument("--out", help="write the fitted hardware spec (JSON; default: print the fit only)")
    p.set_defaults(func=_cmd_fit_device)

    from .fit import add_command as add_fit_column  # sddhr fit-column (its flags live with the fit)

    add_fit_column(sub, add_spec_args, spec_from_args, e.METHODS)
    _add_threads(sub.choices["fit-column"])

    p = sub.add_parser("train", help=f"train a network with a recipe ({', '.join(e.RECIPES)})")
    _add_train_args(p, e)
    _with_defaults(p, _config_defaults(TrainConfig, TRAIN_FLAGS))
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", aliases=["compare"],
                       help="evaluate checkpoints on the same chip instances across variation levels")
    _add_eval_args(p, e)
    _with_defaults(p, _config_defaults(EvalConfig, EVAL_FLAGS))
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
    _add_threads(p)
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
    _add_threads(p)
    _with_defaults(p, _config_defaults(ExploreConfig, EXPLORE_FLAGS))
    p.set_defaults(func=_cmd_explore)

    p = sub.add_parser("download", help="fetch an official data set and check its checksums (needs internet)")
    p.add_argument("name", choices=e.DOWNLOADS, help="data set")
    p.add_argument("--data-dir", help="data folder to download into (default: $SDDHR_DATA_DIR)")
    _deprecated_alias(p, "--root", "--data-dir")
    p.set_defaults(func=_cmd_download)
    for p in {id(p): p for p in sub.choices.values()}.values():  # --debug also after the sub-command (aliases once)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        _with_defaults(p)
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
def _torch_threads(n: int | None):
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
    from ._io import os_error_message
    from .config import SpecError
    reconfigure = getattr(sys.stdout, "reconfigure", None)  # a replaced stdout may lack it
    with contextlib.suppress(AttributeError, ValueError):
        if reconfigure is not None:
            reconfigure(line_buffering=True)  # progress lines reach a pipe / log file at once
    parser = build_parser()
    args = parser.parse_args(argv)
    from .data import DataError
    from .distributed import world

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
        if isinstance(err, (SpecError, DataError)):
            msg = one_line(err)
        elif isinstance(err, OSError):
            msg = os_error_message(err, err.filename or "(file)", "use")
        else:
            msg = f"unexpected {type(err).__name__}: {one_line(err)} (rerun with --debug for the traceback)"
        if world().is_main:
            print(f"sddhr {args.command}: error: {msg[:2000]}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
