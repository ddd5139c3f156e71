"""sddhr: train neural networks for variation-prone in-memory-computing hardware."""

from importlib.metadata import PackageNotFoundError, version

from .config import HardwareSpec, SpecError, make_spec, preset

try:
    __version__ = version("sddhr")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["HardwareSpec", "SpecError", "__version__", "make_spec", "preset"]
