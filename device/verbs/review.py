"""``sightwire review INBOX --data DATA_DIR``: label kept frames in a local web page.

The command serves a page (bound to 127.0.0.1 unless ``--host`` says otherwise) showing
the inbox's kept frames as a grid, grouped by what the model said and why the device
kept them, most uncertain first; keys 1..9, a click on a class or ``/`` and its name put
the selected frame into a class of DATA_DIR (into ``DATA_DIR/train/<class>/`` when
DATA_DIR is split as ``{train,val,test}/<class>/``), ``d`` discards it, ``u`` undoes the
tab's last action. What each action does to the
files and the provenance log is ``device.review.labelling``; files the page cannot use
are listed on it and here, once, at start.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import re
import webbrowser
from pathlib import Path

from device.errors import SightwireError, UsageError
from device.review.labelling import PROVENANCE, Labeller
from device.review.server import ReviewServer

HELP = (
    "Label kept frames (from `sightwire pull`) in a local web page: keys 1..9, a click on a "
    "class or / and its name move a frame into a class folder of DATA_DIR, d discards, "
    "u undoes; a provenance log records each."
)
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inbox", help="folder of kept frames (<id>.jpg + <id>.json), e.g. from pull"
    )
    parser.add_argument(
        "--data",
        required=True,
        metavar="DATA_DIR",
        help=f"the dataset: one folder per class, or your own split DATA_DIR/{{train,val,test}}/"
        f"<class>/ (labelled frames then go to train/); {PROVENANCE} records where each "
        "came from",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to serve on (default 127.0.0.1: this machine only; anyone who can "
        "reach another address and has the printed link can move files)",
    )
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free one)")
    parser.add_argument(
        "--no-browser", action="store_true", help="print the address, do not open a browser"
    )
    parser.add_argument(
        "--who", default=None, help="labeller's name in the provenance log (default: login name)"
    )


def _loopback(host: str) -> bool:
    host = host.strip().removeprefix("[").removesuffix("]")  # [::1] as ::1
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")  # "_": /etc/hosts aliases


def _host_form(host: str) -> bool:
    """An IPv4 or IPv6 address (``[::1]`` too) or a name as DNS spells one: letters,
    digits and inner hyphens between dots, not all digits at the end (``999.1.1.1``)."""
    host = host.strip().removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    return (
        0 < len(host) <= 253
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port < 65536:
        raise UsageError(f"--port {args.port}: not a port number")
    if not _host_form(args.host):
        raise UsageError(f"--host {args.host!r}: expected an IPv4 or IPv6 address or a host name")
    labeller = Labeller(Path(args.inbox), Path(args.data), args.who)
    found = labeller.scan()
    for problem in found.problems:
        print(f"cannot use {problem}")
    try:
        server = ReviewServer(labeller, args.host, args.port)
    except OSError as exc:
        raise SightwireError(f"cannot serve on {args.host}:{args.port}: {exc.strerror}") from None
    if not _loopback(args.host):
        log.warning(
            "serving on %s: other machines that reach it can label with the link", args.host
        )
    keys = ", ".join(f"{i + 1} {name}" for i, name in enumerate(labeller.classes[:9]))
    print(f"{len(found.frames)} frame(s) to label, {len(found.problems)} unusable; classes: {keys}")
    if labeller.layout.split:
        print(f"a split of your own: labelled frames go to {labeller.layout.train}/<class>/")
    print(f"review at {server.url}  (Ctrl-C to stop)", flush=True)
    for link in server.remote_urls:
        print(f"from other machines: {link}", flush=True)
    if not args.no_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0
