"""The ``sightwire`` command: one entry point, verbs from both halves.

Verbs are found through the ``sightwire.verbs`` entry points (``pyproject.toml``): each
maps a verb name to a module with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. So this package never names a trainer module, and a package that
adds verbs declares them in its own metadata.

``sightwire --help`` must list every verb without importing any verb module (TensorFlow
takes seconds to import, and a Pi has none): the one-line summary of each verb comes from
``SUMMARIES`` in the package that holds its module (``device.verbs``, ``trainer.verbs``),
whose ``__init__`` imports nothing heavy. A verb's own module is imported only when that
verb is run or asked for its ``--help``; a trainer verb on a machine without TensorFlow
then fails with one line naming the extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType

from device import __version__
from device.errors import SightwireError, UsageError, os_error_line

GROUP = "sightwire.verbs"
TRAIN_PACKAGES = {"tensorflow", "keras", "sklearn", "matplotlib", "keras_tuner", "tflite", "rich"}


@dataclass(frozen=True)
class Verb:
    """One verb of the command: its name, the module that implements it, its summary."""

    name: str
    module: str
    summary: str


def discover() -> dict[str, Verb]:
    """Every verb declared under the ``sightwire.verbs`` entry points, in declared order."""
    verbs: dict[str, Verb] = {}
    for ep in entry_points(group=GROUP):
        if ep.name not in verbs:  # the same distribution seen twice on sys.path
            verbs[ep.name] = Verb(ep.name, ep.module, _summary(ep.name, ep.module))
    return verbs


def _summary(name: str, module: str) -> str:
    """The verb's line from its package's ``SUMMARIES`` (a cheap import), else nothing."""
    package = module.rpartition(".")[0]
    try:
        summaries = getattr(importlib.import_module(package), "SUMMARIES", {}) if package else {}
    except ImportError:
        return ""
    return str(summaries.get(name, ""))


VERBS: dict[str, Verb] = discover()


def _missing_extra(verb: Verb, exc: ModuleNotFoundError) -> SightwireError | None:
    """The one-line error for a workstation package missing here (a Pi), else None.

    Verb modules import TensorFlow inside ``run``, so this applies to running a verb as
    well as to importing its module."""
    if exc.name and exc.name.split(".")[0] in TRAIN_PACKAGES:
        return SightwireError(
            f"'{verb.name}' needs the workstation extra: pip install 'sightwire[train]' "
            f"(missing module {exc.name})"
        )
    return None


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, unless its text already does or there is
    nothing to show (an unset option, an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        unset = any(action.default is v for v in (None, False, argparse.SUPPRESS))
        unset = unset or (isinstance(action.default, list | tuple) and not action.default)
        said = "default" in text or f"({action.default})" in text  # "timed invokes (100)"
        if said or unset:  # ``is``: a default of 0 is shown (0 == False)
            return action.help
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            return action.help
        return super()._get_help_string(action)


def verb_parser(verb: Verb, module: ModuleType) -> argparse.ArgumentParser:
    """The verb's own parser: its arguments, ``-v`` in its help and defaults in
    ``--help``, its sub-commands' parsers included."""
    parser = argparse.ArgumentParser(
        prog=f"sightwire {verb.name}",
        description=getattr(module, "HELP", verb.summary),
        formatter_class=DefaultsFormatter,
    )
    module.add_arguments(parser)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging and library start-up notes"
    )
    _defaults_everywhere(parser)
    return parser


def _defaults_everywhere(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.formatter_class = DefaultsFormatter
                _defaults_everywhere(sub)


VERBOSE_FLAGS = ("-v", "--verbose")


def without_verbose(rest: list[str]) -> tuple[list[str], bool]:
    """``rest`` without ``-v`` (before any ``--``) and whether it was there: ``-v`` is
    taken anywhere after the verb (``sightwire train DATA -v``, ``sightwire fleet status
    -v``), and known before the verb's module is imported, so logging is set up first."""
    end = rest.index("--") if "--" in rest else len(rest)
    kept = [a for a in rest[:end] if a not in VERBOSE_FLAGS] + rest[end:]
    return kept, len(kept) != len(rest)


def _run(verb: Verb, rest: list[str], verbose: bool) -> int:
    try:
        module: ModuleType = importlib.import_module(verb.module)
        args = verb_parser(verb, module).parse_args(rest)
        args.verbose = verbose
        return int(module.run(args) or 0)
    except ModuleNotFoundError as exc:
        error = _missing_extra(verb, exc)
        if error is None:
            raise
        raise error from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sightwire",
        description="Train an image classifier on a workstation, run it on a Pi, speak MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"sightwire {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS.values():
        sub.add_parser(verb.name, help=verb.summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not VERBS:
        print(
            f"sightwire: no verbs found (entry points '{GROUP}'): install the package, "
            "e.g. pip install -e .",
            file=sys.stderr,
        )
        return 1
    parser = build_parser()
    # Parse the verb first, then let the verb's own module build its parser.
    top, rest = parser.parse_known_args(argv)
    rest, after_verb = without_verbose(rest)
    verbose = top.verbose or after_verb
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if top.verb is None:
        parser.print_help()
        return 2
    verb = VERBS[top.verb]
    try:
        return _run(verb, rest, verbose)
    except SightwireError as exc:  # a UsageError (a flag's value): 2, as argparse's own
        print(f"sightwire {verb.name}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `sightwire ... | head`
        sys.stderr.close()
        return 1
    except OSError as exc:  # a file that cannot be written or read: one line (-v: traceback)
        if verbose:
            raise
        print(f"sightwire {verb.name}: error: {os_error_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
