"""sddhr: train neural networks for variation-prone in-memory-computing hardware."""

from .config import HardwareSpec, SpecError, make_spec, preset

__all__ = ["HardwareSpec", "SpecError", "make_spec", "preset"]
__version__ = "0.1.0"
