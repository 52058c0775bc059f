"""``sightwire pull HOST-or-DIR --inbox DIR``: fetch the frames a device kept.

Why each step is the way it is (layout: docs/contracts.md, "Kept frames"):

1. **List with checksums on the device**: ``sha256sum`` of every ``<id>.jpg`` and
   ``<id>.json`` in the store, computed there (one ssh call). Only ids whose sidecar
   exists count; names starting with ``.`` are writes in progress and never touched.
2. **Copy** those pairs with the system's ``rsync`` over the same SSH options as
   ``sightwire deploy`` (``device.remote``), into ``INBOX/.incoming/<source>/``, so a
   half copy is never in the inbox.
3. **Verify here**: size and sha256 of both files against the device's listing. A pair
   that does not match stays on the device and is listed; the next pull tries again.
4. **Move** the intact pairs into ``INBOX/<source>/`` (the sidecar last, so a review
   running meanwhile sees a pair only when it is whole), then **remove them on the
   device**, the ``.jpg`` before the ``.json`` as the contract asks, and only them.

A sidecar that is not the expected JSON or a JPEG that does not decode arrived intact
all the same: it moves to the inbox, is listed in one line, and ``sightwire review``
lists it again; it is removed from the device like the rest, where it would only be
listed at every pull. A folder (a copied SD card, a mounted share) is pulled the same
way, with the checksums computed here before the copy.

An **orphan sidecar** (an ``<id>.json`` whose ``.jpg`` is gone: a pull cut short between
its two removals, or an image deleted by hand; the daemon never leaves one, it writes the
``.jpg`` first and evicts the ``.json`` first) has nothing to pull and is named in one
line each and counted in the summary. Where the inbox already holds its whole frame with
the same sidecar (the cut-short pull), it is removed like a pulled one: nothing is lost.
Any other is left there (the daemon removes such halves at its next start): a sidecar
may hold the only record of an operator's label, and pull removes only what arrived.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import logging
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from device.errors import SightwireError, UsageError, one_line, os_error_line
from device.keep_store import KEPT_NAME
from device.remote import Remote, call, is_host, is_ssh_option, remote_dir
from device.review.frames import SidecarError, frame_of, jpeg_problem
from device.review.labelling import DISCARDED, REVIEWED

HELP = (
    "Fetch the frames a device kept (over SSH with rsync, or from a folder) into an inbox, "
    "verify each by sha256 and remove it from the device only once it arrived intact."
)
log = logging.getLogger(__name__)

DEFAULT_REMOTE_DIR = "/var/lib/sightwire/kept"
INCOMING = ".incoming"
INBOX_HISTORY = f"INBOX/{REVIEWED}, INBOX/{DISCARDED}"
# What a kept frame's file may be called: no shell, rsync or xargs needs quoting here.
# Only what the keep store names (``20261122T100000123Z-000042.jpg``/``.json``): a user's
# own ``a.jpg`` + ``a.json`` in that folder is not a kept frame, not taken, not removed.
_NAME = KEPT_NAME
_LIST = (
    "cd -- {dir} 2>/dev/null || exit 3; command -v sha256sum >/dev/null || exit 5; "
    'for f in *.jpg *.json; do [ -f "$f" ] && printf \'%s\\n\' "$f"; done '
    "| xargs -r sha256sum --; true"
)


class PullError(SightwireError):
    """A pull that cannot start or whose transport failed; the device keeps its frames."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="HOST-or-DIR",
        help="the device ([user@]host or an ~/.ssh/config alias), or a folder of kept frames",
    )
    parser.add_argument("--inbox", required=True, help="where frames land, under INBOX/<source>/")
    parser.add_argument(
        "--remote-dir",
        default=DEFAULT_REMOTE_DIR,
        help=f"the kept-frame store on the device (keep.path; default {DEFAULT_REMOTE_DIR})",
    )
    parser.add_argument(
        "--ssh-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an ssh -o option, e.g. Port=2222 or IdentityFile=~/.ssh/pi (repeatable)",
    )
    parser.add_argument(
        "--no-remove",
        action="store_true",
        help="copy and verify, but leave the frames on the device (or in the folder)",
    )


@dataclass
class Report:
    pulled: list[str] = field(default_factory=list)  # ids
    bytes: int = 0
    problems: list[str] = field(default_factory=list)  # one line each
    left: list[str] = field(default_factory=list)  # ids left at the source, with why
    orphans: list[str] = field(default_factory=list)  # sidecars without a .jpg left, with why
    seen: list[str] = field(default_factory=list)  # ids reviewed or discarded here already
    cleared: list[str] = field(default_factory=list)  # such sidecars removed: the inbox has all


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_listing(text: str) -> dict[str, str]:
    """``sha256sum`` output → file name → sha256, for names a kept frame may have."""
    sums = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) == 64 and _NAME.fullmatch(name):
            sums[name] = digest
    return sums


def complete_ids(sums: dict[str, str]) -> list[str]:
    """Ids with both files listed: a ``.jpg`` alone is a write in progress."""
    return sorted(n[:-5] for n in sums if n.endswith(".json") and f"{n[:-5]}.jpg" in sums)


def orphan_sidecars(sums: dict[str, str]) -> list[str]:
    """Sidecars listed without their ``.jpg``: never a write in progress (the ``.jpg`` is
    written first), but a pull cut short after removing the ``.jpg``, or a hand's delete."""
    return sorted(n for n in sums if n.endswith(".json") and f"{n[:-5]}.jpg" not in sums)


def sort_orphans(
    names: list[str], sums: dict[str, str], dest: Path, remove: bool, report: Report
) -> None:
    """``cleared``: orphan sidecars whose whole frame, this very sidecar included, is in
    ``dest`` already; the others are listed in ``orphans`` and stay at the source."""
    for name in names:
        jpeg, sidecar = dest / f"{name[:-5]}.jpg", dest / name
        landed = jpeg.is_file() and sidecar.is_file() and sha256_of(sidecar) == sums[name]
        if landed and remove:
            report.cleared.append(name)
        elif landed:
            report.orphans.append(f"{name}: its frame is in {dest} already; left (--no-remove)")
        else:
            report.orphans.append(
                f"{name} has no .jpg beside it: nothing to pull, left there "
                "(the daemon removes such a half at its next start)"
            )


class FolderSource:
    """Kept frames in a local folder: listed and hashed here, copied with shutil."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.name = folder.resolve().name or "folder"

    def listing(self) -> dict[str, str]:
        names = (p.name for p in self.folder.iterdir() if p.is_file())
        return {n: sha256_of(self.folder / n) for n in names if _NAME.fullmatch(n)}

    def fetch(self, names: list[str], staging: Path) -> None:
        for name in names:
            try:
                shutil.copyfile(self.folder / name, staging / name)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                    # Every other file would fail the same way: one line, nothing removed.
                    why = (exc.strerror or one_line(exc)).lower()
                    raise PullError(
                        f"{staging.parent.parent}: {why} while copying {name}; nothing "
                        f"was removed from {self.folder}"
                    ) from None
                log.warning("could not copy %s: %s", name, one_line(exc))

    def remove(self, names: list[str]) -> None:
        for name in names:
            try:
                (self.folder / name).unlink(missing_ok=True)
            except OSError as exc:
                raise PullError(
                    f"frames copied and verified, but removing them from {self.folder} "
                    f"failed: {os_error_line(exc)} (the next pull skips what the inbox has)"
                ) from None

    def close(self) -> None:
        pass


class SshSource:
    """Kept frames on a device: listed with ``sha256sum`` there, copied with rsync."""

    def __init__(self, host: str, remote_dir: str, ssh_opts: list[str]):
        self.host = host
        self.dir = remote_dir
        self.name = host.rpartition("@")[2]
        self._control = tempfile.TemporaryDirectory(prefix="sightwire-ssh-")
        control = None if os.name == "nt" else Path(self._control.name)
        self.remote = Remote(host, ssh_opts, control)

    def listing(self) -> dict[str, str]:
        result = call(self.remote.ssh(_LIST.format(dir=shlex.quote(self.dir))))
        if result.returncode == 3:
            raise PullError(f"{self.host}:{self.dir}: no such folder (keep.path; --remote-dir)")
        if result.returncode == 5:
            raise PullError(f"sha256sum is missing on {self.host} (coreutils)")
        if result.returncode != 0:
            raise PullError(f"listing {self.host}:{self.dir} failed: {result.last_line()}")
        return parse_listing(result.stdout)

    def fetch(self, names: list[str], staging: Path) -> None:
        argv = [
            "rsync", "-t", "--files-from=-", "-e", shlex.join(["ssh", *self.remote.opts]),
            f"{self.host}:{self.dir}/", f"{staging}/",
        ]  # fmt: skip
        result = call(argv, stdin="".join(f"{n}\n" for n in names))
        # 23/24: some files failed or vanished (evicted meanwhile): verification tells.
        if result.returncode not in (0, 23, 24):
            raise PullError(f"copying from {self.host} failed: {result.last_line()}")

    def remove(self, names: list[str]) -> None:
        command = f"cd -- {shlex.quote(self.dir)} && xargs -r rm -f --"
        result = call(self.remote.ssh(command), stdin="".join(f"{n}\n" for n in names))
        if result.returncode != 0:
            raise PullError(
                f"frames copied and verified, but removing them on {self.host} failed: "
                f"{result.last_line()} (the next pull skips what the inbox has)"
            )

    def close(self) -> None:
        if os.name != "nt":
            call(self.remote.close())
        self._control.cleanup()


def _problem(dest: Path, frame_id: str) -> str | None:
    jpeg, sidecar = dest / f"{frame_id}.jpg", dest / f"{frame_id}.json"
    try:
        frame_of(dest, jpeg, sidecar)
    except (SidecarError, OSError) as exc:
        return f"{sidecar}: malformed sidecar: {one_line(exc)}"
    why = jpeg_problem(jpeg)
    return f"{jpeg}: {why}" if why else None


def land(
    ids: Iterable[str], sums: dict[str, str], staging: Path, dest: Path, report: Report
) -> list[str]:
    """Verify the staged pairs and move the intact ones into ``dest``; returns their ids."""
    landed = []
    for frame_id in ids:
        names = [f"{frame_id}.jpg", f"{frame_id}.json"]
        bad = [n for n in names if not (staging / n).is_file() or sha256_of(staging / n) != sums[n]]
        if bad:
            report.left.append(f"{frame_id}: did not arrive intact ({', '.join(bad)})")
            continue
        clash = [n for n in names if (dest / n).exists() and sha256_of(dest / n) != sums[n]]
        if clash:
            report.left.append(f"{frame_id}: {dest / clash[0]} exists with other content")
            continue
        for name in names:  # the sidecar last: a pair is whole once its .json is there
            report.bytes += (staging / name).stat().st_size
            os.replace(staging / name, dest / name)
        landed.append(frame_id)
        problem = _problem(dest, frame_id)
        if problem:
            report.problems.append(problem)
    return landed


def reviewed_here(ids: list[str], sums: dict[str, str], inbox: Path, name: str) -> list[str]:
    """Ids whose frame was labelled or discarded in ``review`` already (its very sidecar
    is in ``INBOX/.reviewed/`` or ``.discarded/``): pulled again (``--no-remove``, or a
    removal that failed) it would come back to be labelled twice."""
    done = []
    for frame_id in ids:
        # review parks a sidecar as <id>-2.json when <id>.json is taken there
        parked = (
            path
            for folder in (REVIEWED, DISCARDED)
            for path in (inbox / folder / name).glob(f"{frame_id}*.json")
            if path.stem == frame_id or path.stem.startswith(f"{frame_id}-")
        )
        if any(sha256_of(path) == sums[f"{frame_id}.json"] for path in parked):
            done.append(frame_id)
    return done


def pull(source: FolderSource | SshSource, inbox: Path, remove: bool) -> Report:
    report = Report()
    sums = source.listing()
    ids = complete_ids(sums)
    report.seen = reviewed_here(ids, sums, inbox, source.name)
    ids = [i for i in ids if i not in set(report.seen)]
    if remove and report.seen:  # in the inbox's history already: done on the device
        source.remove([f"{i}.jpg" for i in report.seen] + [f"{i}.json" for i in report.seen])
    dest = inbox / source.name
    staging = inbox / INCOMING / source.name
    sort_orphans(orphan_sidecars(sums), sums, dest, remove, report)
    if not ids:
        if report.cleared:
            source.remove(report.cleared)
        return report
    staging.mkdir(parents=True, exist_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    try:  # a full disk stops the fetch: its partial copies go too
        source.fetch([n for i in ids for n in (f"{i}.jpg", f"{i}.json")], staging)
        report.pulled = land(ids, sums, staging, dest, report)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if remove and (report.pulled or report.cleared):
        # Every .jpg before any .json: a pair without its sidecar no longer counts.
        jpegs = [f"{i}.jpg" for i in report.pulled]
        source.remove(jpegs + [f"{i}.json" for i in report.pulled] + report.cleared)
    return report


def source_of(args: argparse.Namespace) -> FolderSource | SshSource:
    folder = Path(args.source).expanduser()
    if folder.is_dir():
        return FolderSource(folder)
    if "/" in args.source or not is_host(args.source):
        raise PullError(f"{args.source!r}: neither a folder here nor [user@]host")
    remote = remote_dir(args.remote_dir)
    if remote is None:
        raise UsageError(
            f"--remote-dir {args.remote_dir!r}: expected an absolute path of letters, "
            "digits and ._+-/ (no spaces, no ..)"
        )
    for opt in args.ssh_opt:
        if not is_ssh_option(opt):
            raise UsageError(f"--ssh-opt {opt!r}: expected KEY=VALUE, e.g. Port=2222")
    if not shutil.which("ssh") or not shutil.which("rsync"):
        raise PullError("pull needs ssh and rsync here (apt install openssh-client rsync)")
    return SshSource(args.source, remote, args.ssh_opt)


def check_folder_source(source: FolderSource, inbox: Path) -> None:
    """A folder inside the inbox is where pulled frames are: pulling it would land each
    frame on itself and then remove it."""
    folder, box = source.folder.resolve(), inbox.resolve()
    if folder == box or box in folder.parents:
        raise PullError(
            f"{source.folder} is inside the inbox {inbox}: its frames are pulled already "
            "(copy a card to a folder outside the inbox, or pass another --inbox)"
        )


def run(args: argparse.Namespace) -> int:
    inbox = Path(args.inbox).expanduser()
    source = source_of(args)
    try:
        if isinstance(source, FolderSource):
            check_folder_source(source, inbox)
        inbox.mkdir(parents=True, exist_ok=True)
        report = pull(source, inbox, remove=not args.no_remove)
    except OSError as exc:  # the file is named in the line: not always in the inbox
        raise PullError(
            os_error_line(exc) if exc.filename else f"{inbox}: {one_line(exc)}"
        ) from None
    finally:
        source.close()
    for line in report.problems:
        print(f"unusable: {line}")
    for line in report.left:
        print(f"left on the device: {line}")
    for line in report.orphans:
        print(f"orphan sidecar: {line}")
    if report.seen:
        done = "removed there" if not args.no_remove else "left there (--no-remove)"
        print(
            f"skipped {len(report.seen)} frame(s) labelled or discarded in review already "
            f"({INBOX_HISTORY}), {done}"
        )
    for name in report.cleared:
        print(
            f"orphan sidecar: {name}: its frame is in {inbox / source.name} already "
            "(a pull cut short), so removed there"
        )
    where = "left in place (--no-remove)" if args.no_remove else "removed there"
    # What stays at the source counts all of it: frames and orphan sidecars alike.
    left = f"{len(report.left) + len(report.orphans)} left on the device"
    if report.orphans:
        left += f" ({len(report.orphans)} orphan sidecar(s) without their .jpg)"
    if report.cleared:
        n = len(report.cleared)
        left += f"; {n} orphan sidecar(s) removed (their frames were pulled before)"
    print(
        f"pulled {len(report.pulled)} frame(s) ({report.bytes / (1 << 20):.1f} MiB) from "
        f"{source.name} into {inbox / source.name}, {where}; {len(report.problems)} unusable, "
        f"{left}"
    )
    # Orphans leave 0: no pull can fetch an image that is gone, and the next run would fail too.
    return 1 if report.left else 0
