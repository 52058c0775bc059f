"""The bundle, both ways: written by the trainer, loaded by the device (and the tools).

A bundle is a directory (or a ``.zip`` of one) with ``manifest.json`` (see
docs/contracts.md), ``labels.txt`` and the model files. This module is the one place that
knows that format: ``write_bundle``/``save_manifest`` write it (the trainer calls them), and
``load_bundle`` reads it back, so the two sides cannot drift apart. ``load_bundle`` also
takes what other tools hand over: a bare ``.tflite`` (labels from ``labels.txt`` beside
it, preprocessing from the model's own input tensor) or a Teachable Machine export.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from device import bundle_cache
from device.errors import BundleError
from device.manifest import Manifest, check_manifest
from device.preprocess import InputSpec

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LABELS = "labels.txt"
FORMAT_VERSION = 1
# The model files a bundle writer names (the Edge TPU one is the compiler's name for int8's).
FLOAT_FILE = "model_float.tflite"
INT8_FILE = "model_int8.tflite"
MODEL_FILES = {"float": FLOAT_FILE, "int8": INT8_FILE}
# Teachable Machine's TFLite export names, by our variant names.
TEACHABLE_FILES = {
    "edgetpu": "model_edgetpu.tflite",
    "int8": "model.tflite",
    "float": "model_unquant.tflite",
}
_INDEXED_LABEL = re.compile(r"^(\d+)\s+(.*\S)\s*$")
# The largest model input a bundle may have (width x height). An image classifier takes
# 96-512 px; a manifest or model that claims more is refused before an interpreter
# allocates its tensors: Coral's int8 MobileNetV2 with its input made 1024x1024 takes
# 150 MB at load, 4096x4096 1.1 GB, 20000x20000 would take tens of GB.
MAX_INPUT_PIXELS = 1024 * 1024


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_labels(text: str) -> list[str]:
    """One label per line; Teachable Machine's ``0 cats`` numbering is removed."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    matches = [_INDEXED_LABEL.match(line) for line in lines]
    if lines and all(m and int(m.group(1)) == i for i, m in enumerate(matches)):
        return [m.group(2) for m in matches if m]
    return lines


def read_labels(path: Path) -> list[str]:
    if not path.is_file():
        others = sorted(p.name for p in path.parent.glob("*labels*.txt"))
        if len(others) > 1:  # find_labels_file takes one only when it is the only one
            raise BundleError(
                f"{len(others)} labels files beside the model ({', '.join(others)}): "
                f"name the one that belongs to it {path.name}"
            )
        raise BundleError(f"labels file not found: {path} (one class name per line)")
    try:
        labels = parse_labels(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path}: labels file is not UTF-8 text") from exc
    if not labels:
        raise BundleError(f"{path}: labels file is empty")
    return labels


def distinct(labels: list[str], where: Path) -> list[str]:
    """``labels``, refused when two classes share a name (as in a manifest): the daemon
    would publish that name for both outputs."""
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if label in seen:
            raise BundleError(
                f"{where}: {json.dumps(label, ensure_ascii=False)} is both class {seen[label]} "
                f"and class {i}: each class needs a name of its own"
            )
        seen[label] = i
    return labels


def find_labels_file(folder: Path) -> Path:
    """``labels.txt``, else the one ``*labels*.txt`` beside a bare model."""
    if (folder / LABELS).is_file():
        return folder / LABELS
    candidates = sorted(folder.glob("*labels*.txt"))
    return candidates[0] if len(candidates) == 1 else folder / LABELS


@dataclass
class Bundle:
    """A loaded model hand-off: labels, model files by variant, preprocessing contract."""

    name: str
    root: Path
    kind: str  # "bundle", "tflite" or "teachable"
    labels: list[str]
    models: dict[str, Path]
    spec: InputSpec | None = None  # None: follow the model's input tensor
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> float | None:
        value = self.manifest.get("threshold")
        return float(value) if isinstance(value, (int, float)) else None

    def select(self, variant: str = "auto", edgetpu_present: bool | None = None) -> str:
        """Choose the model variant to run; ``auto`` prefers the Edge TPU, then int8."""
        if variant != "auto":
            if variant not in self.models:
                have = ", ".join(self.models) or "none"
                raise BundleError(f"bundle has no {variant!r} model (it has: {have})")
            return variant
        if "edgetpu" in self.models:
            if edgetpu_present is None:
                from device.runtime import edgetpu_available

                edgetpu_present = edgetpu_available()
            if edgetpu_present:
                return "edgetpu"
            if "int8" in self.models or "float" in self.models:
                log.warning("bundle has an Edge TPU model but no Edge TPU is attached: using CPU")
        for name in ("int8", "float", "edgetpu"):
            if name in self.models:
                return name
        raise BundleError(f"{self.root}: no model file found")


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Load any of the accepted forms; ``verify`` checks manifest hashes. The model
    input of the manifest and of every model file is checked against
    ``MAX_INPUT_PIXELS`` here, before anything builds an interpreter."""
    bundle = _load(Path(path).expanduser(), verify)
    if bundle.spec is not None:
        check_input_size(bundle.root / MANIFEST, bundle.spec.width, bundle.spec.height)
    for model in bundle.models.values():
        size = tflite_input_size(model)
        if size is not None:
            check_input_size(model, *size)
    return bundle


def check_input_size(where: Path, width: int, height: int) -> None:
    """A ``BundleError`` for a model input that is empty or over ``MAX_INPUT_PIXELS``."""
    if width < 1 or height < 1:
        raise BundleError(f"{where}: model input {width}x{height} is empty")
    if width * height > MAX_INPUT_PIXELS:
        raise BundleError(
            f"{where}: model input {width}x{height} is over the limit of "
            f"{MAX_INPUT_PIXELS} pixels (an image classifier takes 96-512 px a side); "
            "not loaded"
        )


def _load(path: Path, verify: bool) -> Bundle:
    if not path.exists():
        raise BundleError(f"model not found: {path}")
    if path.is_file() and path.suffix.lower() == ".zip":
        # Unpacked into this user's private cache, one folder per zip content, reused
        # when the same zip is loaded again (device.bundle_cache).
        dest = bundle_cache.unpack(path, sha256_file(path), extract_zip)
        return _load(_bundle_root(dest, path), verify)
    if path.is_file():
        if path.suffix.lower() != ".tflite":
            raise BundleError(f"{path}: expected a bundle directory, a .zip or a .tflite file")
        variant = "edgetpu" if path.stem.endswith("_edgetpu") else tflite_variant(path)
        # Labels may repeat here (not distinct()): Coral's own imagenet_labels.txt names
        # two classes "crane" (135, the bird; 518, the machine).
        return Bundle(
            name=path.stem,
            root=path.parent,
            kind="tflite",
            labels=read_labels(find_labels_file(path.parent)),
            models={variant: path},
        )
    if (path / MANIFEST).is_file():
        return _load_manifest_bundle(path, verify)
    teachable = {v: path / f for v, f in TEACHABLE_FILES.items() if (path / f).is_file()}
    if teachable:
        return Bundle(path.name, path, "teachable", read_labels(path / LABELS), teachable)
    tflites = sorted(path.glob("*.tflite"))
    if len(tflites) == 1:
        return _load(tflites[0], verify)
    if not tflites:
        raise BundleError(f"{path}: no manifest.json and no .tflite model inside")
    raise BundleError(f"{path}: several .tflite files and no manifest.json; name one file")


# TFLite's TensorType values that mark a quantized model (schema.fbs: UINT8 3, INT8 9).
_QUANTIZED_TYPES = {3, 9}


def tflite_variant(path: Path) -> str:
    """The variant of a bare .tflite: float when its first subgraph holds no 8-bit
    tensor, else int8.

    A bare file has no manifest to say which it is, and a float model named "int8" would
    be refused by ``variant: float`` and mislabelled in ``stats`` and ``bench``. Read from
    the flatbuffer (Model.subgraphs[0].tensors[*].type) without building an interpreter;
    a file that cannot be read this way is called "int8", and the runtime
    gives the clear error when it loads it."""
    try:
        types = _tensor_types(_FlatModel(path.read_bytes()))
    except (OSError, IndexError, struct.error):
        return "int8"
    return "int8" if not types or _QUANTIZED_TYPES & types else "float"


def tflite_input_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of a .tflite's first input tensor, read from the flatbuffer
    without building an interpreter (which allocates every tensor at that size); None
    when the file cannot be read this way (the runtime then gives the clear error)."""
    try:
        flat = _FlatModel(path.read_bytes())
        shape = _input_shape(flat)
    except (OSError, IndexError, struct.error):
        return None
    return (shape[2], shape[1]) if shape is not None and len(shape) == 4 else None


class _FlatModel:
    """Just enough of FlatBuffers' layout to read a TFLite model's tensors: a table
    starts with an offset back to its vtable, whose entries give each field's position."""

    def __init__(self, data: bytes):
        self.data = data

    def field(self, table: int, index: int) -> int | None:
        data = self.data
        vtable = table - struct.unpack_from("<i", data, table)[0]
        if 4 + 2 * index >= struct.unpack_from("<H", data, vtable)[0]:
            return None  # field absent: an older writer
        offset = struct.unpack_from("<H", data, vtable + 4 + 2 * index)[0]
        return table + offset if offset else None

    def deref(self, pos: int) -> int:
        return pos + struct.unpack_from("<I", self.data, pos)[0]

    def tables(self, pos: int) -> list[int]:
        """The tables of the vector at ``pos``."""
        start = self.deref(pos)
        count = struct.unpack_from("<I", self.data, start)[0]
        return [self.deref(start + 4 + 4 * i) for i in range(count)]

    def table_at(self, pos: int, index: int) -> int:
        """Table ``index`` of the vector at ``pos`` (``IndexError`` when there is none)."""
        start = self.deref(pos)
        if not 0 <= index < struct.unpack_from("<I", self.data, start)[0]:
            raise IndexError(f"tensor {index} out of range")
        return self.deref(start + 4 + 4 * index)

    def ints(self, pos: int, limit: int = 16) -> list[int] | None:
        """The int32 vector at ``pos``; None when longer than ``limit`` (no tensor shape
        or input list of an image model is; a hostile file must not make us loop)."""
        start = self.deref(pos)
        count = struct.unpack_from("<I", self.data, start)[0]
        if count > limit:
            return None
        return list(struct.unpack_from(f"<{count}i", self.data, start + 4))

    def subgraph(self) -> int | None:
        subgraphs = self.field(self.deref(0), 2)  # Model: version, operator_codes, subgraphs
        return None if subgraphs is None else self.tables(subgraphs)[0]


def _tensor_types(flat: _FlatModel) -> set[int]:
    """The ``type`` field of every tensor of subgraph 0."""
    graph = flat.subgraph()
    tensors = None if graph is None else flat.field(graph, 0)  # SubGraph: tensors
    if tensors is None:
        return set()
    types = set()
    for tensor in flat.tables(tensors):
        pos = flat.field(tensor, 1)  # Tensor: shape, type
        types.add(struct.unpack_from("<b", flat.data, pos)[0] if pos is not None else 0)
    return types  # an absent type is FLOAT32 (0), the schema's default


def _input_shape(flat: _FlatModel) -> list[int] | None:
    """The shape of subgraph 0's first input tensor (``[1, H, W, C]`` for an image)."""
    graph = flat.subgraph()
    inputs = None if graph is None else flat.field(graph, 1)  # SubGraph: tensors, inputs
    tensors = None if graph is None else flat.field(graph, 0)
    if inputs is None or tensors is None:
        return None
    first = flat.ints(inputs)
    if not first:
        return None
    shape = flat.field(flat.table_at(tensors, first[0]), 0)  # Tensor: shape
    return None if shape is None else flat.ints(shape)


def load_manifest(root: Path) -> dict[str, Any]:
    """``manifest.json`` of the bundle at ``root``, every key the device reads checked
    (``device.manifest``): a bad one is a ``BundleError`` line naming it."""
    return _read_manifest(root)[0]


def _read_manifest(root: Path) -> tuple[dict[str, Any], Manifest]:
    where = root / MANIFEST
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{where}: unsupported format_version (expected {FORMAT_VERSION})")
    return manifest, check_manifest(manifest, str(where))


def _load_manifest_bundle(root: Path, verify: bool) -> Bundle:
    manifest, checked = _read_manifest(root)
    models: dict[str, Path] = {}
    for variant, entry in checked.models.items():
        file = root / entry.file
        if not file.is_file() or file.parent.resolve() != root.resolve():
            raise BundleError(f"{root}: model file for {variant!r} missing: {entry.file}")
        if verify and entry.sha256 and sha256_file(file) != entry.sha256:
            raise BundleError(
                f"{file}: sha256 does not match manifest.json (corrupt or replaced file)"
            )
        models[variant] = file
    labels_file = root / LABELS
    if labels_file.is_file() and distinct(read_labels(labels_file), labels_file) != checked.labels:
        raise BundleError(f"{labels_file} disagrees with the labels in manifest.json")
    spec = InputSpec.from_manifest(manifest["input"])  # well formed: checked above
    name = checked.name or root.name
    return Bundle(name, root, "bundle", checked.labels, models, spec, manifest)


def write_bundle(
    out: Path,
    name: str,
    labels: list[str],
    spec: InputSpec,
    models: dict[str, bytes],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write model files, ``labels.txt`` and ``manifest.json`` (with each model's sha256);
    returns the manifest. ``extra`` adds top-level keys (who wrote it, metrics)."""
    out.mkdir(parents=True, exist_ok=True)
    entries: dict[str, Any] = {}
    for variant, content in models.items():
        path = out / MODEL_FILES[variant]
        path.write_bytes(content)
        entries[variant] = {
            "file": path.name,
            "sha256": sha256_file(path),
            "input_dtype": "float32" if variant == "float" else "uint8",
            "bytes": len(content),
        }
    write_labels(out, labels)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "labels": labels,
        "input": spec.to_manifest(),
        "models": entries,
        **(extra or {}),
    }
    save_manifest(out, manifest)
    return manifest


def write_labels(out: Path, labels: list[str]) -> None:
    """``labels.txt``: one class name per line, in the model's output order. Names that
    would read back as Teachable Machine's numbering (folders ``0 good``, ``1 bad``) are
    written numbered themselves (``0 0 good``), so every reader gets the names back."""
    text = "".join(f"{label}\n" for label in labels)
    if parse_labels(text) != labels:
        text = "".join(f"{i} {label}\n" for i, label in enumerate(labels))
    if parse_labels(text) != labels:  # a name with a line break or spaces at an end
        raise BundleError(f"class names {labels!r} cannot be written one per line")
    (out / LABELS).write_text(text, encoding="utf-8")


def save_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically (a temporary file renamed over it): a reader
    never sees half a manifest."""
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    tmp.replace(out / MANIFEST)


def extract_zip(zip_path: Path, dest: Path, max_bytes: int = 512 << 20) -> Path:
    """Extract a bundle zip safely: no member may escape ``dest``; size is capped.

    Returns the directory holding ``manifest.json`` (the zip may wrap it in a folder).
    """
    dest = dest.resolve()
    try:
        with zipfile.ZipFile(zip_path) as zf:
            total = 0
            for info in zf.infolist():
                target = (dest / info.filename).resolve()
                if info.filename.startswith(("/", "\\")) or not target.is_relative_to(dest):
                    raise BundleError(f"{zip_path}: member {info.filename!r} escapes the bundle")
                total += info.file_size
                if total > max_bytes:
                    raise BundleError(f"{zip_path}: unpacks to more than {max_bytes >> 20} MiB")
            zf.extractall(dest)
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
        raise BundleError(f"{zip_path}: not a valid zip file ({exc})") from exc
    return _bundle_root(dest, zip_path)


def _bundle_root(dest: Path, zip_path: Path) -> Path:
    """The folder holding manifest.json (a zip may wrap the bundle in one folder)."""
    if (dest / MANIFEST).is_file():
        return dest
    inner = [p.parent for p in dest.glob(f"*/{MANIFEST}")]
    if len(inner) == 1:
        return inner[0]
    tflites = list(dest.glob("*.tflite")) or list(dest.glob("*/*.tflite"))
    if tflites:
        return tflites[0].parent
    raise BundleError(f"{zip_path}: no manifest.json or .tflite inside")
