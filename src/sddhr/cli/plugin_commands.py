"""Sub-commands added by plug-ins (:mod:`sddhr.plugins`).

A plug-in module registers a command with :func:`register_command`; the ``sddhr`` parser
adds every registered command after the built-in ones. The decorated function runs the
command: it gets the parsed arguments and returns the exit status. Errors it raises are
reported like the built-in commands' (a :class:`~sddhr.config.SpecError` as one line, exit
status 2).

    from sddhr.cli import register_command

    def _flags(p):
        p.add_argument("--rows", type=int, default=256)

    @register_command("columns", help="columns a layer needs", add_arguments=_flags)
    def columns(args) -> int:
        print(...)
        return 0

Only the standard library is imported here, so registering a command loads nothing heavy.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass

#: names of the built-in sub-commands (and their aliases): a plug-in may not take them
BUILT_IN_COMMANDS = ("abstraction", "fit-device", "fit-column", "train", "evaluate", "compare", "report", "demo",
                     "explore", "download")
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")

Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class PluginCommand:
    """One registered sub-command: its name, help line, flag builder and run function."""

    name: str
    help: str
    run: Run
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


_COMMANDS: dict[str, PluginCommand] = {}


def register_command(name: str, *, help: str,
                     add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> Callable[[Run], Run]:
    """Decorator: the function becomes ``sddhr NAME`` (``add_arguments(parser)`` adds its
    flags). ``name``: lower-case letters, digits and '-', not a built-in command's name."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"command name must be lower-case letters, digits and '-' (starting with a letter), "
                         f"got {name!r}")
    if name in BUILT_IN_COMMANDS:
        raise ValueError(f"command name {name!r} is a built-in command of sddhr ({', '.join(BUILT_IN_COMMANDS)})")

    def deco(fn: Run) -> Run:
        cmd = PluginCommand(name, help, fn, add_arguments)
        have = _COMMANDS.get(name)
        if have is not None and have.run is not fn:
            raise ValueError(f"command {name!r} is already registered (by {have.run.__module__})")
        _COMMANDS[name] = cmd
        return fn

    return deco


def unregister_command(name: str) -> None:
    """Remove a plug-in's command (tests)."""
    _COMMANDS.pop(name, None)


def plugin_commands() -> list[PluginCommand]:
    """The registered commands, in registration order."""
    return list(_COMMANDS.values())


def add_plugin_commands(sub: argparse._SubParsersAction) -> None:
    """Add every registered command to the ``sddhr`` sub-parsers ``sub``."""
    for cmd in _COMMANDS.values():
        if cmd.name in sub.choices:
            raise ValueError(f"command {cmd.name!r} of {cmd.run.__module__} is a built-in command of sddhr")
        p = sub.add_parser(cmd.name, help=cmd.help)
        if cmd.add_arguments is not None:
            cmd.add_arguments(p)
        p.set_defaults(func=cmd.run)


__all__ = ["BUILT_IN_COMMANDS", "PluginCommand", "add_plugin_commands", "plugin_commands", "register_command",
           "unregister_command"]
