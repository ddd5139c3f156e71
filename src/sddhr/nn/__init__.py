"""PyTorch layers that compute through the IMC hardware model, and whole-model helpers."""

from .convert import calibrate, convert, get_mode, imc_layers, revert, set_mode, set_spec, using_mode
from .layers import IMCConv2d, IMCLayer, IMCLinear, Mode
from .quant import ActQuantizer, WeightQuantizer, round_ste

__all__ = [
    "ActQuantizer", "IMCConv2d", "IMCLayer", "IMCLinear", "Mode", "WeightQuantizer", "calibrate", "convert",
    "get_mode", "imc_layers", "revert", "round_ste", "set_mode", "set_spec", "using_mode",
]
