"""SSH, rsync and scp for ``sightwire deploy``: argument lists and the shell text run on the Pi.

Every command is an argument list (no local shell); what runs on the Pi is one string
per step, each word quoted with ``shlex.quote``, so no bundle name or path can become a
command. The steps share one SSH connection (OpenSSH connection sharing), so a password
is asked once. Output is captured in files, not pipes (see ``call``).
"""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from device.errors import SightwireError
from device.models_dir import ABANDONED_MINUTES, CURRENT, PARTIAL, PREVIOUS, version_ere

log = logging.getLogger(__name__)

# [user@]host or an ~/.ssh/config alias; never an option (a leading "-").
_HOST = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9][A-Za-z0-9._-]*$")
# Remote paths stay within characters no shell or rsync/scp parser treats specially.
_REMOTE_PATH = re.compile(r"^/[A-Za-z0-9._+/-]*$")
_SSH_OPTION = re.compile(r"^[A-Za-z][A-Za-z0-9]*=\S.*$")


def is_host(text: str) -> bool:
    """``[user@]host`` or an ssh alias that ssh cannot read as an option."""
    return bool(_HOST.match(text))


def remote_dir(text: str) -> str | None:
    """An absolute folder on the Pi without a trailing ``/`` (not ``/`` itself, no ``..``),
    or None where ``text`` is not one."""
    path = text.rstrip("/")
    if not path or not _REMOTE_PATH.match(path) or ".." in path.split("/"):
        return None
    return path


def is_ssh_option(text: str) -> bool:
    """``KEY=VALUE`` as ``ssh -o`` takes it."""
    return bool(_SSH_OPTION.match(text))


class DeployError(SightwireError):
    """A deployment that cannot go ahead or failed on the way; the Pi keeps its model."""


def pick_transfer(choice: str) -> str:
    if not shutil.which("ssh"):
        raise DeployError("ssh not found: install the OpenSSH client (apt install openssh-client)")
    if choice in ("auto", "rsync") and shutil.which("rsync"):
        return "rsync"
    if choice == "rsync":
        raise DeployError(
            "rsync not found here: install it (apt install rsync) or use --transfer scp"
        )
    if not shutil.which("scp"):
        raise DeployError("neither rsync nor scp found: install rsync or the OpenSSH client")
    if choice == "auto":
        log.info("rsync not found here: copying with scp")
    return "scp"


class Remote:
    """Builds the ssh/rsync/scp argument lists for one host, sharing one connection."""

    def __init__(self, host: str, ssh_opts: Sequence[str], control_dir: Path | None):
        self.host = host
        opts = [x for opt in ssh_opts for x in ("-o", opt)]
        # Where an option is given twice, ssh keeps the first: the user's come first.
        opts += ["-o", "ConnectTimeout=15"]
        if control_dir is not None:
            opts += [
                "-o", "ControlMaster=auto",
                "-o", f"ControlPath={control_dir}/%C",
                "-o", "ControlPersist=60",
            ]  # fmt: skip
        self.opts = opts

    def ssh(self, command: str) -> list[str]:
        return ["ssh", *self.opts, "--", self.host, command]

    def rsync(self, src: Path, dest: str) -> list[str]:
        # No -t: files and folders keep the Pi's own mtimes, which show a copy still
        # arriving (another deploy removes only .partial copies untouched for a while).
        return [
            "rsync", "-r", "--exclude=.*", "-e", shlex.join(["ssh", *self.opts]),
            f"{src}/", f"{self.host}:{dest}/",
        ]  # fmt: skip

    def scp(self, root: Path, files: Sequence[str], dest: str) -> list[str]:
        tops = sorted({rel.split("/")[0] for rel in files})
        return [
            "scp",
            "-q",
            "-r",
            *self.opts,
            *(str(root / t) for t in tops),
            f"{self.host}:{dest}/",
        ]

    def close(self) -> list[str]:
        return ["ssh", *self.opts, "-O", "exit", "--", self.host]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def last_line(self) -> str:
        lines = [ln.strip() for ln in (self.stderr + "\n" + self.stdout).splitlines() if ln.strip()]
        return lines[-1] if lines else f"exit status {self.returncode}"


def call(argv: list[str], stdin: str | None = None) -> Result:
    """Run one command, output captured in files, not pipes: an ssh connection master
    that stays in the background keeps a pipe open, which would block a pipe reader."""
    log.debug("+ %s", shlex.join(argv))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(
            argv,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
            check=False,
        )
        out.seek(0)
        err.seek(0)
        return Result(proc.returncode, out.read(), err.read())


# Exit codes of the shell text below, explained here rather than in remote shell text.
_PREPARE_FAILURES = {
    3: "{dir}: no such directory on the Pi (run deploy/install-pi.sh there first)",
    4: "{dir}: not writable by this user (install-pi.sh --deploy-user USER adds a user to "
    "group sightwire; it counts from the next login)",
    5: "sha256sum is missing on the Pi (coreutils)",
}
SAME_AS_CURRENT = 6  # prepare: `current` holds these very files; its name is on stdout
PARTIAL_GONE = 7  # switch: the .partial copy is not there any more
PREVIOUS_FAILED = 8  # switch: `current` switched, `previous` could not be updated


def _remote_prepare(remote_dir: str, partial: str, same_as: tuple[str, int] | None = None) -> str:
    """Check the folder, then make the ``.partial`` one. ``same_as`` (content id, file
    count): first see whether ``current`` already holds this content (its name carries
    the id, ``sha256sum -c`` of the listing on stdin passes, no other file is there): then
    print its name and exit ``SAME_AS_CURRENT``, making nothing."""
    q = shlex.quote
    r = q(remote_dir)
    checks = (
        f"test -d {r} || exit 3; test -w {r} || exit 4; command -v sha256sum >/dev/null || exit 5; "
    )
    make = f"mkdir -- {q(partial)}"
    if same_as is None:
        return checks + make
    cid, count = same_as
    same = (
        f"cur=$(readlink -- {q(f'{remote_dir}/{CURRENT}')}) && "
        + "printf '%s\\n' \"${cur##*/}\" | grep -Eqx "
        + q(version_ere(cid))
        + f' && (cd -- {r} && cd -- "$cur" && '
        + "sha256sum --check --strict --quiet - >/dev/null 2>&1 && "
        + "test \"$(find . -type f ! -path '*/.*' | wc -l)\" -eq "
        + f"{count}) && "
        + "{ printf '%s\\n' \"$cur\"; exit "
        + f"{SAME_AS_CURRENT}; }}; "
    )
    return checks + same + make


def _remote_switch(remote_dir: str, version: str, cid: str) -> str:
    """Make the ``.partial`` copy the version, point ``current`` at it and ``previous`` at
    what ``current`` named before, unless that holds the same content (``ModelStore.switch``
    does the same on the device): each link replaced by one rename. Prints
    ``previous <target>`` when ``previous`` moved."""
    q = shlex.quote
    partial, final = f"{remote_dir}/{version}{PARTIAL}", f"{remote_dir}/{version}"
    link, tmp_link = f"{remote_dir}/{CURRENT}", f"{remote_dir}/.{CURRENT}.new"
    prev, tmp_prev = f"{remote_dir}/{PREVIOUS}", f"{remote_dir}/.{PREVIOUS}.new"
    same_content = "printf '%s\\n' \"${old##*/}\" | grep -Eqx " + q(version_ere(cid))
    return "; ".join(
        [
            f"test -d {q(partial)} || exit {PARTIAL_GONE}",
            # Readable by the daemon whatever the umask on either machine was; writable
            # by the group, so the daemon's cmd/update can prune it (and deploy its own).
            f"chmod -R u=rwX,g=rwX,o=rX -- {q(partial)} && mv -T -- {q(partial)} {q(final)} "
            "|| exit 1",
            f"old=$(readlink -- {q(link)})",
            f"ln -sfn -- {q(version)} {q(tmp_link)} && mv -T -- {q(tmp_link)} {q(link)} || exit 1",
            # A dangling current (its folder removed by hand) does not become previous.
            f'if [ -n "$old" ] && [ -d {q(remote_dir)}/"${{old##*/}}" ] '
            f'&& [ "${{old##*/}}" != {q(version)} ] && ! {same_content}; then '
            f'ln -sfn -- "$old" {q(tmp_prev)} && mv -T -- {q(tmp_prev)} {q(prev)} '
            f"|| exit {PREVIOUS_FAILED}; " + "printf 'previous %s\\n' \"$old\"; fi",
        ]
    )


# Lines of the listing step that are not names in the folder: a name holds no "/".
_LINK_LINE = "/link "
_ABANDONED_LINE = "/abandoned "


def _remote_list(remote_dir: str) -> str:
    """The folder's names, what ``current`` and ``previous`` name, and the ``.partial``
    copies nothing has written to for ``ABANDONED_MINUTES`` (``find -mmin``, the Pi's
    clock: a copy still arriving keeps touching its files); marked lines start with ``/``."""
    return (
        f"cd -- {shlex.quote(remote_dir)} || exit 3; "
        f"for l in {CURRENT} {PREVIOUS}; do "
        + 't=$(readlink -- "$l") && printf \''
        + _LINK_LINE
        + '%s %s\\n\' "$l" "$t"; done; '
        + 'for p in *.partial; do [ -d "$p" ] && '
        + f'new=$(find "$p" -mmin -{ABANDONED_MINUTES} -print -quit) && [ -z "$new" ] && '
        + "printf '"
        + _ABANDONED_LINE
        + '%s\\n\' "$p"; done; ls -1A'
    )


@dataclass(frozen=True)
class Listing:
    """What the listing step saw: names in the folder, the names ``current`` and
    ``previous`` point at, and the abandoned ``.partial`` copies."""

    names: list[str]
    current: str | None
    previous: str | None
    abandoned: set[str]


def parse_listing(text: str) -> Listing:
    names: list[str] = []
    links: dict[str, str] = {}
    abandoned: set[str] = set()
    for line in text.splitlines():
        if line.startswith(_LINK_LINE):
            link, _, target = line[len(_LINK_LINE) :].partition(" ")
            links[link] = target.rstrip("/").rsplit("/", 1)[-1]
        elif line.startswith(_ABANDONED_LINE):
            abandoned.add(line[len(_ABANDONED_LINE) :])
        elif line:
            names.append(line)
    return Listing(names, links.get(CURRENT), links.get(PREVIOUS), abandoned)


def _remote_reload(args: argparse.Namespace) -> str | None:
    if args.no_reload:
        return None
    if args.mqtt is not None:
        topic = args.mqtt.strip("/") + "/cmd/reload"
        argv = ["mosquitto_pub", "-h", args.mqtt_host, "-p", str(args.mqtt_port), "-q", "1"]
        return shlex.join([*argv, "-t", topic, "-n"])
    # reset-failed first: a daemon that gave up (start limit) would refuse to restart.
    service = shlex.quote(args.service)
    return (
        f"sudo -n systemctl reset-failed {service} 2>/dev/null; sudo -n systemctl restart {service}"
    )
