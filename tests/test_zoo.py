"""Pretrained models by name (``zoo:<name>``): the file's SHA-256 checked against the manifest
on every load, the shipped files themselves, and a zoo name accepted where a run folder is."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import sddhr.zoo as zoo
from sddhr.cli import main
from sddhr.config import SpecError
from sddhr.train import load_model
from sddhr.zoo.ship import export

TINY = ["--data", "digits", "--train-subset", "128", "--test-subset", "64", "--max-steps-per-epoch", "2",
        "--batch-size", "32", "--rows", "64", "--adc-bits", "6", "--arch", "mlp", "--width", "8"]


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def own_zoo(tmp_path, monkeypatch):
    """A zoo folder of one tiny trained model, in place of the shipped one."""
    run = tmp_path / "run"
    assert main(["train", "--recipe", "conventional", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    zdir = tmp_path / "zoo"
    zdir.mkdir()
    digest = export(run, zdir / "tiny.pt")
    manifest = {"models": [{"name": "tiny-digits", "file": "tiny.pt", "sha256": digest, "accuracy": {},
                            "command": "test"}]}
    (zdir / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(zoo, "ZOO_DIR", zdir)
    monkeypatch.setattr(zoo, "MANIFEST", zdir / "manifest.json")
    zoo._manifest.cache_clear()
    yield run, zdir
    zoo._manifest.cache_clear()


def test_a_zoo_name_loads_the_exported_network(own_zoo):
    run, zdir = own_zoo
    assert _sha(zdir / "tiny.pt") == zoo.entry("zoo:tiny-digits")["sha256"]
    shipped, cfg, ck = load_model("zoo:tiny-digits")
    trained, _, _ = load_model(run)
    a, b = shipped.state_dict(), trained.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)
    assert cfg.data.data_dir is None  # the user's data folder, never the trainer's
    assert "optimizer" not in ck and "scheduler" not in ck


def test_compare_takes_a_zoo_name(own_zoo, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "zoo:tiny-digits", "--levels", "4", "--instances", "2", "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["models"]) == 1


def test_a_damaged_file_is_refused_naming_the_hash(own_zoo):
    _, zdir = own_zoo
    data = bytearray((zdir / "tiny.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (zdir / "tiny.pt").write_bytes(bytes(data))
    with pytest.raises(SpecError, match="SHA-256"):
        load_model("zoo:tiny-digits")


def test_an_unknown_name_lists_the_shipped_ones(own_zoo):
    with pytest.raises(SpecError, match="zoo:tiny-digits"):
        load_model("zoo:nope")


def test_every_shipped_model_matches_its_manifest_and_loads():
    doc = json.loads((zoo.ZOO_DIR / "manifest.json").read_text())
    for m in doc["models"]:
        path = zoo.ZOO_DIR / m["file"]
        assert _sha(path) == m["sha256"], m["name"]
        assert m["command"] and m["accuracy"]
        model, cfg, _ = load_model(zoo.PREFIX + m["name"])
        assert cfg.data.data_dir is None
        assert sum(p.numel() for p in model.parameters()) > 0
