"""The flags of ``sddhr train`` and ``sddhr evaluate`` (the other commands' few flags are
declared in :func:`sddhr.cli.build_parser`)."""

from __future__ import annotations

import argparse

from .parsing import Choices, add_threads, deprecated_alias

# Only the standard library is imported at module level: the library (pydantic, numpy, torch)
# is imported where it is used, so that ``sddhr --version`` answers before any of it loads.


def add_train_args(p: argparse.ArgumentParser, e: Choices) -> None:
    from ..spec_flags import add_spec_args
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
    deprecated_alias(p, "--instance-impl", "--impl", choices=e.IMPLS)
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
    deprecated_alias(p, "--max-steps", "--max-steps-per-epoch", type=int)
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
    add_threads(p)
    add_spec_args(p)


def add_eval_args(p: argparse.ArgumentParser, e: Choices) -> None:
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
    from ..executors import EXECUTORS

    g = p.add_argument_group("parallel evaluation")
    g.add_argument("--executor", choices=EXECUTORS,
                   help="serial: this process; local: a process per core; ray: a Ray cluster (default: local, "
                        "after a start in this process that leaves short sweeps serial)")
    g.add_argument("--workers", type=int, help="worker processes (local) / CPUs of a local Ray (default: all cores)")
    g.add_argument("--ray-address", help="Ray cluster to connect to (default: $RAY_ADDRESS, else a local Ray)")
    add_threads(p)  # the chip jobs themselves run one thread each (--workers sets how many run at once)
    g = p.add_argument_group("evaluate under another hardware spec (optional)")
    g.add_argument("--spec-file", help="JSON hardware spec every checkpoint is moved onto (default: each one's own)")
    g.add_argument("--rows", type=int, help="rows per column (changes each checkpoint's own spec; default: its own)")
    g.add_argument("--adc-bits", type=int, help="ADC bits (changes each checkpoint's own spec; default: its own)")
    g.add_argument("--full-scale", type=float, help="ADC full scale, counts (changes each checkpoint's own spec; "
                                                    "default: its own)")
