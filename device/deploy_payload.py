"""What ``sightwire deploy`` ships: a bundle checked here, its files and their checksums.

A bundle the daemon would refuse must never leave the workstation: the loader verifies
manifest.json's sha256s, and every model the Pi could run on its CPU is opened and
classifies a blank frame, as ``cmd/update`` does on the device (``Classifier.self_test``).
What was checked is said in words, so the deploy's output never claims more.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from device.bundle import Bundle, extract_zip, load_bundle
from device.errors import BundleError, RuntimeMissing, one_line
from device.models_dir import bundle_files, checksum_listing, content_id, version_name
from device.remote import DeployError


@dataclass(frozen=True)
class Payload:
    """What goes to the Pi: the files of a checked bundle and their checksums."""

    root: Path
    name: str
    files: list[str]  # relative POSIX paths
    checksums: str  # `sha256sum -c` input, one "HASH  PATH" line per file
    size: int

    @property
    def content_id(self) -> str:
        return content_id(self.checksums)

    def version(self, stamp: str) -> str:
        return version_name(self.name, self.content_id, stamp)


def payload_of(bundle: Bundle) -> Payload:
    """List the bundle's files and hash them; manifest entries were verified by the loader."""
    root = bundle.root
    files = bundle_files(root)
    left_out = sorted(p.name for p in bundle.models.values() if p.name not in files)
    if left_out:
        raise DeployError(f"{root}: hidden model files would not be copied: {', '.join(left_out)}")
    checksums = checksum_listing(root, files, _manifest_shas(bundle))
    size = sum((root / rel).stat().st_size for rel in files)
    return Payload(root, bundle.name, files, checksums, size)


def sha256_checked(bundle: Bundle) -> str:
    """What the loader's sha256 check covered, in words (a bundle without a manifest or
    without hashes in it had nothing checked)."""
    if bundle.kind != "bundle":
        return "no manifest.json: no sha256 to check here"
    shas = _manifest_shas(bundle)
    have = [v for v, path in bundle.models.items() if path.name in shas]
    if not have:
        return "manifest.json gives no sha256: none checked here"
    count = f"{len(have)} model file{'s' if len(have) > 1 else ''}"
    if len(have) < len(bundle.models):
        lacking = ", ".join(v for v in bundle.models if v not in have)
        return f"sha256 of {count} checked against manifest.json (none given for {lacking})"
    return f"sha256 of {count} checked against manifest.json"


def check_models(bundle: Bundle, enabled: bool = True) -> str:
    """Open every model the Pi could run on its CPU and classify a blank frame, as
    ``cmd/update`` does before a switch (``Classifier.self_test``); what was run, in words.
    The Edge TPU model needs a TPU and is not run (its sha256 is checked all the same)."""
    if not enabled:
        return "model not opened here (--no-verify)"
    cpu = [v for v in bundle.models if v != "edgetpu"]
    if cpu:
        from device.classifier import Classifier  # numpy and the runtime: only here
        from device.runtime import find_runtime

        try:
            find_runtime()
        except RuntimeMissing as exc:
            raise DeployError(
                f"cannot open the model here to check it ({exc}); install one, or pass "
                "--no-verify to deploy without that check"
            ) from None
        for variant in cpu:
            try:
                Classifier.open(bundle, variant, num_threads=1).self_test()
            except (BundleError, RuntimeMissing, RuntimeError, ValueError) as exc:
                raise DeployError(
                    f"{one_line(exc)}: the daemon would refuse this model; nothing was copied"
                ) from None
    ran = f"{' and '.join(cpu)} model{'s' if len(cpu) > 1 else ''} opened and ran here"
    if "edgetpu" not in bundle.models:
        return ran
    skipped = "edgetpu model not run here (it needs an Edge TPU)"
    return f"{ran}; {skipped}" if cpu else skipped


def _manifest_shas(bundle: Bundle) -> dict[str, str]:
    """The manifest's sha256 of each model file (the loader checked them against the files)."""
    return {
        str(entry["file"]): str(entry["sha256"])
        for entry in bundle.manifest.get("models", {}).values()
        if isinstance(entry, dict) and entry.get("file") and entry.get("sha256")
    }


@contextmanager
def open_bundle(path: str) -> Iterator[Bundle]:
    """Load and verify a bundle directory or zip (unpacked to a temporary directory)."""
    source = Path(path).expanduser()
    if source.is_file() and source.suffix.lower() == ".zip":
        with tempfile.TemporaryDirectory(prefix="sightwire-deploy-") as tmp:
            yield load_bundle(extract_zip(source, Path(tmp)), verify=True)
        return
    if source.is_file():
        raise DeployError(f"{source}: give the bundle directory or its .zip, not a single file")
    yield load_bundle(source, verify=True)
