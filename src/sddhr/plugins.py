"""Plug-ins: modules outside the package that add names to its registries.

A plug-in is an ordinary Python module that, when imported, registers what it defines
through the registries' own decorators: an S-DDHR variant (a backend,
:func:`sddhr.nn.backends.register`), a data set (:func:`sddhr.data.register_dataset`), or
whatever other registry the package offers. This module only finds and imports them;
it knows nothing about what they register.

:func:`load_plugins` imports, once each and in this order:

* every entry point of the group ``sddhr.plugins`` (:data:`ENTRY_POINT_GROUP`) of the
  installed distributions; the entry point's value names the module
  (``my_plugin = my_package.sddhr_plugin`` in ``[project.entry-points."sddhr.plugins"]``);
* every item of the environment variable ``SDDHR_PLUGINS`` (:data:`ENV_VAR`), a
  comma-separated list of importable module names or paths of ``.py`` files.

The command line calls it before it builds its choices; the library calls it when a name
it is asked for is not registered (so a checkpoint of a plug-in's variant or data set also
loads in a worker process), and whenever it lists its names. After the first call it only
re-reads the environment variable. A plug-in that fails to import raises
:class:`PluginError` naming the plug-in, where it was named, and the cause.

Only the standard library is imported here: any registry may call :func:`load_plugins`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ENTRY_POINT_GROUP = "sddhr.plugins"
ENV_VAR = "SDDHR_PLUGINS"


class PluginError(RuntimeError):
    """A plug-in that could not be imported (the message names it and the cause)."""


@dataclass(frozen=True)
class _Plugin:
    """One plug-in to import: ``target`` (a module name, ``module:attribute`` or a .py path)
    and where it was named (for error messages)."""

    target: str
    origin: str


_loaded: dict[str, str] = {}  # target -> the module name it was imported as
_entry_points: list[_Plugin] | None = None  # read once per process (refresh: rescan)
_loading = False


def _scan_entry_points() -> list[_Plugin]:
    out = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep.dist, "name", None) or "an unknown distribution"
        out.append(_Plugin(ep.value.strip(), f"entry point {ep.name!r} of {dist} (group {ENTRY_POINT_GROUP})"))
    return out


def _env_plugins() -> list[_Plugin]:
    text = os.environ.get(ENV_VAR, "")
    return [_Plugin(item.strip(), f"${ENV_VAR}") for item in text.split(",") if item.strip()]


def _import_file(path: Path) -> str:
    """Import the .py file ``path`` as the module named by its stem."""
    name = path.stem
    have = sys.modules.get(name)
    if have is not None:
        if Path(getattr(have, "__file__", "") or "").resolve() == path.resolve():
            return name
        raise ImportError(f"a module named {name!r} is already imported from {getattr(have, '__file__', None)}")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path} (not a Python source file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return name


def _import(target: str) -> str:
    """Import one plug-in; the name of its module."""
    if target.endswith(".py") or os.sep in target or (os.altsep and os.altsep in target):
        path = Path(target).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        return _import_file(path)
    module, _, attr = target.partition(":")
    mod = importlib.import_module(module.strip())
    for part in filter(None, attr.strip().split(".")):
        getattr(mod, part)  # a named attribute must exist (it is not called)
    return mod.__name__


def load_plugins(*, refresh: bool = False) -> list[str]:
    """Import every plug-in not imported yet (entry points of :data:`ENTRY_POINT_GROUP`, then
    the items of ``$SDDHR_PLUGINS``); the names of all plug-in modules imported so far.

    ``refresh``: read the installed distributions' entry points again (they are read once
    per process otherwise). A call made while a plug-in is being imported (the plug-in asked
    for a registry's names) returns at once. Raises :class:`PluginError` for a plug-in that
    fails to import; the others are kept, and the failed one is tried again next call.
    """
    global _entry_points, _loading
    if _loading:
        return list(dict.fromkeys(_loaded.values()))
    _loading = True
    try:
        if _entry_points is None or refresh:
            importlib.invalidate_caches()
            _entry_points = _scan_entry_points()
        for plugin in [*_entry_points, *_env_plugins()]:
            if plugin.target in _loaded:
                continue
            try:
                _loaded[plugin.target] = _import(plugin.target)
            except Exception as err:
                raise PluginError(f"plug-in {plugin.target!r} (from {plugin.origin}) failed to import: "
                                  f"{type(err).__name__}: {err}") from err
    finally:
        _loading = False
    return list(dict.fromkeys(_loaded.values()))


__all__ = ["ENTRY_POINT_GROUP", "ENV_VAR", "PluginError", "load_plugins"]
