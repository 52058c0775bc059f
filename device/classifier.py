"""One model, ready to classify frames: interpreter + preprocessing + output decoding.

``sightwire classify``, the daemon, ``bench`` and the trainer's evaluation all use this
class, so a figure measured anywhere is a figure of the code that runs on the device.
``top_k`` here is the one ranking of probabilities (post-processing ranks with it too).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from device.bundle import Bundle, load_bundle, sha256_file
from device.config import ModelConfig
from device.errors import BundleError
from device.preprocess import InputSpec, Preprocessor, fit_frame
from device.runtime import make_interpreter

log = logging.getLogger(__name__)


@dataclass
class Timings:
    """Seconds spent in each stage of the last ``classify`` call."""

    fit: float = 0.0  # crop + resize
    convert: float = 0.0  # lookup table into the input dtype
    set_tensor: float = 0.0
    invoke: float = 0.0
    output: float = 0.0  # read + dequantize

    def as_ms(self) -> dict[str, float]:
        return {k: round(v * 1000, 3) for k, v in self.__dict__.items()}


Top = list[tuple[str, float]]


def top_k(probs: np.ndarray, labels: list[str], k: int) -> Top:
    """The ``k`` most probable labels, best first (ties: lower index first, so the same
    probabilities always give the same answer; a stable sort of 1001 classes is ~20 µs)."""
    idx = np.argsort(-probs, kind="stable")[:k]
    return [(labels[i], float(probs[i])) for i in idx]


def dequantize(raw: np.ndarray, quantization: tuple[float, int]) -> np.ndarray:
    scale, zero_point = quantization
    values = raw.astype(np.float32)
    if scale:
        values = (values - zero_point) * scale
    return values


def as_probabilities(values: np.ndarray) -> np.ndarray:
    """Softmax unless the model already outputs probabilities.

    A quantized softmax output (uint8, scale 1/256) need not sum to 1 (0.87 is seen
    on Coral's models), so any vector inside [0, 1] is taken as probabilities.
    """
    if values.min() >= -1e-3 and values.max() <= 1.0 + 1e-3:
        return values
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


@dataclass
class Classifier:
    """A loaded bundle variant. Build it with ``Classifier.open``."""

    bundle: Bundle
    variant: str
    interpreter: Any
    spec: InputSpec
    preprocess: Preprocessor
    model_sha256: str
    timings: Timings = field(default_factory=Timings)
    autotune: dict[str, Any] | None = None  # device.autotune.Choice when ``auto`` measured

    def __post_init__(self) -> None:
        # Tensor details are looked up once: get_*_details() builds dicts on every call.
        out = self.interpreter.get_output_details()[0]
        self._input_index = self.interpreter.get_input_details()[0]["index"]
        self._output_index = out["index"]
        self._output_quantization = tuple(out["quantization"])

    @classmethod
    def open(
        cls,
        source: str | Path | Bundle,
        variant: str = "auto",
        num_threads: int | None = None,
        edgetpu_present: bool | None = None,
    ) -> Classifier:
        bundle = source if isinstance(source, Bundle) else load_bundle(source)
        variant = bundle.select(variant, edgetpu_present)
        path = bundle.models[variant]
        interpreter = make_interpreter(path, num_threads, edgetpu=variant == "edgetpu" or None)
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        shape = [int(x) for x in inp["shape"]]
        if len(shape) != 4 or shape[3] != 3:
            raise BundleError(f"{path}: input shape {shape} is not one RGB image (1,H,W,3)")
        n_out = int(np.prod(out["shape"][1:]))
        if n_out != len(bundle.labels):
            raise BundleError(
                f"{path}: model has {n_out} outputs but there are {len(bundle.labels)} labels"
            )
        spec = bundle.spec or InputSpec(width=shape[2], height=shape[1])
        if (spec.height, spec.width) != (shape[1], shape[2]):
            raise BundleError(
                f"{path}: manifest says {spec.width}x{spec.height}, model takes "
                f"{shape[2]}x{shape[1]}"
            )
        return cls(bundle, variant, interpreter, spec, Preprocessor(spec, inp), sha256_file(path))

    @property
    def labels(self) -> list[str]:
        return self.bundle.labels

    @property
    def model_path(self) -> Path:
        return self.bundle.models[self.variant]

    def classify(self, frame: np.ndarray) -> np.ndarray:
        """Probabilities for one frame (any size, RGB/grey uint8)."""
        t0 = time.perf_counter()
        fitted = fit_frame(frame, self.spec)
        t1 = time.perf_counter()
        tensor = self.preprocess.from_fitted(fitted)
        self.timings.fit, self.timings.convert = t1 - t0, time.perf_counter() - t1
        return self.infer(tensor)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Run one already-preprocessed input tensor; returns probabilities."""
        t0 = time.perf_counter()
        self.interpreter.set_tensor(self._input_index, tensor)
        t1 = time.perf_counter()
        self.interpreter.invoke()
        t2 = time.perf_counter()
        raw = self.interpreter.get_tensor(self._output_index).reshape(-1)
        probs = as_probabilities(dequantize(raw, self._output_quantization))
        t3 = time.perf_counter()
        timings = self.timings
        timings.set_tensor, timings.invoke, timings.output = t1 - t0, t2 - t1, t3 - t2
        return probs

    def top_k(self, probs: np.ndarray, k: int = 5) -> Top:
        return top_k(probs, self.labels, k)

    def self_test(self) -> np.ndarray:
        """Classify one blank frame: what ``cmd/update`` and ``deploy`` ask of a model before
        it goes live (one that opens but cannot run, or gives no usable probabilities,
        fails here)."""
        probs = self.classify(np.zeros((self.spec.height, self.spec.width, 3), np.uint8))
        if probs.shape != (len(self.labels),) or not np.all(np.isfinite(probs)):
            raise BundleError(
                f"{self.model_path.name}: the model's test inference gave no usable probabilities"
            )
        return probs


def model_location(path: Path) -> Path:
    """``model.path`` with a symlinked folder (``current``) resolved once, so that one load
    reads manifest and model from the same version even if the link switches meanwhile."""
    path = Path(path).expanduser()
    return path.resolve() if path.is_symlink() and path.is_dir() else path


def open_model(
    config: ModelConfig, frame: tuple[int, int] | Literal["model"] | None = None
) -> Classifier:
    """The daemon's model as configured (``[model]``): what start, reload and update load.

    ``variant``/``threads`` ``auto`` are decided by ``device.autotune`` (measured once per
    bundle and machine, then cached); ``frame``: the camera frame size the capture thread
    fits (``"model"``: frames arrive at the model's size, picamera2's lores stream;
    None: 640x480 assumed)."""
    path = model_location(config.path)
    if config.variant != "auto" and config.threads != "auto":
        return Classifier.open(path, config.variant, config.threads)
    from device.autotune import FRAME_SIZE, choose  # only where auto asks for it

    bundle = load_bundle(path)
    choice = choose(bundle, config.variant, config.threads, frame=frame or FRAME_SIZE)
    log.info(
        "model: %s, %s thread(s): %s%s",
        choice.variant,
        choice.threads or "default",
        choice.reason or "as configured",
        " (figures from the cache)" if choice.cached else "",
    )
    clf = Classifier.open(bundle, choice.variant, choice.threads)
    clf.autotune = choice.to_json()
    return clf
