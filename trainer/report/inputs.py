"""What ``train`` left in a bundle, read back once for the report; missing parts are empty.

Every reader here tolerates a partial or older bundle: a missing file, a JSON value of
an unexpected type or an unknown key is left out, never a crash. Only
``report/metrics.json`` is required: without it there is nothing to report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from device.errors import SightwireError

REPORT_DIR = "report"
RARE_SHARE = 0.5  # a class with fewer images than this share of the median class is "rare"


class Inputs:
    """What the trainer left in the bundle, loaded once; missing parts are empty."""

    def __init__(self, bundle_dir: Path) -> None:
        self.dir = Path(bundle_dir)
        self.report_dir = self.dir / REPORT_DIR
        if not self.dir.is_dir():
            raise SightwireError(f"{self.dir} is not a bundle directory")
        metrics_path = self.report_dir / "metrics.json"
        if not metrics_path.is_file():
            raise SightwireError(
                f"{metrics_path} not found: the report is built from what `sightwire train` "
                "writes there"
            )
        self.metrics: dict[str, Any] = read_json(metrics_path, required=True)
        if not isinstance(self.metrics, dict):
            raise SightwireError(f"{metrics_path} does not hold the trainer's metrics")
        self.manifest: dict[str, Any] = as_dict(read_json(self.dir / "manifest.json"))
        self.split: dict[str, Any] = as_dict(read_json(self.report_dir / "split.json"))
        self.doctor: Any = read_json(self.report_dir / "doctor.json")
        labels = self.manifest.get("labels")
        if not labels:
            first = next(iter(self.results.values()), {})
            labels = list(as_dict(first.get("per_class"))) or list(self.counts)
        self.labels: list[str] = [str(x) for x in labels]

    @property
    def counts(self) -> dict[str, int]:
        return {k: int(v) for k, v in numbers(self.dataset.get("counts")).items()}

    @property
    def dataset(self) -> dict[str, Any]:
        return as_dict(self.metrics.get("dataset"))

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        """Test results per variant, int8 (what the device runs) first."""
        test = as_dict(self.metrics.get("test"))
        order = sorted(test, key=lambda v: (v != "int8", v != "float", v))
        return {v: test[v] for v in order if isinstance(test[v], dict)}

    def true_labels(self) -> list[str | None]:
        """True class of each evaluated file, from split.json, else from its folder."""
        known = {
            str(path): str(label)
            for side in ("train", "val", "test")
            for path, label in pairs(self.split.get(side))
        }
        labels = set(self.labels)
        out: list[str | None] = []
        for rel in self.metrics.get("test_files", []):
            if rel in known:
                out.append(known[rel])
                continue
            folders = [p for p in Path(rel).parts[:-1] if p in labels]
            out.append(folders[-1] if folders else None)
        return out


def pairs(value: Any) -> list[tuple[Any, Any]]:
    """``[[path, label], ...]`` from split.json, skipping anything else."""
    if not isinstance(value, list):
        return []
    return [(p[0], p[1]) for p in value if isinstance(p, (list, tuple)) and len(p) == 2]


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def numbers(mapping: Any) -> dict[str, float]:
    """The numeric entries of a JSON object (anything else is ignored, not a crash)."""
    return {
        str(k): v
        for k, v in as_dict(mapping).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def read_json(path: Path, required: bool = False) -> Any:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        if required:
            raise SightwireError(f"{path} is not readable JSON: {err}") from err
        return {}


def rare_classes(counts: dict[str, int]) -> set[str]:
    """Classes with fewer images than ``RARE_SHARE`` x the median class."""
    if len(counts) < 2:
        return set()
    values = sorted(counts.values())
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    return {name for name, n in counts.items() if n < RARE_SHARE * median}
