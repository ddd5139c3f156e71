"""A sub-command from outside the package (``example_command``): ``sddhr columns`` appears in
the command's help and runs once ``SDDHR_PLUGINS`` names it, and its answer is the closed form
ceil(K / R) * N * B; its bad input is one line with exit status 2, like a built-in command's;
the registry refuses a built-in's name, a malformed name and a second function under one name;
the list of built-in names is the parser's own."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sddhr.cli import build_parser
from sddhr.cli.plugin_commands import BUILT_IN_COMMANDS, plugin_commands, register_command, unregister_command

HERE = Path(__file__).resolve().parent


def _sddhr(*args: str, plugins: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    env.pop("SDDHR_PLUGINS", None)
    if plugins:
        env["SDDHR_PLUGINS"] = "example_command"
    return subprocess.run([sys.executable, "-m", "sddhr.cli", *args], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("k, n, rows, bits", [(784, 256, 256, 4), (700, 24, 128, 4), (9, 10, 256, 1), (513, 3, 256, 8)])
def test_the_plugin_command_runs_and_answers_the_closed_form(k, n, rows, bits):
    out = _sddhr("columns", "--in-features", str(k), "--out-features", str(n), "--rows", str(rows),
                 "--w-bits", str(bits))
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == math.ceil(k / rows) * n * bits


def test_the_plugin_command_is_listed_and_its_errors_are_one_line():
    assert "columns" in _sddhr("--help").stdout
    assert "columns" not in _sddhr("--help", plugins=False).stdout
    bad = _sddhr("columns", "--in-features", "0", "--out-features", "4")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "sddhr columns: error: --in-features must be >= 1, got 0"
    missing = _sddhr("columns", "--in-features", "4", "--out-features", "4", plugins=False)
    assert missing.returncode == 2 and "choose from" in missing.stderr and "columns," not in missing.stderr


def test_the_registry_refuses_clashes_and_bad_names():
    def run(args):
        return 0

    for name in ("train", "compare", "fit-column"):
        with pytest.raises(ValueError, match="built-in"):
            register_command(name, help="x")
    for name in ("Columns", "two words", "", "-x"):
        with pytest.raises(ValueError, match="lower-case"):
            register_command(name, help="x")
    try:
        register_command("tmp-cmd", help="x")(run)
        register_command("tmp-cmd", help="x")(run)  # the same function again: no change
        assert [c.name for c in plugin_commands()].count("tmp-cmd") == 1
        with pytest.raises(ValueError, match="already registered"):
            register_command("tmp-cmd", help="x")(lambda args: 1)
        assert "tmp-cmd" in build_parser().format_help()
    finally:
        unregister_command("tmp-cmd")


def test_the_built_in_names_are_the_parsers():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) - {c.name for c in plugin_commands()} == set(BUILT_IN_COMMANDS)
