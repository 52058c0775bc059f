"""``sightwire deploy BUNDLE --host pi@raspberrypi.local``: ship a bundle to a Pi, switch to it.

Why each step is the way it is:

1. The bundle is checked here first, as ``cmd/update`` checks one on the device:
   ``load_bundle`` verifies manifest.json's sha256s, and every model the Pi could run
   on its CPU (int8, float) is opened and classifies a blank frame (``--no-verify``
   skips that, for a machine without a TFLite runtime). A bundle the daemon would refuse
   never leaves the workstation, so ``current`` never names one.
2. When ``current`` on the Pi already holds this very content (its name carries the
   content id and ``sha256sum -c`` of the files passes there, with no file more),
   nothing is copied, switched or restarted, as ``cmd/update`` answers "already
   installed" (``--force`` deploys it again).
3. It is copied with the system's ``rsync`` over SSH (``scp`` where rsync is missing)
   into a new directory ``<UTC stamp>-<name>-<content id>.partial`` beside the
   daemon's ``current`` symlink, so the running model is never touched.
4. The copy is verified on the Pi with ``sha256sum -c``, fed the checksums computed
   here; a truncated or altered copy is removed and never goes live.
5. ``current`` is switched atomically: ``ln -sfn`` makes a new symlink beside it and
   ``mv -T`` renames it over ``current`` (one rename(2)), so the daemon sees the old
   model or the new one, never none; ``previous`` is pointed at what ``current`` named
   before (unless that has the same content), the same way, so ``{"rollback": true}``
   and ``sightwire fleet`` go back to the model that ran before the deploy.
6. The daemon is told: ``sudo systemctl restart`` (default), or ``<base>/cmd/reload``
   published with ``mosquitto_pub`` on the Pi (``--mqtt``); then old versions beyond
   ``--keep`` are removed (never what ``current`` or ``previous`` names), and
   ``.partial`` copies nothing was written to for an hour (a deploy that died; one
   still arriving is left alone).

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
from dataclasses import dataclass
from pathlib import Path

from device.deploy_payload import Payload, check_models, open_bundle, payload_of, sha256_checked
from device.errors import UsageError
from device.models_dir import (
    ABANDONED_MINUTES,
    CURRENT,
    PARTIAL,
    PREVIOUS,
    prunable,
    utc_stamp,
)
from device.remote import (
    _PREPARE_FAILURES,
    PARTIAL_GONE,
    PREVIOUS_FAILED,
    SAME_AS_CURRENT,
    DeployError,
    Remote,
    Result,
    _remote_list,
    _remote_prepare,
    _remote_reload,
    _remote_switch,
    call,
    is_host,
    is_ssh_option,
    parse_listing,
    pick_transfer,
    remote_dir,
)

HELP = (
    "Check a bundle (directory or .zip) here, copy it to a Raspberry Pi over SSH, verify it "
    "there, switch the daemon's 'current' model atomically and restart or reload the daemon."
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
        "--force",
        action="store_true",
        help="deploy even when the Pi's 'current' already holds this very bundle (by "
        "default that changes nothing: no copy, no switch, no restart)",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip opening the model here (for a machine without a TFLite runtime: a model "
        "the daemon cannot load is then found only after the switch); sha256s are still "
        "checked",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the bundle, print the commands, change nothing",
    )


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
        if self.args.force:
            prepare = Step(
                "make the new version directory",
                remote.ssh(_remote_prepare(self.remote_dir, self.partial)),
            )
        else:
            same_as = (self.payload.content_id, len(files))
            prepare = Step(
                f"unless {CURRENT} already holds these files (sha256sum -c of the lines "
                "below there), make the new version directory",
                remote.ssh(_remote_prepare(self.remote_dir, self.partial, same_as)),
                self.payload.checksums,
            )
        steps = {
            "prepare": prepare,
            "copy": Step(f"copy {len(files)} files with {self.transfer}", copy),
            "verify": Step(
                "verify the sha256s on the Pi (sha256sum -c of the lines computed here)",
                remote.ssh(f"cd -- {q(self.partial)} && sha256sum --check --strict --quiet -"),
                self.payload.checksums,
            ),
            "switch": Step(
                f"switch {CURRENT} atomically; {PREVIOUS} → what {CURRENT} named before",
                remote.ssh(_remote_switch(self.remote_dir, self.version, self.payload.content_id)),
            ),
        }
        reload = _remote_reload(self.args)
        if reload is not None:
            steps["reload"] = Step("reload the daemon", remote.ssh(reload))
        if self.args.keep:
            steps["list"] = Step(
                f"list versions and links; versions beyond --keep {self.args.keep} (never "
                f"{CURRENT}'s or {PREVIOUS}'s) and .partial copies untouched for "
                f"{ABANDONED_MINUTES} minutes are then removed (rm -rf)",
                remote.ssh(_remote_list(self.remote_dir)),
            )
        return steps

    def print_plan(self) -> None:
        print("# dry run: nothing is copied or changed. A real run also shares one SSH")
        print("# connection between the steps (-o ControlMaster=auto -o ControlPath=...).")
        print(f"# new version: {self.remote_dir}/{self.version}")
        shown: int | None = None  # the step whose stdin was printed
        for i, step in enumerate(self.steps(Remote(self.host, self.args.ssh_opt, None)).values()):
            print(f"# {i + 1}. {step.title}")
            print(shlex.join(step.argv))
            if step.stdin is not None and shown is not None:
                print(f"# (stdin: the same lines as step {shown})")
                continue
            for line in (step.stdin or "").splitlines():
                print(f"#   {line}")
            shown = i + 1 if step.stdin is not None else shown

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
        mib = self.payload.size / (1 << 20)
        count = len(self.payload.files)
        prepared = self._do("preparing", steps["prepare"], also_ok=SAME_AS_CURRENT)
        if prepared.returncode == SAME_AS_CURRENT:
            same = (prepared.stdout.strip().splitlines() or ["?"])[-1]
            print(
                f"already installed: {CURRENT} on {self.host} names {same}, which holds these "
                f"very {count} files (sha256 checked there); nothing copied or switched "
                "(--force deploys it again)"
            )
            # The daemon is still told: the deploy before may have switched without a
            # reload (--no-reload, or a reload that failed), and it is asked to run this.
            self.version = same
        else:
            print(f"copying {count} files ({mib:.1f} MiB) to {self.host} with {self.transfer}")
            self.land(remote, steps)
            print(f"verified on {self.host}: sha256 of {count} files")
            self._switch(steps["switch"])
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
            if call(remote.ssh(f"test -d {shlex.quote(self.partial)}")).returncode == 1:
                raise DeployError(self._gone("while it was being copied")) from None
            call(remote.ssh(f"rm -rf -- {shlex.quote(self.partial)}"))
            raise

    def _gone(self, when: str) -> str:
        return (
            f"copying to {self.host} failed: {self.partial} was removed there {when} (by "
            "hand, or by another deploy that took it for abandoned: nothing written to it for "
            f"{ABANDONED_MINUTES} minutes); nothing was switched, the running model is "
            "unchanged; deploy again"
        )

    def _switch(self, step: Step) -> None:
        result = call(step.argv)
        if result.returncode == PARTIAL_GONE:
            raise DeployError(self._gone("before the switch"))
        if result.returncode not in (0, PREVIOUS_FAILED):
            self._do("switching", step, result=result)
        print(f"{CURRENT} → {self.remote_dir}/{self.version}")
        if result.returncode == PREVIOUS_FAILED:
            log.warning(
                "%s was not updated (%s): a rollback would not come back to the model replaced now",
                PREVIOUS,
                result.last_line(),
            )
        for line in result.stdout.splitlines():
            if line.startswith(f"{PREVIOUS} "):
                old = line.split(" ", 1)[1]
                print(f"{PREVIOUS} → {self.remote_dir}/{old} (what a rollback goes back to)")

    def _verify(self, step: Step) -> None:
        check = call(step.argv, stdin=step.stdin)
        if check.returncode == 255:
            raise DeployError(f"verifying on {self.host} failed: {_ssh_said(check.last_line())}")
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
        seen = parse_listing(listing.stdout)
        doomed = [
            name
            for name in prunable(
                seen.names,
                self.version,
                self.args.keep,
                previous=seen.previous,
                abandoned=seen.abandoned,
            )
            # Whatever the links name now (another deploy or cmd/update may have moved them).
            if name not in (seen.current, seen.previous)
        ]
        if not doomed:
            return
        paths = " ".join(shlex.quote(f"{self.remote_dir}/{name}") for name in doomed)
        result = call(remote.ssh(f"rm -rf -- {paths}"))
        if result.returncode != 0:
            log.warning("could not remove old versions: %s", result.last_line())
            return
        old = [name for name in doomed if not name.endswith(PARTIAL)]
        dead = [name for name in doomed if name.endswith(PARTIAL)]
        if old:
            print(f"removed {len(old)} old version(s): {', '.join(old)}")
        if dead:
            print(
                f"removed {len(dead)} abandoned copy(ies), nothing written to them for "
                f"{ABANDONED_MINUTES} minutes: {', '.join(dead)}"
            )

    def _do(
        self,
        what: str,
        step: Step,
        also_ok: int | None = None,
        result: Result | None = None,
    ) -> Result:
        """Run ``step`` (or explain the ``result`` it had): a failure is one line."""
        result = result or call(step.argv, stdin=step.stdin)
        if result.returncode in (0, also_ok):
            return result
        why = result.last_line()
        if what == "preparing" and result.returncode in _PREPARE_FAILURES:
            why = _PREPARE_FAILURES[result.returncode].format(dir=self.remote_dir)
        elif step.argv[0] == "rsync" and "command not found" in result.stderr:
            why = (
                "rsync is not installed on the Pi (sudo apt install rsync there, or --transfer scp)"
            )
        elif result.returncode == 255 and step.argv[0] == "ssh":
            why = _ssh_said(why)
        raise DeployError(f"{what} on {self.host} failed: {why}")


def _ssh_said(line: str) -> str:
    """ssh's own last line, named as ssh's once (its messages often start "ssh: ")."""
    return line if line.startswith("ssh:") else f"ssh: {line}"


def run(args: argparse.Namespace) -> int:
    validate(args)
    transfer = pick_transfer(args.transfer)
    with open_bundle(args.bundle) as bundle:
        payload = payload_of(bundle)
        ran = check_models(bundle, enabled=not args.no_verify)
        mib = payload.size / (1 << 20)
        print(
            f"bundle {payload.name!r}: {len(payload.files)} files, {mib:.1f} MiB, "
            f"{len(bundle.labels)} labels, {'/'.join(bundle.models)} model; "
            f"{sha256_checked(bundle)}; {ran}"
        )
        deployment = Deployment(args, payload, transfer)
        if args.dry_run:
            deployment.print_plan()
        else:
            deployment.run()
    return 0
