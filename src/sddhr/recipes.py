"""The training config: recipes and the mode each trains in, the data config, config files.

Recipes (:data:`Recipe`; the mode kind each trains in is :data:`RECIPE_MODES`, the one
recipe -> mode table: :meth:`TrainConfig.train_mode` and the evaluation's own-chip job read it):

``float``         plain floating point (the IMC layers in ``float`` mode),
``conventional``  ``ideal`` mode (bit-true hardware without variation),
``ddhr``          DDHR, data-driven hardware resilience: ``instance`` mode, one frozen chip
                  (``level``, ``chip_seed``),
``sddhr``         S-DDHR, stochastic DDHR: ``stochastic`` mode at ``level`` (``variant``;
                  the table-based variants can read an abstraction table file, ``table``),
``noise``         ``noise`` mode: generic additive Gaussian weight noise (``noise_std`` of
                  each IMC layer's max integer weight, fresh every step) on the ideal
                  product, the baseline of established analog toolkits.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .config import HardwareSpec, Level, SpecError, preset, validated
from .data import DatasetName
from .models import ARCHS, check_arch
from .nn import Mode, check_table_matches
from .nn.backends import table_variants
from .nn.mode import DEFAULT_VARIANT, MAX_NOISE_STD, Impl, Kind, VariantName
from .nn.norms import NORM_MODES
from .nn.quant import CLIP_GRADIENTS, WeightQuantizer

if TYPE_CHECKING:
    from .abstraction import ColumnTable

    # the names of these two are tuples of other modules: pydantic reads Literal[tuple] as
    # a Literal of its items, a type checker cannot, and sees the plain strings they are
    ClipGradient = str
    NormMode = str
else:
    ClipGradient = Literal[CLIP_GRADIENTS]
    NormMode = Literal[NORM_MODES]

#: weight step scale of the recipes trained under hardware noise (ddhr, sddhr, noise): measured
#: on MNIST, all-IMC MLP, S-DDHR at level 10 from a float model (docs/RESULTS.md): 1 diverged
#: with SGD at the default learning rate, 0.35 kept the ideal accuracy and gave the smallest drop
NOISY_STEP_SCALE = 0.35
#: weight decay unless a run gives one; Adam in the recipes trained under hardware noise gets
#: none: with coupled decay a clipped weight's only gradient is the decay, which Adam turns into a
#: full-size step inward for every clipped weight (measured on MNIST and CIFAR-10, docs/RESULTS.md)
DEFAULT_WEIGHT_DECAY = 5e-4
#: recipes whose batch norm trains on running statistics by default (``TrainConfig.norm_mode``);
#: none until measured better (docs/RESULTS.md)
FROZEN_NORM_RECIPES: tuple[str, ...] = ()
Recipe = Literal["float", "conventional", "ddhr", "sddhr", "noise"]
RECIPES: tuple[Recipe, ...] = get_args(Recipe)
#: the mode kind each recipe trains in (one to one)
RECIPE_MODES: dict[Recipe, Kind] = {"float": "float", "conventional": "ideal", "ddhr": "instance",
                                    "sddhr": "stochastic", "noise": "noise"}
Optimizer = Literal["sgd", "adam"]
OPTIMIZERS: tuple[Optimizer, ...] = get_args(Optimizer)


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Cfg):
    name: DatasetName = Field("digits", description="digits (embedded), mnist, cifar10, svhn, or a plug-in's "
                                                    "(sddhr.data.datasets())")
    data_dir: str | None = Field(None, description="data directory (default: $SDDHR_DATA_DIR)")
    train_subset: int | None = Field(None, ge=1, description="use only the first N training images")
    test_subset: int | None = Field(None, ge=1, description="use only the first N test images")
    augment: bool = True


class TrainConfig(_Cfg):
    """Everything that defines a training run; saved with every checkpoint and result."""

    recipe: Recipe = "conventional"
    arch: str = Field("mlp", description=f"network: {', '.join(ARCHS)}, or a model factory's import path "
                                         "(package.module:function or file.py:function, called as "
                                         "factory(in_shape, classes))")
    width: int | None = Field(None, ge=1, le=4096)
    hardware: HardwareSpec = Field(default_factory=lambda: preset("mram-22nm"))
    keep_digital: list[str] = Field(default_factory=lambda: ["first"])
    level: Level = Field(1.0, description="variation level of ddhr / sddhr training")
    variant: VariantName = DEFAULT_VARIANT
    table: str | None = Field(None, description="sddhr (exact / composed / faithful): abstraction table file (.npz)")
    chip_seed: int = Field(0, ge=0, description="chip instance of a ddhr run")
    instance_impl: Impl = "bit_true"
    noise_std: float = Field(0.05, ge=0, le=MAX_NOISE_STD, description="noise recipe: weight noise / max|w|")
    weight_step_scale: float | None = Field(
        None, gt=0, le=WeightQuantizer.MAX_STEP_SCALE,
        description="weight step / (max|w| / qmax); default: 1 for float and conventional, "
                    f"{NOISY_STEP_SCALE} for recipes trained under hardware noise (measured, docs/RESULTS.md)")
    epochs: int = Field(10, ge=1, le=10000)
    batch_size: int = Field(128, ge=1, le=65536)
    lr: float = Field(0.05, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float | None = Field(
        None, ge=0, le=1, description="coupled L2 weight decay; default: 0 for Adam in the recipes trained under "
                                      f"hardware noise, else {DEFAULT_WEIGHT_DECAY} (measured, docs/RESULTS.md)")
    optimizer: Optimizer = "sgd"
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="share of the target spread evenly over all "
                                   "classes in the cross-entropy (0: off)")
    seed: int = Field(0, ge=0)
    init_from: str | None = Field(None, description="checkpoint to fine-tune from")
    data: DataConfig = Field(default_factory=DataConfig)
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap (quick runs, tests)")
    # training techniques (docs/RESULTS.md: measured, off by default)
    clip_gradient: ClipGradient = Field("zero", description="gradient of weights beyond the quantiser's "
                                                   "clip: zero, or inward (only where it moves them back inside)")
    level_ramp_epochs: int = Field(0, ge=0, le=10000, description="sddhr: the training level rises linearly to "
                                   "`level` over this many first epochs (epoch e: level (e + 1) / (ramp + 1)); 0: off")
    distill_from: str | None = Field(None, description="teacher checkpoint (e.g. the float model) for distillation")
    distill_weight: float = Field(0.5, gt=0, le=1, description="share of the distillation term in the loss")
    distill_temperature: float = Field(4.0, ge=1, le=20, description="softmax temperature of distillation")
    batch_norm: NormMode | None = Field(
        None, description="batch norm in training: batch (batch statistics) or frozen (running statistics, "
                          "re-estimated under the training mode each epoch); default: batch (measured, "
                          "docs/RESULTS.md)")

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        return check_arch(v)

    @field_validator("hardware", mode="before")
    @classmethod
    def _hw(cls, v: object) -> object:
        if isinstance(v, str):
            return preset(v)
        return v

    @model_validator(mode="after")
    def _table_needs_sddhr(self) -> TrainConfig:
        if self.table is not None and (self.recipe != "sddhr" or self.variant not in table_variants()):
            got = f"recipe {self.recipe}" + (f", variant {self.variant}" if self.recipe == "sddhr" else "")
            raise ValueError(f"--table (table) is only valid with recipe sddhr and variant "
                             f"{' or '.join(table_variants())}; got {got}")
        return self

    @model_validator(mode="after")
    def _ramp_needs_sddhr(self) -> TrainConfig:
        if self.level_ramp_epochs and (self.recipe != "sddhr" or self.table is not None):
            raise ValueError("--level-ramp-epochs (level_ramp_epochs) needs recipe sddhr without --table (a table "
                             f"holds one level); got recipe {self.recipe}" + (" with a table" if self.table else ""))
        if self.level_ramp_epochs >= self.epochs:
            raise ValueError(f"--level-ramp-epochs (level_ramp_epochs) must be below --epochs ({self.epochs}) so that "
                             f"training ends at the level; got {self.level_ramp_epochs}")
        return self

    def level_at(self, epoch: int) -> float:
        """The training level of ``epoch`` (0-based) under :attr:`level_ramp_epochs`."""
        ramp = self.level_ramp_epochs
        return self.level if epoch >= ramp else self.level * (epoch + 1) / (ramp + 1)

    @property
    def mode_kind(self) -> Kind:
        """The kind of mode this run's recipe trains in (:data:`RECIPE_MODES`)."""
        return RECIPE_MODES[self.recipe]

    @property
    def trained_under_noise(self) -> bool:
        """ddhr, sddhr and noise: the recipes that train under hardware noise (their step
        scale and, with Adam, weight decay differ by default)."""
        return self.mode_kind not in ("float", "ideal")

    @property
    def trained_on_chip(self) -> bool:
        """ddhr: the recipe that trains through one chip instance (``level``, ``chip_seed``),
        which an evaluation also runs the model on."""
        return self.mode_kind == "instance"

    def step_scale(self) -> float:
        """The weight quantiser's step scale of this run (:attr:`weight_step_scale` or the
        recipe's default)."""
        if self.weight_step_scale is not None:
            return self.weight_step_scale
        return NOISY_STEP_SCALE if self.trained_under_noise else 1.0

    def norm_mode(self) -> str:
        """How batch norm trains in this run (:attr:`batch_norm` or the recipe's default): a
        chip's offset is shared by the batch in ddhr and sddhr, and batch statistics would
        subtract it in training (:mod:`sddhr.nn.norms`)."""
        if self.batch_norm is not None:
            return self.batch_norm
        return "frozen" if self.recipe in FROZEN_NORM_RECIPES else "batch"

    def decay(self) -> float:
        """The weight decay of this run (:attr:`weight_decay` or the default for its recipe and
        optimiser)."""
        if self.weight_decay is not None:
            return self.weight_decay
        return 0.0 if self.trained_under_noise and self.optimizer == "adam" else DEFAULT_WEIGHT_DECAY

    def train_mode(self, table: ColumnTable | None = None, epoch: int | None = None) -> Mode:
        """The mode this run trains in (``table``: the loaded :attr:`table`, see :func:`load_table`;
        ``epoch``: at that epoch's level, see :meth:`level_at`)."""
        kind = self.mode_kind
        if kind == "float":
            return Mode.float()
        if kind == "ideal":
            return Mode.ideal()
        if kind == "instance":
            return Mode.instance(self.level, self.chip_seed, self.instance_impl)
        if kind == "noise":
            return Mode.noise(self.noise_std)
        level = self.level if epoch is None else self.level_at(epoch)
        return Mode.stochastic(level, self.variant, table=table)


def make_config(data: dict | TrainConfig) -> TrainConfig:
    return validated(TrainConfig, data, "training config")


def load_table(cfg: TrainConfig) -> ColumnTable | None:
    """The abstraction table of ``cfg.table`` (None without one), checked against the run's
    hardware spec (same column: rows, ADC) and variation level before anything is trained."""
    if cfg.table is None:
        return None
    table = read_table(cfg.table)
    try:
        check_table_matches(table, cfg.hardware)
    except SpecError as err:
        raise SpecError(f"--table {cfg.table} does not fit this run's hardware (set it with --rows / --adc-bits / "
                        f"--full-scale / --spec-file): {err}") from None
    if table.spec.cell != cfg.hardware.cell:
        warnings.warn(f"--table {cfg.table} was built for another cell (device {table.spec.cell.model_dump()}) "
                      f"than the run's hardware ({cfg.hardware.cell.model_dump()}): training follows the table's "
                      "column statistics, chips are drawn from the run's cell", stacklevel=2)
    if table.level == table.level and table.level != cfg.level:  # not NaN
        raise SpecError(f"--table {cfg.table} was built at level {table.level:g}, the run has level {cfg.level:g} "
                        "(leave --level out to take the table's)")
    return table

def table_sha256(cfg: TrainConfig) -> str | None:
    """The sha256 of the run's table file (None without one): a resumed run must train on
    the same table content, not only the same path."""
    if cfg.table is None:
        return None
    from ._io import reading

    h = hashlib.sha256()
    with reading(Path(cfg.table), "--table"), open(cfg.table, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_table(path: str) -> ColumnTable:
    """``ColumnTable.load`` with every failure a :class:`SpecError` naming ``--table``."""
    from .abstraction import ColumnTable

    try:
        return ColumnTable.load(path)
    except SpecError as err:
        raise SpecError(f"--table: {err}") from None
    except Exception as err:  # noqa: BLE001 - a damaged archive the reader did not name
        raise SpecError(f"--table: {path}: cannot read table file ({type(err).__name__}: {err})") from None


def _read_text(path: Path, what: str) -> str:
    from ._io import reading

    with reading(path, what):
        return path.read_text(encoding="utf-8")


def load_config_file(path: str | Path) -> dict:
    """Read a YAML (.yaml/.yml) or TOML (.toml) or JSON config file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"config file not found: {path}")
    text = _read_text(path, "config file")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as err:  # parse errors of three libraries
        raise SpecError(f"{path}: cannot parse config ({err})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the config must be a mapping")
    return data
