"""The README's quick tour runs as written (on tiny generated data).

Each line of the quick-tour ``bash`` block is run in a temporary folder holding what the
tour assumes: ``DATA/mnist/{train,test}.npz`` (random 28 x 28 images, the ``.npz`` layout of
docs/DATA.md; ``SDDHR_DATA_DIR`` points there too) and the repository's sample files the
tour names (``examples/measured.csv``, ``examples/explore_mnist.yaml``). The commands run
in-process through ``sddhr.cli.main`` exactly as written, with only the size caps of
:data:`CAPS` appended (argparse keeps the last value of a repeated flag, so ``--epochs 10
... --epochs 1`` trains one epoch; the table and every network use 64-row columns instead of
256); ``sddhr --version`` runs as the installed script.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sddhr.cli import main

ROOT = Path(__file__).resolve().parents[1]

#: flags appended to each command of the tour to keep the test small
CAPS = {
    "abstraction": ["--samples", "2000", "--rows", "64"],
    "train": ["--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "32", "--rows", "64"],
    "compare": ["--levels", "1", "10", "--instances", "2"],
    "explore": ["--rows", "16", "--adc-bits", "4", "--float-epochs", "1", "--finetune-epochs", "1",
                "--instances", "2"],
}


def readme_block(title: str, lang: str) -> str:
    """The first ``lang`` code block under the README heading ``title``."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    m = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert m, f"no {lang} block under '## {title}'"
    return m.group(1)


def tour_commands() -> list[list[str]]:
    cmds = [shlex.split(line, comments=True) for line in readme_block("Quick tour", "bash").splitlines()]
    return [c for c in cmds if c]


def _write_inputs(tmp: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 96), ("test", 48)):
        (tmp / "DATA" / "mnist").mkdir(parents=True, exist_ok=True)
        np.savez(tmp / "DATA" / "mnist" / f"{split}.npz", x=rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
                 y=rng.integers(0, 10, n).astype(np.int64))
    (tmp / "examples").mkdir()
    for name in tour_sample_files():
        shutil.copy(ROOT / name, tmp / name)


def tour_sample_files() -> list[str]:
    """The repository files the tour's commands name (paths under examples/)."""
    return sorted({arg for c in tour_commands() for arg in c if arg.startswith("examples/")})


def test_quick_tour_runs_as_written(tmp_path, monkeypatch, capsys):
    _write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SDDHR_DATA_DIR", str(tmp_path / "DATA"))
    cmds = tour_commands()
    assert all(c[0] == "sddhr" for c in cmds) and len(cmds) >= 8
    for cmd in cmds:
        argv = cmd[1:] + CAPS.get(cmd[1], [])
        if argv == ["--version"]:
            script = Path(sys.executable).with_name("sddhr")
            out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True).stdout
            assert out.startswith("sddhr ")
            continue
        rc = main(argv)
        assert rc == 0, f"{shlex.join(cmd)} failed:\n{capsys.readouterr().err[-3000:]}"
    # what the tour promises exists
    assert (tmp_path / "t.npz").is_file() and json.loads((tmp_path / "my_spec.json").read_text())["name"] == "fitted"
    sddhr_cfg = json.loads((tmp_path / "runs" / "sddhr" / "config.json").read_text())
    assert sddhr_cfg["table"] == "t.npz" and sddhr_cfg["level"] == 10.0 and sddhr_cfg["data"]["name"] == "mnist"
    doc = json.loads((tmp_path / "runs" / "cmp" / "results.json").read_text())
    assert [m["name"] for m in doc["models"]] == ["conventional", "ddhr", "sddhr"]
    assert (tmp_path / "runs" / "cmp" / "table.md").is_file() and (tmp_path / "runs" / "cmp" / "accuracy.png").is_file()
    assert (tmp_path / "runs" / "explore" / "explore.json").is_file()


def test_readme_python_example_runs():
    code = readme_block("Quick tour", "python")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    from sddhr.nn import get_mode

    assert get_mode(namespace["model"]).kind == "instance"


def test_tour_ships_its_sample_files():
    names = tour_sample_files()
    assert "examples/measured.csv" in names and "examples/explore_mnist.yaml" in names
    assert all((ROOT / n).is_file() for n in names)


def test_sample_measurements_fit_to_the_device_they_were_drawn_from():
    """examples/measured.csv: 200 lognormal resistances per state, medians P 4200, AP 10300,
    T 1450 ohm, log-sd 0.045 / 0.055 / 0.06 (docs/getting-started.md); the fit finds them."""
    from sddhr.device import fit_device

    dev = fit_device(ROOT / "examples" / "measured.csv").device
    assert dev.distribution == "lognormal"
    assert dev.r_p_ohm == pytest.approx(4200, rel=0.01) and dev.r_t_ohm == pytest.approx(1450, rel=0.01)
    assert dev.r_p_ohm * (1 + dev.tmr) == pytest.approx(10300, rel=0.02)
    assert (dev.sigma_p_rel, dev.sigma_ap_rel, dev.sigma_t_rel) == pytest.approx((0.045, 0.055, 0.06), rel=0.15)


def test_tour_trains_sddhr_with_the_default_variant():
    cmd = next(c for c in tour_commands() if c[1] == "train" and c[c.index("--recipe") + 1] == "sddhr")
    assert "--variant" not in cmd


@pytest.mark.parametrize("name", ["sddhr", "ddhr"])
def test_tour_fine_tunes_give_no_data_or_network_flags(name):
    """The regression the tour once hit: a fine-tune without --data / --arch must inherit them."""
    cmd = next(c for c in tour_commands() if c[1] == "train" and c[c.index("--recipe") + 1] == name)
    assert "--init-from" in cmd and "--data" not in cmd and "--arch" not in cmd
