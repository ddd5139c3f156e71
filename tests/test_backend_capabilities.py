"""What an S-DDHR variant can do is a class attribute of its backend (``uses_table``,
``one_chip_per_batch``), and the registry lists the variants that have each
(:func:`sddhr.nn.backends.table_variants`, :func:`~sddhr.nn.backends.one_chip_per_batch_variants`),
read when asked: a variant registered later (a plug-in's) counts. The built-in lists are
those the package held as fixed tuples before (``recipes.TABLE_VARIANTS``,
``api_support.ONE_CHIP_PER_BATCH``)."""

from __future__ import annotations

import warnings

import pytest
import torch

from sddhr.api import HardwareSetupWarning, HardwareTrainer, prepare
from sddhr.models import mlp
from sddhr.nn import VARIANTS, variants
from sddhr.nn import mode as nn_mode
from sddhr.nn.backends import Backend, one_chip_per_batch_variants, register, table_variants, variants_with
from sddhr.nn.backends import base as backend_registry
from sddhr.nn.backends.faithful import FaithfulBackend
from sddhr.recipes import make_config

#: what the fixed tuples said before the capabilities moved onto the backends
OLD_TABLE_VARIANTS = ("exact", "composed", "faithful", "one_chip")
OLD_ONE_CHIP_PER_BATCH = frozenset({"one_chip", "fresh_chip"})


@pytest.fixture
def registries():
    """Whatever a test registers is gone after it."""
    saved = dict(backend_registry._REGISTRY), dict(nn_mode._registered_variants)
    yield
    for reg, old in zip((backend_registry._REGISTRY, nn_mode._registered_variants), saved):
        reg.clear()
        reg.update(old)  # type: ignore[arg-type]


def built_in(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` without those of plug-ins another test may have loaded."""
    return tuple(v for v in names if v in VARIANTS)


def test_the_built_in_lists_are_the_old_tuples():
    assert built_in(table_variants()) == OLD_TABLE_VARIANTS  # same order: the error message lists them
    assert set(built_in(one_chip_per_batch_variants())) == OLD_ONE_CHIP_PER_BATCH
    assert not Backend.uses_table and not Backend.one_chip_per_batch  # the defaults
    assert variants_with("uses_table") == table_variants()


def test_the_lists_follow_the_order_of_variants():
    for names in (table_variants(), one_chip_per_batch_variants()):
        assert list(names) == [v for v in variants() if v in names]


def test_a_variant_registered_later_is_listed_by_its_capabilities(registries):
    assert "tabled_later" not in table_variants()

    @register("stochastic", "tabled_later")
    class TabledLater(Backend):
        uses_table = True

    @register("stochastic", "batch_chip_later")
    class BatchChipLater(Backend):
        one_chip_per_batch = True

    @register("stochastic", "plain_later")
    class PlainLater(Backend):
        pass

    @register("stochastic", "faithful_later")
    class FaithfulLater(FaithfulBackend):  # inherits uses_table, as the example plug-in's variant
        pass

    assert table_variants()[-2:] == ("tabled_later", "faithful_later")
    assert built_in(table_variants()) == OLD_TABLE_VARIANTS
    assert one_chip_per_batch_variants()[-1] == "batch_chip_later"
    assert "plain_later" not in table_variants() and "plain_later" not in one_chip_per_batch_variants()
    assert "tabled_later" not in one_chip_per_batch_variants()


def test_the_training_config_takes_a_table_with_a_variant_that_uses_one(registries):
    @register("stochastic", "tabled_cfg")
    class TabledCfg(Backend):
        uses_table = True

    @register("stochastic", "untabled_cfg")
    class UntabledCfg(Backend):
        pass

    # the table file is read when the run starts (load_table), not by the config
    assert make_config({"recipe": "sddhr", "variant": "tabled_cfg", "table": "t.npz"}).table == "t.npz"
    with pytest.raises(ValueError, match=r"variant exact or composed or faithful or one_chip or tabled_cfg; "
                                         r"got recipe sddhr, variant untabled_cfg"):
        make_config({"recipe": "sddhr", "variant": "untabled_cfg", "table": "t.npz"})
    with pytest.raises(ValueError, match="variant exact or composed or faithful or one_chip"):
        make_config({"recipe": "sddhr", "variant": "resampled", "table": "t.npz"})


def test_the_trainer_warns_about_batch_norm_with_a_later_one_chip_per_batch_variant(registries, monkeypatch):
    @register("stochastic", "batch_chip_api")
    class BatchChipApi(Backend):
        one_chip_per_batch = True

    model = prepare(mlp((1, 4, 4), 3, (8,)))
    trainer = HardwareTrainer(model, level=2, variant="batch_chip_api", calibration_batches=0, progress=False)
    monkeypatch.setattr(trainer, "_stage", lambda *a, **k: [])  # the warning comes before any training
    x, y = torch.zeros(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train_sddhr((x, y), ideal_epochs=0)
    assert any(issubclass(w.category, HardwareSetupWarning) and "batch_chip_api" in str(w.message) for w in caught)
