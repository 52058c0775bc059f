"""The models folder a device runs from: version folders, ``current`` and ``previous``.

Two writers fill it: ``sightwire deploy`` from a workstation (shell commands over SSH)
and the daemon's own ``cmd/update`` (``device.ota``). Each must understand what the
other left behind, so the layout is defined once, here:

- A version folder is named ``<UTC stamp>-<name slug>-<content id>``. The stamp leads,
  so name order is age order; a ``.partial`` suffix marks one ``deploy`` is copying. One
  that nothing has written to for ``ABANDONED_MINUTES`` (its files' and folders' mtimes,
  on the device's clock) is taken for a deploy that died on the way and may be removed;
  another one may still be arriving, however old its stamp.
- The content id is 8 hex digits of the sha256 of the bundle's ``sha256sum`` listing
  (hidden files left out, as ``deploy`` never copies them): the same bundle gets the same
  id whichever way it arrives. The daemon installs by content: a bundle a kept version
  already holds is that version (switched to, or "already installed"), never a second
  folder, so ``previous`` and rollback always lead to a different model.
- ``current`` (the path ``model.path`` names) and ``previous`` are relative symlinks to
  version folders, each replaced by one ``rename(2)``: a crash leaves the old link or the
  new one, never none. Whoever switches ``current`` (``deploy`` or ``cmd/update``) points
  ``previous`` at what ``current`` named before, unless that holds the same content.
- Version folders are group-writable (``u=rwX,g=rwX,o=rX``) whoever made them: the
  daemon (``UMask=0027``) and the deploy user share group ``sightwire``, and each must be
  able to prune what the other installed.
- Pruning keeps the newest versions plus whatever ``current`` and ``previous`` name and
  the newest version whose content differs from the current one (what a rollback needs,
  even where copies of one bundle were made before installing by content), and never
  touches a name it did not make (a hand-copied model, a deploy still under way).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from device.bundle import sha256_file
from device.errors import BundleError, SightwireError

CURRENT = "current"
PREVIOUS = "previous"
PARTIAL = ".partial"
STAGING_PREFIX = ".staging-"
# A ``.partial`` folder nothing was written to for this long is a deploy that died.
ABANDONED_MINUTES = 60
# stamp, content id, and the in-progress suffix of a deploy still copying.
VERSION = re.compile(
    r"^(?P<stamp>\d{8}T\d{6}Z)-[A-Za-z0-9._-]+-(?P<cid>[0-9a-f]{8})(?P<partial>\.partial)?$"
)


class ModelsDirError(SightwireError):
    """A models folder without the layout above, or one this user cannot change."""


# --- names ----------------------------------------------------------------------------


def utc_stamp(now: datetime | None = None) -> str:
    """The leading part of a version name: UTC to the second, sortable as text."""
    return (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")


def version_name(name: str, cid: str, stamp: str) -> str:
    """``<stamp>-<slug>-<content id>``; the slug keeps only characters safe in a shell word."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:40] or "model"
    return f"{stamp}-{slug}-{cid}"


def version_ere(cid: str) -> str:
    """``VERSION`` for one content id, finished folders only, as a POSIX extended regular
    expression (``grep -Eqx``): how shell text on a device tells a version's content."""
    return f"[0-9]{{8}}T[0-9]{{6}}Z-[A-Za-z0-9._-]+-{cid}"


def is_version(name: str) -> bool:
    """A finished version folder's name (not a ``.partial`` one)."""
    match = VERSION.match(name)
    return bool(match) and not match.group("partial")


def cid_of(name: str | None) -> str | None:
    """The content id a finished version folder's name carries (None for other names)."""
    match = VERSION.match(name or "")
    return match.group("cid") if match and not match.group("partial") else None


# --- content --------------------------------------------------------------------------


def bundle_files(root: Path) -> list[str]:
    """Regular files under ``root`` as relative POSIX paths, hidden ones (.DS_Store, .git)
    left out; a symlink, or a name that would break a ``sha256sum`` line, is refused."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in [*dirnames, *filenames]:
            if (here / name).is_symlink():
                raise BundleError(f"{here / name}: a symlink; put the real file in the bundle")
        for name in sorted(f for f in filenames if not f.startswith(".")):
            if "\n" in name or "\\" in name:
                raise BundleError(
                    f"{here / name}: file name with a newline or backslash; rename it"
                )
            found.append((here / name).relative_to(root).as_posix())
    return found


def checksum_listing(
    root: Path, files: Sequence[str], known: Mapping[str, str] | None = None
) -> str:
    """``sha256sum -c`` input for ``files`` (one ``HASH  PATH`` line each); ``known``
    hashes (a verified manifest's) are used instead of reading those files again."""
    known = known or {}
    return "".join(f"{known.get(rel) or sha256_file(root / rel)}  {rel}\n" for rel in files)


def content_id(checksums: str) -> str:
    """8 hex digits naming a bundle's content: the sha256 of its checksum listing."""
    return hashlib.sha256(checksums.encode()).hexdigest()[:8]


def content_id_of(root: Path) -> str:
    return content_id(checksum_listing(root, bundle_files(root)))


# --- pruning --------------------------------------------------------------------------


def prunable(
    entries: Sequence[str],
    current: str | None,
    keep: int,
    previous: str | None = None,
    abandoned: Collection[str] = (),
) -> list[str]:
    """Names to delete: versions beyond the newest ``keep`` (0 keeps all) that neither
    ``current`` nor ``previous`` names nor are the newest with other content than
    ``current``'s; then the ``.partial`` copies among ``abandoned`` (found untouched for
    ``ABANDONED_MINUTES`` where they lie: a deploy that died on the way; a partial copy's
    name says nothing of whether it is still arriving). Anything else is the user's."""
    versions = sorted(e for e in entries if is_version(e))
    kept = set(versions[-keep:]) if keep > 0 else set(versions)
    pinned = {current, previous}
    own = cid_of(current)
    others = [v for v in versions if v != current and cid_of(v) != own]
    if own is not None and others:
        pinned.add(others[-1])  # the previous distinct version: what a rollback needs
    doomed = [v for v in versions if v not in kept and v not in pinned]
    doomed += sorted(
        e for e in entries if e in abandoned and (m := VERSION.match(e)) and m.group("partial")
    )
    return doomed


# --- the folder on this machine -------------------------------------------------------


class ModelStore:
    """The models folder here: version folders, ``current`` (``model.path``), ``previous``."""

    def __init__(self, link: Path):
        self.link = link
        self.root = link.parent

    @classmethod
    def of(cls, model_path: Path) -> ModelStore:
        link = Path(os.path.abspath(model_path.expanduser()))
        if not link.is_symlink():
            raise ModelsDirError(
                f"model.path {model_path} is not a symlink: updates need the layout "
                "`sightwire deploy` makes (model.path = <models>/current, a symlink to a "
                "version folder beside it, e.g. /var/lib/sightwire/models/current)"
            )
        if not os.access(link.parent, os.W_OK):
            raise ModelsDirError(f"{link.parent}: not writable by this user")
        return cls(link)

    def target(self, link: Path | None = None) -> str | None:
        link = link or self.link
        return os.readlink(link) if link.is_symlink() else None

    def new_staging(self) -> Path:
        """A fresh hidden folder for one update, on the same file system as the versions
        (so moving a bundle into place is one rename); leftovers of a crash are removed."""
        for old in self.root.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.root))

    def install(
        self, bundle_root: Path, name: str, now: datetime | None = None
    ) -> tuple[str, str | None]:
        """Switch to a verified bundle: (version, what ``current`` named before).

        By content: a kept version holding the same files is switched to instead of a
        new copy being made, and when that is the current one nothing changes and
        ``(version, version)`` comes back ("already installed")."""
        listing = checksum_listing(bundle_root, bundle_files(bundle_root))
        version = self.holding(listing)
        if version is None:
            version = version_name(name, content_id(listing), utc_stamp(now))
            target = self.root / version
            if not target.exists():
                share_tree(bundle_root)
                _fsync_tree(bundle_root)
                os.rename(bundle_root, target)
                _fsync(self.root)
        current = self.target()
        if current is not None and Path(current).name == version:
            return version, version
        return version, self.switch(version)

    def holding(self, listing: str) -> str | None:
        """The kept version whose files are exactly ``listing``'s (the current one first,
        then the newest): its name carries the content id, its files confirm it."""
        cid = content_id(listing)
        current = Path(self.target() or "").name
        names = sorted(
            (p.name for p in self.root.iterdir() if cid_of(p.name) == cid and p.is_dir()),
            key=lambda n: (n == current, n),
            reverse=True,
        )
        for name in names:
            try:
                if checksum_listing(self.root / name, bundle_files(self.root / name)) == listing:
                    return name
            except (OSError, BundleError):
                continue  # a damaged copy is not the same content
        return None

    def switch(self, version: str) -> str | None:
        """Point ``current`` at ``version`` atomically; ``previous`` at what it replaced,
        unless that has the same content (a copy made before installing by content):
        then ``previous`` keeps naming a different model."""
        old = self.target()
        _replace_link(self.root / ".current.ota", version, self.link)
        old_name = Path(old).name if old is not None else None
        own = cid_of(version)
        same = old_name == version or (own is not None and cid_of(old_name) == own)
        # A dangling current (its folder removed by hand) does not become previous.
        if old is not None and not same and (self.root / old).is_dir():
            _replace_link(self.root / ".previous.ota", old, self.root / PREVIOUS)
        _fsync(self.root)
        return old

    def rollback(self) -> tuple[str, str | None]:
        """Switch back to ``previous`` (which then names the version rolled back from)."""
        prev = self.target(self.root / PREVIOUS)
        if prev is None:
            raise ModelsDirError(f"no {self.root / PREVIOUS} link: nothing to roll back to")
        if not (self.root / prev).is_dir():
            raise ModelsDirError(f"the previous version {prev} is gone: nothing to roll back to")
        return prev, self.switch(prev)

    def prune(self, keep: int) -> list[str]:
        """Remove versions beyond the newest ``keep`` (never current nor previous)."""
        current, previous = (
            Path(t).name if t else None for t in (self.target(), self.target(self.root / PREVIOUS))
        )
        doomed = prunable([p.name for p in self.root.iterdir()], current, keep, previous=previous)
        for name in doomed:
            shutil.rmtree(self.root / name, ignore_errors=True)
        return doomed


def share_tree(root: Path) -> None:
    """``chmod -R u=rwX,g=rwX,o=rX`` (what ``deploy`` runs on the device): readable by the
    daemon and every user, writable by the group, whatever the umask (the unit's 0027,
    ``mkdtemp``'s 0700), so the deploy user can prune a version ``cmd/update`` made.
    Set-group-ID bits (the models folder's group, inherited) stay."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        if path.is_dir():
            path.chmod((mode & 0o7000) | 0o775)
        else:
            path.chmod(0o775 if mode & 0o111 else 0o664)


def _replace_link(tmp: Path, target: str, link: Path) -> None:
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Data and directory entries on disk before the switch makes them current."""
    for path in sorted(root.rglob("*"), reverse=True):
        _fsync(path)
    _fsync(root)
