"""Hardware-aware training of any PyTorch model: prepare it for a macro, train it float ->
conventional -> S-DDHR, evaluate it on simulated chips (docs/API.md).

    model = prepare(net)                            # IMC layers; the first layer stays digital
    trainer = HardwareTrainer(model, level=6)
    trainer.train_float(train, epochs=3)
    trainer.train_sddhr(train, epochs=2)            # ranges, ideal pre-training, S-DDHR
    print(evaluate_chips(model, test, levels=[6]))  # 5 chips per level

Every default is the library's measured one (docs/RESULTS.md), taken from the modules that
own it: the recipes' weight step scale and weight decay (:mod:`sddhr.recipes`), the S-DDHR
variant (:data:`sddhr.nn.mode.DEFAULT_VARIANT`), the evaluation seeds and chip form
(:class:`sddhr.evaluate.EvalConfig`). Setups known to fail raise a :class:`UserWarning`
(:class:`HardwareSetupWarning`) saying why.

The API lives in :mod:`sddhr.api_prepare` (:func:`prepare`), :mod:`sddhr.api_trainer`
(:class:`HardwareTrainer`), :mod:`sddhr.api_evaluate` (:func:`evaluate_chips`) and
:mod:`sddhr.api_support` (defaults, data, the warning); this module gathers it.
"""

from __future__ import annotations

from .api_evaluate import ChipTable, LevelStats, evaluate_chips
from .api_prepare import layer_table, prepare
from .api_support import *  # noqa: F403 - the defaults (api_support.__all__), importable from here as before
from .api_support import Data, HardwareSetupWarning
from .api_trainer import EpochRecord, HardwareTrainer

__all__ = ["ChipTable", "Data", "EpochRecord", "HardwareSetupWarning", "HardwareTrainer",
           "LevelStats", "evaluate_chips", "layer_table", "prepare"]
