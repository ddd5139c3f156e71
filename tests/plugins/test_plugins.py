"""Plug-ins from outside the package: ``example_plugin`` (this folder) registers an S-DDHR
variant and a data set; they reach the Python API, the training config and ``sddhr train``
(a subprocess with ``SDDHR_PLUGINS``); an installed distribution's entry point is found; a
plug-in that fails to import is named in the error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sddhr.plugins as plugins
from sddhr.config import SpecError
from sddhr.data import registry as data_registry
from sddhr.nn import IMCLinear, Mode, calibrate
from sddhr.nn import mode as nn_mode
from sddhr.nn.backends import base as backend_registry
from tests import helpers

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture(scope="module", autouse=True)
def isolated_registries():
    """Whatever this module registers is gone after it (other tests see the built-ins only)."""
    saved = (dict(backend_registry._REGISTRY), dict(nn_mode._registered_variants), dict(data_registry._REGISTRY),
             dict(data_registry.IMAGE_SHAPES), dict(data_registry.AUGMENTATION), dict(plugins._loaded),
             plugins._entry_points, list(sys.path), os.environ.get(plugins.ENV_VAR))
    modules = set(sys.modules)
    sys.path.insert(0, str(HERE))
    yield
    for reg, old in zip((backend_registry._REGISTRY, nn_mode._registered_variants, data_registry._REGISTRY,
                         data_registry.IMAGE_SHAPES, data_registry.AUGMENTATION, plugins._loaded), saved):
        reg.clear()
        reg.update(old)  # type: ignore[arg-type]
    plugins._entry_points = saved[6]
    sys.path[:] = saved[7]
    if saved[8] is None:
        os.environ.pop(plugins.ENV_VAR, None)
    else:
        os.environ[plugins.ENV_VAR] = saved[8]
    for name in set(sys.modules) - modules:
        if name in ("example_plugin", "ep_plugin_module"):
            del sys.modules[name]


@pytest.fixture
def example(monkeypatch):
    """The example plug-in, loaded the way a user names it: ``SDDHR_PLUGINS=example_plugin``."""
    monkeypatch.setenv(plugins.ENV_VAR, "example_plugin")
    assert "example_plugin" in plugins.load_plugins()
    import example_plugin

    return example_plugin


# ------------------------------------------------------------------ the API, in this process


def test_names_are_unknown_until_the_plugin_is_loaded():
    """In a fresh process (nothing loaded yet), without SDDHR_PLUGINS the variant is refused
    with an error naming it; with it, the same call succeeds."""
    code = ("from sddhr.nn.mode import Mode\n"
            "try:\n    Mode.stochastic(2.0, 'scaled'); print('accepted')\n"
            "except Exception as e:\n    print(type(e).__name__, e)")
    bare, loaded = helpers.without_and_with_plugin("example_plugin", code)
    assert bare.stdout.startswith("SpecError") and "scaled" in bare.stdout, bare.stdout + bare.stderr
    assert loaded.stdout.strip() == "accepted", loaded.stdout + loaded.stderr


def test_the_registered_names_appear_in_every_list(example):
    from sddhr.data import AUGMENTATION, DATASETS, IMAGE_SHAPES, datasets
    from sddhr.nn.mode import VARIANTS, variants

    assert variants()[:len(VARIANTS)] == VARIANTS and "scaled" in variants()
    assert datasets()[:len(DATASETS)] == DATASETS and "blobs" in datasets()
    assert IMAGE_SHAPES["blobs"] == (4, 4, 1) and AUGMENTATION["blobs"] == (0, False)
    assert DATASETS == ("digits", "mnist", "cifar10", "svhn")  # the built-ins, as before


def test_a_plugin_data_set_loads_through_the_library(example):
    from sddhr.data import load_dataset

    train = load_dataset("blobs", "train")
    test = load_dataset("blobs", "test", stats_from=train)
    assert (len(train), len(test)) == (96, 48)
    assert train.in_shape == (1, 4, 4) and train.classes == 3
    # normalisation: the training split's exact statistics (brute force over its pixels)
    pixels = train.x.double() / 255.0
    assert np.isclose(train.mean[0], float(pixels.mean())) and np.isclose(train.std[0], float(pixels.std(False)))
    # each class is bright in its own quarter of the image
    for x, y in zip(train.x[:, 0], train.y):
        r, q = divmod(int(y), 2)
        assert int(x[2 * r:2 * r + 2, 2 * q:2 * q + 2].min()) >= 200 and int(x.float().mean()) < 200


def test_a_plugin_variant_is_accepted_by_the_config_and_the_trainer(example):
    from sddhr.api import HardwareTrainer, prepare
    from sddhr.models import mlp
    from sddhr.recipes import make_config

    cfg = make_config({"recipe": "sddhr", "variant": "scaled", "data": {"name": "blobs"}})
    assert cfg.train_mode().variant == "scaled" and cfg.data.name == "blobs"
    assert HardwareTrainer(prepare(mlp((1, 4, 4), 3, (8,))), level=2, variant="scaled").variant == "scaled"
    with pytest.raises(SpecError, match=r"variant: .*faithful.*scaled"):  # the field and the allowed values
        make_config({"variant": "scaled_typo"})
    with pytest.raises(SpecError, match=r"data\.name: .*digits.*blobs"):
        make_config({"data": {"name": "blob"}})


def _layer_outputs(variant_or_mode, x, seed=7):
    """The output of one IMC Linear (3-bit ADC: every conversion is digitised, in the ideal
    mode too) in a mode, with torch's generator seeded."""
    torch.manual_seed(0)
    layer = IMCLinear(16, 6, spec=helpers.spec_of(rows=16, adc_bits=3))
    calibrate(layer, [x])
    layer.mode = variant_or_mode if isinstance(variant_or_mode, Mode) else Mode.stochastic(4.0, variant_or_mode)
    torch.manual_seed(seed)
    with torch.no_grad():
        return layer(x)


def test_the_scaled_variant_interpolates_between_ideal_and_faithful(example):
    """factor 0: the ideal mode exactly; factor 1: the faithful variant exactly (same seed);
    factor 1/2 (the registered ``scaled``): half the faithful variant's error."""
    example.register_scaled("scaled_zero", 0.0)
    example.register_scaled("scaled_one", 1.0)
    x = torch.rand(32, 16, generator=torch.Generator().manual_seed(3))
    ideal, faithful = _layer_outputs(Mode.ideal(), x), _layer_outputs("faithful", x)
    assert not torch.equal(ideal, faithful)  # the faithful variant has an error to scale
    assert torch.equal(_layer_outputs("scaled_zero", x), ideal)
    assert torch.equal(_layer_outputs("scaled_one", x), faithful)
    half = _layer_outputs("scaled", x)
    torch.testing.assert_close(half - ideal, 0.5 * (faithful - ideal), rtol=0, atol=1e-4)


# ------------------------------------------------------------------ the command line, in a subprocess


def test_sddhr_train_runs_a_plugin_variant_on_a_plugin_data_set(tmp_path):
    env = dict(os.environ)
    env[plugins.ENV_VAR] = "example_plugin"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), str(ROOT), env.get("PYTHONPATH")) if p)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "sddhr.cli", "train", "--recipe", "sddhr", "--variant", "scaled", "--data", "blobs",
           "--arch", "mlp", "--width", "2", "--level", "2", "--epochs", "1", "--max-steps-per-epoch", "2",
           "--batch-size", "32", "--rows", "16", "--threads", "1", "--out", str(run)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["variant"], cfg["data"]["name"]) == ("scaled", "blobs")
    assert "final test accuracy" in done.stdout


# ------------------------------------------------------------------ entry points and failures


def test_an_installed_distributions_entry_point_is_loaded(tmp_path, monkeypatch):
    """A distribution installed into a folder on the path (its .dist-info names an entry point
    of the group sddhr.plugins) is found and its module imported."""
    dist = tmp_path / "sddhr_example_dist-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sddhr-example-dist\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\nexample = ep_plugin_module\n")
    (tmp_path / "ep_plugin_module.py").write_text(
        "from sddhr.data import register_dataset\n"
        "import numpy as np\n\n"
        "@register_dataset('ep_zeros', shape=(2, 2, 1), classes=2)\n"
        "def load(split, data_dir):\n"
        "    return np.zeros((4, 2, 2, 1), np.uint8), np.array([0, 1, 0, 1]), 'generated'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    assert "ep_plugin_module" in plugins.load_plugins(refresh=True)
    from sddhr.data import datasets, load_arrays

    assert "ep_zeros" in datasets()
    x, y = load_arrays("ep_zeros", "test")
    assert x.shape == (4, 2, 2, 1) and y.tolist() == [0, 1, 0, 1]
    assert plugins.load_plugins().count("ep_plugin_module") == 1  # once


def test_a_plugin_that_fails_to_import_is_named(monkeypatch, capsys):
    from sddhr.cli import main

    monkeypatch.setenv(plugins.ENV_VAR, "broken_plugin")
    with pytest.raises(plugins.PluginError, match=r"broken_plugin.*SDDHR_PLUGINS.*RuntimeError: broken on purpose"):
        plugins.load_plugins()
    assert main(["train", "--out", "never"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken_plugin" in err and "broken on purpose" in err
    monkeypatch.setenv(plugins.ENV_VAR, "no_such_plugin_module")
    with pytest.raises(plugins.PluginError, match=r"no_such_plugin_module.*ModuleNotFoundError"):
        plugins.load_plugins()


def test_a_plugin_file_path_is_imported(tmp_path, monkeypatch):
    path = tmp_path / "path_plugin_module.py"
    path.write_text("LOADED = True\n")
    monkeypatch.setenv(plugins.ENV_VAR, str(path))
    try:
        assert "path_plugin_module" in plugins.load_plugins()
        assert sys.modules["path_plugin_module"].LOADED
    finally:
        sys.modules.pop("path_plugin_module", None)
