"""Hyperparameter search (KerasTuner, Bayesian) over both training stages.

Every trial trains on the cached backbone features, so a trial costs seconds to a
minute instead of a full backbone pass per epoch. The features are cached once below
the deepest fine-tuning cut the search may pick; a shallower cut only freezes the
blocks in between. Trials are scored on the validation split
only; the test split is touched once, by the final model.

The best trial's own weights are what gets exported: retraining its settings would
not reproduce its validation loss (multithreaded TensorFlow on a CPU does not sum in
a fixed order), and the point of the search is the model it scored.

What is searched: learning rates of both stages, dropout, fine-tune depth (in whole
blocks) and augmentation strength as the number of augmented views per image (the
views themselves are computed once). The input size is not searched: it changes every
cached feature; pick it with ``--input-size``.

The first trial is ``train``'s own settings (each hyperparameter's default, which
KerasTuner tries first; without one it took each range's lower bound), so a search
never ends on a model that scores worse on validation than plain ``train`` would.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import keras
import keras_tuner as kt
import numpy as np

from device.errors import SightwireError
from trainer.console import console
from trainer.fit import FitConfig
from trainer.model import block_starts, cut_index
from trainer.stages import Trained, fit_stages

if TYPE_CHECKING:
    from trainer.options import Stopwatch, TrainOptions
    from trainer.prepare import Prepared

FINE_TUNE_BLOCKS = (1, 2, 3, 4)  # blocks 16; 15-16; 14-16; 13-16 (+ the final 1x1 conv)
HEAD_LR, DROPOUT, FINE_TUNE_LR = (3e-4, 3e-3), (0.0, 0.5), (1e-5, 3e-4)  # searched ranges


def within(value: float, bounds: tuple[float, float]) -> float:
    """``value`` inside the searched range (a setting given outside it starts at the edge)."""
    return min(max(value, bounds[0]), bounds[1])


def candidate_cuts(backbone: keras.Model) -> list[int]:
    starts = block_starts(backbone)
    return [starts[-b] for b in FINE_TUNE_BLOCKS]


class _Tuner(kt.Tuner):
    """Runs each trial with ``fit_stages`` and stops at the time budget."""

    def __init__(
        self,
        prep: Prepared,
        base: FitConfig,
        max_views: int,
        base_cut: int,
        deadline: float | None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.prep, self.base, self.max_views, self.deadline = prep, base, max_views, deadline
        self.base_cut = base_cut  # train's own fine-tuning cut: the first trial's
        self.records: list[dict[str, Any]] = []
        self.best: Best | None = None

    def settings(self, hp: kt.HyperParameters) -> tuple[FitConfig, int, int]:
        cuts, base = candidate_cuts(self.prep.backbone), self.base
        cfg = replace(
            base,
            head_lr=hp.Float(
                "head_lr", *HEAD_LR, sampling="log", default=within(base.head_lr, HEAD_LR)
            ),
            dropout=hp.Float(
                "dropout", *DROPOUT, step=0.1, default=within(round(base.dropout, 1), DROPOUT)
            ),
            fine_tune_lr=hp.Float(
                "fine_tune_lr",
                *FINE_TUNE_LR,
                sampling="log",
                default=within(base.fine_tune_lr, FINE_TUNE_LR),
            ),
        )
        nearest = min(range(len(cuts)), key=lambda i: abs(cuts[i] - self.base_cut))
        blocks = hp.Choice(
            "fine_tune_blocks", list(FINE_TUNE_BLOCKS), default=FINE_TUNE_BLOCKS[nearest]
        )
        views = hp.Choice(
            "augment_views",
            sorted({1, min(2, self.max_views), self.max_views}),
            default=self.max_views,
        )
        return cfg, cuts[FINE_TUNE_BLOCKS.index(blocks)], views

    def run_trial(self, trial: kt.engine.trial.Trial, *args: Any, **kwargs: Any) -> dict:
        start = time.perf_counter()
        cfg, cut, views = self.settings(trial.hyperparameters)
        result = fit_stages(self.prep, cfg, cut, views, quiet=True)
        record = {
            "trial": len(self.records) + 1,
            "params": dict(trial.hyperparameters.values),
            "val_loss": float(f"{result.val_loss:.6g}"),  # 6 digits: good trials differ at 1e-6
            "val_accuracy": round(result.val_accuracy, 5),
            "fine_tune_kept": result.kept_fine_tune,
            "seconds": round(time.perf_counter() - start, 1),
        }
        self.records.append(record)
        if self.best is None or result.val_loss < self.best.trained.val_loss:
            weights = self.prep.backbone.get_weights()  # the trial's fine-tuned backbone
            self.best = Best(result, weights, (cfg, cut, views), record["trial"])
        console.print(
            f"trial {record['trial']}: val loss {record['val_loss']:.4f}, "
            f"accuracy {record['val_accuracy']:.2%} ({record['seconds']:.0f}s) {record['params']}"
        )
        if self.deadline is not None and time.perf_counter() > self.deadline:
            self.oracle.max_trials = len(self.oracle.trials)  # no new trial after this one
        return {"val_loss": result.val_loss, "val_accuracy": result.val_accuracy}


@dataclass
class Best:
    """The best trial so far: its trained head, backbone weights and settings."""

    trained: Trained
    backbone_weights: list[np.ndarray]
    settings: tuple[FitConfig, int, int]
    trial: int


def run_search(prep: Prepared, opts: TrainOptions, watch: Stopwatch) -> tuple[dict[str, Any], Best]:
    """Search, then return the record for the report and the best trial."""
    deadline = time.perf_counter() + opts.search_minutes * 60 if opts.search_minutes else None
    with tempfile.TemporaryDirectory(prefix="sightwire-search-") as tmp:
        tuner = _Tuner(
            prep,
            opts.fit,
            1 + opts.augment_copies,
            cut_index(prep.backbone, opts.fine_tune_layers),
            deadline,
            oracle=kt.oracles.BayesianOptimizationOracle(
                objective=kt.Objective("val_loss", "min"),
                max_trials=opts.search_trials,
                seed=opts.fit.seed,
            ),
            directory=tmp,
            project_name="sightwire",
            overwrite=True,
        )
        console.print(
            f"[bold]search[/]: up to {opts.search_trials} trials"
            + (f" or {opts.search_minutes:g} minutes" if deadline else "")
        )
        tuner.search()
    best = tuner.best
    if best is None:
        raise SightwireError("the search ran no trial: raise --search-minutes")
    watch.lap("search")
    record = {
        "objective": "val_loss",
        "trials": tuner.records,
        "best": tuner.records[best.trial - 1]["params"],
        "best_trial": best.trial,
        "seconds": watch.phases["search"],
    }
    console.print(f"best trial: {best.trial} {record['best']}: its weights are exported")
    return record, best
