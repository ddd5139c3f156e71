"""`sddhr train --model FILE.py:factory` trains a user's network; `--batch-norm` reaches the run."""

import json

import pytest
import torch

from sddhr.cli import main
from sddhr.models import build_model

FACTORY = '''
from torch import nn

def net(in_shape, classes):
    c, h, w = in_shape
    return nn.Sequential(nn.Conv2d(c, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * h * w, classes))
'''


def test_train_a_users_model_then_fine_tune_and_evaluate_it(tmp_path):
    src = tmp_path / "mynet.py"
    src.write_text(FACTORY)
    model = f"{src}:net"
    base, ft = tmp_path / "base", tmp_path / "ft"
    tiny = ["--data", "digits", "--max-steps-per-epoch", "4", "--rows", "16", "--adc-bits", "5"]
    argv = ["train", "--recipe", "conventional", "--model", model, *tiny, "--epochs", "1", "--out", str(base)]
    assert main(argv) == 0
    cfg = json.loads((base / "config.json").read_text())
    assert cfg["arch"] == model
    # the checkpoint holds the user's network, converted: its IMC layers and weights come back
    ck = torch.load(base / "checkpoint.pt", weights_only=False)
    ref = build_model(model, (1, 8, 8), 10)
    assert set(ref.state_dict()) <= set(ck["model"])
    assert main(["train", "--recipe", "sddhr", "--init-from", str(base), "--level", "4", "--variant", "one_chip",
                 "--batch-norm", "frozen", "--epochs", "1", "--max-steps-per-epoch", "4", "--out", str(ft)]) == 0
    cfg = json.loads((ft / "config.json").read_text())
    assert cfg["arch"] == model and cfg["batch_norm"] == "frozen" and cfg["variant"] == "one_chip"
    assert main(["evaluate", str(ft), "--levels", "4", "--instances", "2", "--test-subset", "50",
                 "--out", str(tmp_path / "ev"), "--executor", "serial"]) == 0


@pytest.mark.parametrize("argv,msg", [
    (["--arch", "mlp", "--model", "a.b:c"], "give one"),
    (["--model", "no_colon_here"], "unknown architecture"),
    (["--model", "x.py:net"], "x.py"),
    (["--batch-norm", "sometimes"], "invalid choice"),
])
def test_bad_model_and_norm_flags_are_refused(tmp_path, capsys, argv, msg):
    with pytest.raises(SystemExit) as err:
        code = main(["train", "--recipe", "conventional", "--data", "digits", *argv, "--out", str(tmp_path / "o")])
        raise SystemExit(code)
    assert err.value.code == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


def test_progress_lines_give_each_levels_time_and_the_total(tmp_path, capsys):
    """Without a terminal, one line per finished level: the seconds since the previous line
    and since the start; the former add up to the latter (each rounded to a second)."""
    import re

    run = tmp_path / "run"
    assert main(["train", "--recipe", "conventional", "--arch", "mlp", "--data", "digits", "--epochs", "1",
                 "--max-steps-per-epoch", "2", "--rows", "16", "--adc-bits", "5", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--levels", "2", "4", "6", "--instances", "2", "--test-subset", "40",
                 "--executor", "serial", "--out", str(tmp_path / "ev")]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "mean accuracy" in ln]
    assert len(lines) == 3
    times = [tuple(map(int, re.search(r"\((\d+) s since the last line, (\d+) s in all\)", ln).groups()))
             for ln in lines]
    assert [t[1] for t in times] == sorted(t[1] for t in times)
    assert abs(sum(t[0] for t in times) - times[-1][1]) <= len(times)
