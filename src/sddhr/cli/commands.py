"""The sub-commands of ``sddhr``: each parses nothing itself (:func:`sddhr.cli.build_parser`
registers it with its flags), calls the library and prints; it returns the exit status."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .config_flags import EVAL_FLAGS, EXPLORE_FLAGS, config_from_args, train_config_from_args

# Only the standard library is imported at module level: the library (pydantic, numpy, torch)
# is imported where it is used, so that ``sddhr --version`` answers before any of it loads.


def _check_device_and_out(args: argparse.Namespace) -> None:
    """A command that runs on ``--device`` and writes to the folder ``--out``: both checked
    before anything runs."""
    from .._io import check_writable
    from ..config import check_torch_device

    check_torch_device(args.device)
    check_writable(args.out)


def cmd_abstraction(args: argparse.Namespace) -> int:
    from .._io import check_writable
    from ..abstraction import build_table, validate_table
    from ..spec_flags import spec_from_args

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


def cmd_fit_device(args: argparse.Namespace) -> int:
    from .._io import atomic_write_text, check_writable, reading
    from ..config import preset
    from ..device import fit_device, read_resistance_csv

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


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import SpecError
    from ..distributed import env_world_size, session, world
    from ..train import train

    if args.resume and args.force:
        raise SpecError("--resume and --force: give one (--resume continues the run in --out, --force replaces it)")
    _check_device_and_out(args)
    if env_world_size() > 1 and str(args.device).startswith("cuda") and ":" in str(args.device):
        raise SpecError(f"--device {args.device}: under torchrun give --device cuda (rank r uses cuda:LOCAL_RANK)")
    cfg, note = train_config_from_args(args)
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..config import SpecError
    from ..evaluate import EvalConfig, format_table, make_eval_config
    from ..experiment import compare
    from ..spec_flags import spec_changes_from_args, spec_from_args

    _check_device_and_out(args)
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


def cmd_report(args: argparse.Namespace) -> int:
    from .._io import check_writable
    from ..report import write_report

    if args.out:
        check_writable(args.out)
    png, md = write_report(args.results, args.out, args.title)
    print(md.read_text(encoding="utf-8"))
    print(f"wrote {png} and {md}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from ..spec_flags import spec_from_args

    _check_device_and_out(args)
    run_demo(args.out, quick=args.quick, device=args.device, spec=spec_from_args(args))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .._io import check_writable
    from ..config import SpecError
    from ..data import download

    root = args.data_dir or os.environ.get("SDDHR_DATA_DIR")
    if not root:
        raise SpecError("--data-dir: give the data folder to download into (or set SDDHR_DATA_DIR)")
    check_writable(root)
    for path in download(args.name, root, progress=sys.stderr.isatty()):
        print(f"ok {path}")
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    from ..config import SpecError
    from ..explore import ExploreConfig, make_explore_config, run_explore

    _check_device_and_out(args)
    data = config_from_args(args, EXPLORE_FLAGS, ExploreConfig)
    if not isinstance(data.get("base", {}), dict):
        raise SpecError(f"{args.config}: base must be a mapping (a training config), got {data['base']!r}")
    cfg = make_explore_config(data)
    rows = run_explore(cfg, args.out, device=args.device)
    from ..report import pareto_plot

    pareto_plot(rows, Path(args.out) / "pareto.png")  # the labelled version of the plot run_explore drew
    head = f"{'rows':>5}{'adc':>5}{'wb':>4}{'xb':>4}{'level':>7}  {'method':<13}{'acc %':>8}{'nJ/inf':>10}{'TOPS/W':>9}"
    print(head)
    for r in rows:
        print(f"{r['rows']:>5}{r['adc_bits']:>5}{r['w_bits']:>4}{r['x_bits']:>4}{r['level']:>7g}  {r['method']:<13}"
              f"{100 * r['acc_mean']:>8.2f}{r['energy_per_inference_j'] * 1e9:>10.3f}{r['tops_per_w_1b']:>9.1f}")
    print(f"wrote {args.out}/explore.json, explore.csv, pareto.png")
    return 0
