"""``sightwire deploy BUNDLE --host pi@raspberrypi.local``: ship a bundle to a Pi, switch to it.

Why each step is the way it is:

1. The bundle is checked here first (``load_bundle`` verifies manifest.json's sha256s):
   a broken export never leaves the workstation.
2. It is copied with the system's ``rsync`` over SSH (``scp`` where rsync is missing)
   into a new directory ``<UTC stamp>-<name>-<content id>.partial`` beside the
   daemon's ``current`` symlink, so the running model is never touched.
3. The copy is verified on the Pi with ``sha256sum -c``, fed the checksums computed
   here; a truncated or altered copy is removed and never goes live.
4. ``current`` is switched atomically: ``ln -sfn`` makes a new symlink beside it and
   ``mv -T`` renames it over ``current`` (one rename(2)), so the daemon sees the old
   model or the new one, never none.
5. The daemon is told: ``sudo systemctl restart`` (default), or ``<base>/cmd/reload``
   published with ``mosquitto_pub`` on the Pi (``--mqtt``); then old versions beyond
   ``--keep`` are removed (rolling back is one ``ln -sfn`` + ``mv -T``).

Version names, content ids and what pruning may remove come from ``device.models_dir``,
which the daemon's ``cmd/update`` uses too: either can update a Pi the other set up.

The ssh/rsync/scp argument lists and the shell text run on the Pi are in
``device.remote``. No TensorFlow: this verb runs wherever the device half is installed.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from device.bundle import Bundle, extract_zip, load_bundle
from device.errors import UsageError
from device.models_dir import (
    CURRENT,
    PARTIAL,
    bundle_files,
    checksum_listing,
    content_id,
    prunable,
    utc_stamp,
    version_name,
)
from device.remote import (
    _PREPARE_FAILURES,
    DeployError,
    Remote,
    Result,
    _remote_prepare,
    _remote_reload,
    _remote_switch,
    call,
    is_host,
    is_ssh_option,
    pick_transfer,
    remote_dir,
)

HELP = (
    "Copy a bundle (directory or .zip) to a Raspberry Pi over SSH, verify it there, "
    "switch the daemon's 'current' model atomically and restart or reload the daemon."
)
log = logging.getLogger(__name__)

DEFAULT_REMOTE_DIR = "/var/lib/sightwire/models"
DEFAULT_SERVICE = "sightwire.service"
_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._:-]*$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle directory or .zip (from `sightwire train/export`)")
    parser.add_argument(
        "--host", required=True, help="the Pi: [user@]host or an ~/.ssh/config alias"
    )
    parser.add_argument(
        "--remote-dir",
        default=DEFAULT_REMOTE_DIR,
        help=f"model directory on the Pi, with the 'current' link (default {DEFAULT_REMOTE_DIR})",
    )
    parser.add_argument(
        "--keep",
        type=int,
        default=3,
        help="versions to keep on the Pi, the new one included (default 3; 0 keeps all)",
    )
    parser.add_argument(
        "--transfer",
        choices=["auto", "rsync", "scp"],
        default="auto",
        help="copy with rsync or scp (default auto: rsync where installed here, else scp)",
    )
    parser.add_argument(
        "--ssh-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an ssh -o option for every connection, e.g. Port=2222 or IdentityFile=~/.ssh/pi "
        "(repeatable; ~/.ssh/config works too)",
    )
    reload = parser.add_mutually_exclusive_group()
    reload.add_argument(
        "--mqtt",
        metavar="BASE_TOPIC",
        help="reload by publishing BASE_TOPIC/cmd/reload with mosquitto_pub on the Pi "
        "(e.g. sightwire/kitchen) instead of restarting the service; broker credentials "
        "come from ~/.config/mosquitto_pub there (lines like: -u USER, -P PASSWORD)",
    )
    reload.add_argument(
        "--no-reload", action="store_true", help="switch the model but leave the daemon alone"
    )
    parser.add_argument(
        "--mqtt-host", default="localhost", help="broker as seen from the Pi (default localhost)"
    )
    parser.add_argument("--mqtt-port", type=int, default=1883, help="broker port (default 1883)")
    parser.add_argument(
        "--service",
        default=DEFAULT_SERVICE,
        help=f"systemd unit to restart with `sudo -n systemctl` (default {DEFAULT_SERVICE})",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the bundle, print the commands, change nothing",
    )


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


def _manifest_shas(bundle: Bundle) -> dict[str, str]:
    """The manifest's sha256 of each model file (the loader checked them against the files)."""
    return {
        str(entry["file"]): str(entry["sha256"])
        for entry in bundle.manifest.get("models", {}).values()
        if isinstance(entry, dict) and entry.get("file") and entry.get("sha256")
    }


def validate(args: argparse.Namespace) -> None:
    """The flags' values, before any file is read: one that breaks its format is a
    ``UsageError`` (exit 2)."""
    if not is_host(args.host):
        raise UsageError(
            f"--host {args.host!r}: expected [user@]host (IPv6 or odd names: "
            "give an alias from ~/.ssh/config)"
        )
    remote = remote_dir(args.remote_dir)
    if remote is None:
        raise UsageError(
            f"--remote-dir {args.remote_dir!r}: expected an absolute path of letters, "
            "digits and ._+-/ (no spaces, no ..)"
        )
    args.remote_dir = remote
    if args.keep < 0:
        raise UsageError("--keep must be 0 (keep all) or more")
    if not _SERVICE.match(args.service):
        raise UsageError(f"--service {args.service!r}: not a systemd unit name")
    for opt in args.ssh_opt:
        if not is_ssh_option(opt):
            raise UsageError(f"--ssh-opt {opt!r}: expected KEY=VALUE, e.g. Port=2222")
    if args.mqtt is not None and (
        not args.mqtt.strip("/")
        or any(c in args.mqtt for c in "#+\0")
        or args.mqtt != args.mqtt.strip()
    ):
        raise UsageError(f"--mqtt {args.mqtt!r}: expected a base topic like sightwire/kitchen")
    if not 0 < args.mqtt_port < 65536:
        raise UsageError(f"--mqtt-port {args.mqtt_port}: not a port number")


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


@dataclass(frozen=True)
class Step:
    title: str
    argv: list[str]
    stdin: str | None = None


class Deployment:
    """The steps, printed (``--dry-run``) or run one after another with clear failures."""

    def __init__(self, args: argparse.Namespace, payload: Payload, transfer: str):
        self.args = args
        self.host: str = args.host
        self.payload = payload
        self.transfer = transfer
        self.stamp = utc_stamp()
        self.version = payload.version(self.stamp)
        self.remote_dir: str = args.remote_dir
        self.partial = f"{self.remote_dir}/{self.version}{PARTIAL}"

    def steps(self, remote: Remote) -> dict[str, Step]:
        """Every command of a deployment, in order; the dry run prints these very ones."""
        root, files = self.payload.root.resolve(), self.payload.files
        copy = (
            remote.rsync(root, self.partial)
            if self.transfer == "rsync"
            else remote.scp(root, files, self.partial)
        )
        q = shlex.quote
        steps = {
            "prepare": Step(
                "make the new version directory",
                remote.ssh(_remote_prepare(self.remote_dir, self.partial)),
            ),
            "copy": Step(f"copy {len(files)} files with {self.transfer}", copy),
            "verify": Step(
                "verify the sha256s on the Pi (stdin: the lines below)",
                remote.ssh(f"cd -- {q(self.partial)} && sha256sum --check --strict --quiet -"),
                self.payload.checksums,
            ),
            "switch": Step(
                f"switch {CURRENT} atomically",
                remote.ssh(_remote_switch(self.remote_dir, self.version)),
            ),
        }
        reload = _remote_reload(self.args)
        if reload is not None:
            steps["reload"] = Step("reload the daemon", remote.ssh(reload))
        if self.args.keep:
            steps["list"] = Step(
                f"list versions; those beyond --keep {self.args.keep} are then removed (rm -rf)",
                remote.ssh(f"ls -1A -- {q(self.remote_dir)}"),
            )
        return steps

    def print_plan(self) -> None:
        print("# dry run: nothing is copied or changed. A real run also shares one SSH")
        print("# connection between the steps (-o ControlMaster=auto -o ControlPath=...).")
        print(f"# new version: {self.remote_dir}/{self.version}")
        for i, step in enumerate(self.steps(Remote(self.host, self.args.ssh_opt, None)).values()):
            print(f"# {i + 1}. {step.title}")
            print(shlex.join(step.argv))
            for line in (step.stdin or "").splitlines():
                print(f"#   {line}")

    def run(self) -> None:
        if os.name == "nt":  # no connection sharing in Windows' OpenSSH
            self._run(Remote(self.host, self.args.ssh_opt, None))
            return
        with tempfile.TemporaryDirectory(prefix="sightwire-ssh-") as control:
            remote = Remote(self.host, self.args.ssh_opt, Path(control))
            try:
                self._run(remote)
            finally:
                call(remote.close())

    def _run(self, remote: Remote) -> None:
        steps = self.steps(remote)
        self._do("preparing", steps["prepare"])
        mib = self.payload.size / (1 << 20)
        count = len(self.payload.files)
        print(f"copying {count} files ({mib:.1f} MiB) to {self.host} with {self.transfer}")
        self.land(remote, steps)
        print(f"verified on {self.host}: sha256 of {count} files")
        self._do("switching", steps["switch"])
        print(f"{CURRENT} → {self.remote_dir}/{self.version}")
        if "reload" in steps:
            self._reload(steps["reload"])
        else:
            print("daemon not reloaded (--no-reload)")
        if "list" in steps:
            self._prune(remote, steps["list"])

    def land(self, remote: Remote, steps: dict[str, Step]) -> None:
        """Copy, then verify on the Pi; a copy that fails either is removed (best effort)."""
        try:
            self._do("copying", steps["copy"])
            self._verify(steps["verify"])
        except DeployError:
            call(remote.ssh(f"rm -rf -- {shlex.quote(self.partial)}"))
            raise

    def _verify(self, step: Step) -> None:
        check = call(step.argv, stdin=step.stdin)
        if check.returncode == 255:
            raise DeployError(f"verifying on {self.host} failed: ssh: {check.last_line()}")
        if check.returncode != 0:
            bad = [ln for ln in check.stdout.splitlines() if "FAILED" in ln]
            raise DeployError(
                f"the copy on {self.host} does not match ({'; '.join(bad) or check.last_line()}): "
                "removed it; the running model is unchanged"
            )

    def _reload(self, step: Step) -> None:
        result = call(step.argv)
        if result.returncode != 0:
            why = result.last_line()
            if "mosquitto_pub" in why and "not found" in why:
                why = "mosquitto_pub is missing there (sudo apt install mosquitto-clients)"
            elif "password is required" in why:
                why = (
                    "sudo wants a password there: run `sudo systemctl restart "
                    f"{self.args.service}` on the Pi, or use --mqtt"
                )
            raise DeployError(
                f"new model in place ({CURRENT} → {self.version}) but the reload failed: {why}"
            )
        if self.args.mqtt is not None:
            print(f"published {self.args.mqtt.strip('/')}/cmd/reload")
        else:
            print(
                f"restarted {self.args.service}; logs: ssh {self.host} journalctl -u sightwire -f"
            )

    def _prune(self, remote: Remote, step: Step) -> None:
        listing = call(step.argv)
        if listing.returncode != 0:
            log.warning("could not list %s on the Pi: %s", self.remote_dir, listing.last_line())
            return
        doomed = prunable(listing.stdout.split(), self.version, self.args.keep, self.stamp)
        if not doomed:
            return
        paths = " ".join(shlex.quote(f"{self.remote_dir}/{name}") for name in doomed)
        result = call(remote.ssh(f"rm -rf -- {paths}"))
        if result.returncode != 0:
            log.warning("could not remove old versions: %s", result.last_line())
        else:
            print(f"removed {len(doomed)} old version(s): {', '.join(doomed)}")

    def _do(self, what: str, step: Step) -> Result:
        result = call(step.argv, stdin=step.stdin)
        if result.returncode == 0:
            return result
        why = result.last_line()
        if what == "preparing" and result.returncode in _PREPARE_FAILURES:
            why = _PREPARE_FAILURES[result.returncode].format(dir=self.remote_dir)
        elif step.argv[0] == "rsync" and "command not found" in result.stderr:
            why = (
                "rsync is not installed on the Pi (sudo apt install rsync there, or --transfer scp)"
            )
        elif result.returncode == 255 and step.argv[0] == "ssh":
            why = f"ssh: {why}"
        raise DeployError(f"{what} on {self.host} failed: {why}")


def run(args: argparse.Namespace) -> int:
    validate(args)
    transfer = pick_transfer(args.transfer)
    with open_bundle(args.bundle) as bundle:
        payload = payload_of(bundle)
        mib = payload.size / (1 << 20)
        print(
            f"bundle {payload.name!r}: {len(payload.files)} files, {mib:.1f} MiB, "
            f"{len(bundle.labels)} labels, {'/'.join(bundle.models)} model; sha256 checked"
        )
        deployment = Deployment(args, payload, transfer)
        if args.dry_run:
            deployment.print_plan()
        else:
            deployment.run()
    return 0
