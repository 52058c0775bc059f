"""K-fold cross-validation over the training split: how much the test figure could move.

One test split of a small dataset is a noisy figure; the spread of the folds' accuracy
says how far to trust it. The test split stays untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from trainer.console import console
from trainer.fit import FitConfig
from trainer.prepare import Prepared
from trainer.stages import fit_stages


def cross_validate(prep: Prepared, cfg: FitConfig, cut: int, views: int, k: int) -> dict[str, Any]:
    """K stratified folds over the training split (test untouched): mean and spread."""
    y = prep.y["train"]
    k = max(2, min(k, int(np.bincount(y).min())))
    scores = []
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=cfg.seed)
    for i, (tr, te) in enumerate(folds.split(np.zeros(len(y)), y)):
        r = fit_stages(prep, cfg, cut, views, train_items=tr, val_items=te, quiet=True)
        scores.append(r.val_accuracy)
        console.print(f"fold {i + 1}/{k}: accuracy {r.val_accuracy:.2%}")
    record = {
        "folds": k,
        "accuracy": scores,
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
    }
    console.print(f"cross-validation: {record['mean']:.2%} ± {record['std']:.2%} over {k} folds")
    return record
