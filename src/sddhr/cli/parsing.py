"""The argument parser's building blocks: "did you mean" for a mistyped command or choice,
deprecated flag aliases, ``--threads``, "(default: ...)" in every option's help, and the
enumerations the flags offer (:class:`Choices`)."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

# Only the standard library is imported at module level: the library (pydantic, numpy, torch)
# is imported where it is used, so that ``sddhr --version`` answers before any of it loads.


class Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a mistyped sub-command or choice (difflib)."""

    def _check_value(self, action: argparse.Action, value: object) -> None:
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

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: {option_string} is deprecated and will be removed; use {self.new} (same meaning)",
              file=sys.stderr, flush=True)
        setattr(namespace, self.dest, values)


def deprecated_alias(p: argparse.ArgumentParser, old: str, new: str, **kwargs: Any) -> None:
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


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_threads, default=DEFAULT_THREADS, metavar="N",
                   help="torch threads for the computation; more than 1 pays only on idle cores (README, "
                        "\"Threads\")")


def _fmt_default(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_fmt_default(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def config_defaults(model: type[BaseModel], flags: dict[str, str]) -> dict[str, object]:
    """flag dest -> the default of its config path in ``model`` (the value a run gets
    without the flag and without a config file)."""
    out: dict[str, object] = {}
    for flag, path in flags.items():
        node: object = model()
        for key in path.split("."):
            node = getattr(node, key, None)
            if node is None:
                break
        if node is not None:
            out[flag] = node.name if hasattr(node, "model_dump") and hasattr(node, "name") else node
    return out


def with_defaults(p: argparse.ArgumentParser, defaults: dict[str, object] | None = None) -> None:
    """Append "(default: ...)" to each option's help that does not say its default already:
    the argparse default, else the config's (``defaults``, from :func:`config_defaults`),
    else none (the option is off unless given)."""
    defaults = defaults or {}
    for a in p._actions:
        if not a.option_strings or a.help in (None, argparse.SUPPRESS) or a.required or a.nargs == 0:
            continue
        if "default" in a.help:
            continue
        value = a.default if a.default not in (None, argparse.SUPPRESS) else defaults.get(a.dest)
        a.help += f" (default: {'none' if value is None else _fmt_default(value)})"


class Choices:
    """The enumerations the flags offer, each from its one definition in the library; the
    registered names (data sets, S-DDHR variants) include the plug-ins' (loaded first)."""

    def __init__(self) -> None:
        from ..abstraction import METHODS
        from ..data import REMOTE_FILES, datasets
        from ..energy import ENERGY_PRESETS
        from ..models import ARCHS
        from ..nn import IMPLS, variants
        from ..plugins import load_plugins
        from ..train import OPTIMIZERS, RECIPES

        load_plugins()
        self.METHODS, self.DATASETS, self.DOWNLOADS, self.ARCHS = METHODS, datasets(), tuple(REMOTE_FILES), ARCHS
        self.IMPLS, self.VARIANTS, self.OPTIMIZERS, self.RECIPES = IMPLS, variants(), OPTIMIZERS, RECIPES
        self.ENERGY_PRESETS = tuple(ENERGY_PRESETS)
