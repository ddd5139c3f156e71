"""A model given as an import path (``package.module:factory`` or ``file.py:factory``)."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from sddhr.config import SpecError, preset
from sddhr.models import build_model, check_arch, mlp, resolve_model
from sddhr.nn import IMCLayer, imc_layers
from sddhr.nn.convert import SignedIMCLinear

FACTORY = '''
from torch import nn

CALLS = []


def make(in_shape, classes, width=8):
    CALLS.append((in_shape, classes, width))
    c, h, w = in_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.LayerNorm(width), nn.Linear(width, classes))


class Zoo:
    @staticmethod
    def tiny(in_shape, classes):
        return make(in_shape, classes, 4)


def not_a_model(in_shape, classes):
    return "model"


def no_args():
    return nn.Linear(1, 1)


NUMBER = 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(FACTORY))
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.invalidate_caches()
    return tmp_path


def test_import_path_round_trip(user_module):
    import userpkg.nets

    assert resolve_model("userpkg.nets:make") is userpkg.nets.make
    assert resolve_model("userpkg.nets:Zoo.tiny") is userpkg.nets.Zoo.tiny
    model = build_model("userpkg.nets:make", (1, 4, 4), 3, spec=preset("mram-22nm"), width=6)
    assert userpkg.nets.CALLS[-1] == ((1, 4, 4), 3, 6)  # called as factory(in_shape, classes, width=...)
    assert [n for n, _ in imc_layers(model)] == ["3"]  # the first Linear stays digital
    assert isinstance(model[3], SignedIMCLinear)  # it follows a LayerNorm: signed inputs
    assert model(torch.randn(2, 1, 4, 4)).shape == (2, 3)
    assert not any(isinstance(m, IMCLayer) for m in build_model("userpkg.nets:make", (1, 4, 4), 3).modules())


def test_file_path_form(user_module):
    path = user_module / "userpkg" / "nets.py"
    model = build_model(f"{path}:Zoo.tiny", (1, 2, 2), 5, spec=preset("mram-22nm"))
    assert model[1].out_features == 4 and model(torch.randn(3, 1, 2, 2)).shape == (3, 5)


def test_builtin_names_resolve_to_the_reference_builders():
    assert resolve_model("mlp") is mlp
    assert check_arch("resnet20") == "resnet20"


@pytest.mark.parametrize(("name", "message"), [
    ("transformer", "unknown architecture 'transformer'; valid: mlp, cnn, vgg, resnet20, or an import path"),
    ("userpkg.nets:", "an import path is package.module:function or path/to/file.py:function"),
    ("user pkg:make", "is neither a module name"),
    ("no_such_module_xyz:make", "cannot import module 'no_such_module_xyz'"),
    ("userpkg.nets:missing", "has no attribute 'missing'; its callables: .*make"),
    ("userpkg.nets:NUMBER", "'NUMBER' is a int, not a callable factory"),
    ("broken.py:make", "file broken.py not found"),
])
def test_bad_import_paths_are_refused_with_the_reason(user_module, name, message):
    with pytest.raises(SpecError, match=message):
        build_model(name, (1, 4, 4), 3)


def test_a_module_that_fails_to_import_and_bad_factories(user_module):
    with pytest.raises(SpecError, match=r"importing .*broken.py' failed \(RuntimeError: boom\)"):
        resolve_model(f"{user_module / 'broken.py'}:make")
    with pytest.raises(SpecError, match="returned a str, not a torch.nn.Module"):
        build_model("userpkg.nets:not_a_model", (1, 4, 4), 3)
    with pytest.raises(SpecError, match=r"calling it as factory\(in_shape, classes\) failed"):
        build_model("userpkg.nets:no_args", (1, 4, 4), 3)
    with pytest.raises(SpecError, match="model must be a string"):
        check_arch(nn.Linear)  # type: ignore[arg-type]
