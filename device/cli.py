"""The ``sightwire`` command: one entry point, verbs for both halves.

Each verb lives in its own module (``device.verbs.*`` or ``trainer.verbs.*``)
exposing ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. The table below is
the only place that knows them all; a trainer verb is imported only when it is named
(or for ``--help``), so a Pi without TensorFlow runs the device verbs untouched.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from device import __version__
from device.errors import SightwireError

VERBS: dict[str, tuple[str, str]] = {
    "train": ("trainer.verbs.train", "fine-tune MobileNetV2 on a folder of photos → bundle"),
    "export": ("trainer.verbs.export", "export a saved Keras model to a bundle"),
    "evaluate": ("trainer.verbs.evaluate", "evaluate a bundle on a labelled folder"),
    "compile-edgetpu": ("trainer.verbs.compile_edgetpu", "preflight/compile for Edge TPU"),
    "doctor": ("trainer.verbs.doctor", "find shortcuts, leaks and label errors in a dataset"),
    "deploy": ("trainer.verbs.deploy", "copy a bundle to a Pi over SSH and reload it"),
    "run": ("device.verbs.run", "run the camera → model → MQTT daemon"),
    "classify": ("device.verbs.classify", "classify image files with a bundle"),
    "bench": ("device.verbs.bench", "benchmark the models of a bundle and the camera loop"),
}
TRAIN_PACKAGES = {"tensorflow", "keras", "sklearn", "matplotlib", "keras_tuner", "tflite", "rich"}


def _load(verb: str):
    module_name = VERBS[verb][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in TRAIN_PACKAGES:
            raise SightwireError(
                f"'{verb}' needs the workstation extra: pip install 'sightwire[train]' "
                f"(missing module {exc.name})"
            ) from exc
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sightwire",
        description="Train an image classifier on a workstation, run it on a Pi, speak MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"sightwire {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (_, summary) in VERBS.items():
        sub.add_parser(verb, help=summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse the verb first, then let the verb's own module build its parser.
    top, rest = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if top.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if top.verb is None:
        parser.print_help()
        return 2
    try:
        module = _load(top.verb)
        verb_parser = argparse.ArgumentParser(
            prog=f"sightwire {top.verb}", description=getattr(module, "HELP", VERBS[top.verb][1])
        )
        module.add_arguments(verb_parser)
        args = verb_parser.parse_args(rest)
        args.verbose = top.verbose
        return int(module.run(args) or 0)
    except SightwireError as exc:
        print(f"sightwire {top.verb}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `sightwire ... | head`
        sys.stderr.close()
        return 1


if __name__ == "__main__":
    sys.exit(main())
