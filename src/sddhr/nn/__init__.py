"""PyTorch layers that compute through the IMC hardware model, and whole-model helpers."""

from .column_stats import check_table_matches, get_table
from .convert import calibrate, convert, get_mode, imc_layers, revert, set_mode, set_spec, using_mode
from .layers import IMPLS, KINDS, VARIANTS, IMCConv2d, IMCLayer, IMCLinear, Mode
from .quant import ActQuantizer, WeightQuantizer, round_ste

__all__ = [
    "IMPLS", "KINDS", "VARIANTS", "ActQuantizer", "IMCConv2d", "IMCLayer", "IMCLinear", "Mode", "WeightQuantizer",
    "calibrate", "check_table_matches", "convert", "get_mode", "get_table", "imc_layers", "revert", "round_ste",
    "set_mode", "set_spec", "using_mode",
]
