"""sddhr: train neural networks for variation-prone in-memory-computing hardware."""

#: the one place the version is written (pyproject.toml reads it from here)
__version__ = "0.1.0"

#: public name -> the module that defines it; imported on first use, so that ``import sddhr``
#: (and ``sddhr --version``) loads neither torch nor pydantic
_LAZY = {"HardwareSpec": "config", "SpecError": "config", "make_spec": "config", "preset": "config"}
#: the hardware-aware training API (docs/API.md)
_LAZY.update(dict.fromkeys(("ChipTable", "HardwareSetupWarning", "HardwareTrainer", "evaluate_chips", "prepare"),
                           "api"))

#: what a cell technology plug-in needs (docs/MODEL.md, "Adding a technology")
_LAZY.update({"CellSpecBase": "cell_specs", "CellTechnology": "cell_technology",
              "register_technology": "cell_technology"})

__all__ = ["CellSpecBase", "CellTechnology", "ChipTable", "HardwareSetupWarning", "HardwareSpec", "HardwareTrainer",
           "SpecError", "__version__", "evaluate_chips", "make_spec", "prepare", "preset", "register_technology"]


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
