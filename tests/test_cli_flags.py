"""Command-line naming: version without torch, deprecated aliases, "did you mean",
defaults in every help text, --threads."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib.metadata import version

import pytest
import torch

from sddhr import cli
from sddhr.cli import TRAIN_FLAGS, build_parser, config_from_args, main


def _subparsers(parser):
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_answers_without_importing_torch_numpy_or_pydantic(flag):
    code = (f"import sys; from sddhr.cli import main; rc = main([{flag!r}]); "
            "print(rc, 'torch' in sys.modules, 'numpy' in sys.modules, 'pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [f"sddhr {version('sddhr')}", "0 False False False"]


def test_version_script():
    script = __import__("pathlib").Path(sys.executable).with_name("sddhr")
    out = subprocess.run([str(script), "-V"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"sddhr {version('sddhr')}"


@pytest.mark.parametrize("argv, old, new, dest, value", [
    (["train", "--max-steps", "3", "--out", "x"], "--max-steps", "--max-steps-per-epoch", "max_steps_per_epoch", 3),
    (["train", "--instance-impl", "fast", "--out", "x"], "--instance-impl", "--impl", "impl", "fast"),
    (["download", "mnist", "--root", "D"], "--root", "--data-dir", "data_dir", "D"),
])
def test_deprecated_alias_works_and_says_so(argv, old, new, dest, value, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err
    assert f"{old} is deprecated" in err and f"use {new}" in err
    # the new spelling gives the same value and no note
    args = build_parser().parse_args([new if a == old else a for a in argv])
    assert getattr(args, dest) == value and "deprecated" not in capsys.readouterr().err


@pytest.mark.parametrize("flag, config_key, value", [("--max-steps", "max_steps_per_epoch", 4),
                                                      ("--instance-impl", "instance_impl", "fast")])
def test_deprecated_train_flags_reach_their_config_key(flag, config_key, value):
    from sddhr.recipes import make_config

    args = build_parser().parse_args(["train", flag, str(value), "--out", "x"])
    assert getattr(make_config(config_from_args(args, TRAIN_FLAGS)), config_key) == value


def test_download_without_a_folder_names_the_flag(monkeypatch, capsys):
    monkeypatch.delenv("SDDHR_DATA_DIR", raising=False)
    assert main(["download", "mnist"]) == 2
    assert "--data-dir" in capsys.readouterr().err


@pytest.mark.parametrize("argv, hint", [(["trian"], "did you mean 'train'?"),
                                        (["evalute", "x"], "did you mean 'evaluate'?"),
                                        (["train", "--arch", "resnt20", "--out", "x"], "did you mean 'resnet20'?")])
def test_mistyped_command_or_choice_gets_a_suggestion(argv, hint, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and hint in capsys.readouterr().err


def test_unrelated_word_gets_no_suggestion(capsys):
    with pytest.raises(SystemExit):
        main(["xyzzy"])
    err = capsys.readouterr().err
    assert "invalid command 'xyzzy'" in err and "did you mean" not in err


@pytest.mark.parametrize("yaml, message", [
    ("max_steps: 2\n", "unknown key max_steps (did you mean max_steps_per_epoch?)"),
    ("data: {nmae: digits}\n", "unknown key data.nmae (did you mean data.name?)"),
    ("epohcs: 1\nrecipe: float\n", "unknown key epohcs (did you mean epochs?)"),
])
def test_mistyped_config_key_gets_a_suggestion(tmp_path, capsys, yaml, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(cfg) in err
    assert not (tmp_path / "run").exists()


def test_suggested_keys_are_valid_config_keys():
    from sddhr.recipes import TrainConfig

    cfg = TrainConfig.model_validate({"max_steps_per_epoch": 2, "data": {"name": "digits"}, "epochs": 1})
    assert cfg.max_steps_per_epoch == 2 and cfg.epochs == 1
    assert cli.unknown_keys({"max_steps_per_epoch": 2, "data": {"name": "digits"}}, TrainConfig) == []


def test_every_option_help_states_its_default():
    for name, sub in _subparsers(build_parser()).items():
        for a in sub._actions:
            if not a.option_strings or a.help == argparse.SUPPRESS or a.required or a.nargs == 0:
                continue
            assert "default" in a.help, f"sddhr {name} {a.option_strings[0]}: no default in {a.help!r}"


def test_train_help_defaults_are_what_a_run_gets():
    """The number each train option's help states is the value the config takes without it."""
    from sddhr.recipes import make_config

    cfg = make_config({})
    train = _subparsers(build_parser())["train"]
    checked = 0
    for a in train._actions:
        m = re.search(r"\(default: ([-+0-9.e]+)\)", a.help or "")
        if m and a.dest in TRAIN_FLAGS:
            node = cfg
            for key in TRAIN_FLAGS[a.dest].split("."):
                node = getattr(node, key)
            assert float(m.group(1)) == pytest.approx(float(node)), a.dest
            checked += 1
    assert checked >= 8


@pytest.mark.parametrize("value", ["0", "-1", "two", str(10**6)])
def test_threads_out_of_range_names_flag_and_range(value, capsys):
    with pytest.raises(SystemExit):
        main(["abstraction", "--threads", value])
    err = capsys.readouterr().err
    assert "--threads" in err and "from 1 to" in err


def test_threads_apply_during_the_command_and_are_restored(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "_cmd_abstraction", lambda args: seen.append(torch.get_num_threads()) or 0)
    before = torch.get_num_threads()
    assert main(["abstraction"]) == 0
    assert main(["abstraction", "--threads", "1"]) == 0
    assert seen == [cli.DEFAULT_THREADS, 1] and torch.get_num_threads() == before
