"""PyTorch layers that compute through the IMC hardware model, and whole-model helpers."""

from .backends import Backend, make_backend, register
from .column_stats import check_table_matches, get_table
from .convert import (
    calibrate,
    convert,
    get_mode,
    imc_layers,
    recalibrated_norms,
    revert,
    set_clip_gradient,
    set_mode,
    set_spec,
    set_weight_step_scale,
    using_mode,
)
from .layers import IMCConv2d, IMCLayer, IMCLinear
from .mode import IMPLS, KINDS, VARIANTS, Mode, variants
from .quant import ActQuantizer, WeightQuantizer, round_ste

__all__ = [
    "IMPLS", "KINDS", "VARIANTS", "ActQuantizer", "Backend", "IMCConv2d", "IMCLayer", "IMCLinear", "Mode",
    "WeightQuantizer", "calibrate", "check_table_matches", "convert", "get_mode", "get_table", "imc_layers",
    "make_backend", "recalibrated_norms", "register", "revert", "round_ste", "set_mode", "set_spec",
    "set_clip_gradient", "set_weight_step_scale", "using_mode", "variants",
]
