"""``sightwire run``: the camera → model → MQTT daemon that runs on the Pi for months.

All settings come from one TOML file (``deploy/sightwire.toml`` is the annotated
example); any key can be overridden with ``--set section.key=value`` and the common ones
have their own flags. SIGTERM/SIGINT/SIGHUP stop it cleanly: ``offline`` is published
(retained), threads are joined, exit status 0. A pipeline that gives up (capture
threads hung in a camera driver) stops the same way but exits 1, for systemd to restart.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import threading
from pathlib import Path
from typing import Any

from device.config import load_config
from device.config_print import to_json, to_toml
from device.errors import SightwireError, UsageError

HELP = (
    "Run the camera → model → MQTT daemon from a TOML config "
    "(example: deploy/sightwire.toml); every key can be overridden with --set."
)
log = logging.getLogger("sightwire.run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, help="TOML config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set mqtt.port=1884 "
        "--set inference.smoothing=ema; VALUE is read as TOML, else as a string",
    )
    parser.add_argument("--model", help="model bundle/.tflite (model.path)")
    parser.add_argument(
        "--variant", choices=["auto", "int8", "float", "edgetpu"], help="model.variant"
    )
    parser.add_argument(
        "--source",
        dest="source_kind",
        choices=["picamera2", "opencv", "folder"],
        help="source.kind",
    )
    parser.add_argument(
        "--source-path",
        help="folder of images (folder source) or video file (opencv source); without "
        "--source, the path says which",
    )
    parser.add_argument("--broker", metavar="HOST[:PORT]", help="mqtt.host and mqtt.port")
    parser.add_argument("--device-id", help="mqtt.device_id (default: the host name)")
    parser.add_argument("--no-mqtt", action="store_true", help="classify without a broker")
    parser.add_argument(
        "--print-config",
        nargs="?",
        const="toml",
        choices=["toml", "json"],
        help="print the effective config (secrets masked) and exit",
    )
    parser.add_argument("--max-frames", type=int, help="stop after classifying N frames")
    parser.add_argument("--duration", type=float, help="stop after S seconds")


def parse_broker(text: str) -> dict[str, Any]:
    """``host``, ``host:port`` or ``[v6addr]:port`` → mqtt.host / mqtt.port values."""
    host, port = text, None
    if text.startswith("["):
        inside, _, rest = text[1:].partition("]")
        host = inside
        if rest.startswith(":"):
            port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if not host:
        raise UsageError(f"--broker {text!r}: expected HOST[:PORT]")
    values: dict[str, Any] = {"mqtt.host": host}
    if port is not None:
        if not port.isdigit():
            raise UsageError(f"--broker {text!r}: port {port!r} is not a number")
        values["mqtt.port"] = int(port)
    return values


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The direct flags as dotted config keys; they win over --set and the file."""
    values: dict[str, Any] = {}
    if args.model:
        values["model.path"] = args.model
    if args.variant:
        values["model.variant"] = args.variant
    if args.source_kind:
        values["source.kind"] = args.source_kind
    if args.source_path:
        values["source.path"] = args.source_path
        if not args.source_kind:  # the path says which: a folder of images or a video file
            values["source.kind"] = "folder" if Path(args.source_path).is_dir() else "opencv"
    if args.broker:
        values.update(parse_broker(args.broker))
    if args.device_id:
        values["mqtt.device_id"] = args.device_id
    if args.no_mqtt:
        values["mqtt.enabled"] = False
    return values


def run(args: argparse.Namespace) -> int:
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError("--max-frames must be at least 1")
    if args.duration is not None and not 0 < args.duration < math.inf:
        raise UsageError("--duration must be a positive number of seconds")
    config = load_config(args.config, args.overrides, values=flag_values(args))
    if args.print_config:
        print(to_json(config) if args.print_config == "json" else to_toml(config), end="")
        if args.print_config == "json":
            print()
        return 0
    if not getattr(args, "verbose", False):
        logging.getLogger().setLevel(config.log_level)

    from device.pipeline import Pipeline  # the model runtime loads only when running

    pipeline = Pipeline(config, max_frames=args.max_frames, duration=args.duration)
    stop = threading.Event()
    previous = _install_signal_handlers(stop)
    try:
        pipeline.start()
        while not stop.is_set() and not pipeline.finished.is_set():
            stop.wait(0.5)
        if stop.is_set():
            log.info("stopping (signal)")
    finally:
        pipeline.stop()
        _restore_signal_handlers(previous)
    log.info("stopped after %d frames", pipeline.frames)
    if pipeline.failure is not None:
        # Exit non-zero so that systemd (Restart=on-failure) starts a fresh process.
        raise SightwireError(f"stopped: {pipeline.failure}")
    return 0


def _install_signal_handlers(stop: threading.Event) -> dict[int, Any]:
    """SIGTERM (systemd stop), SIGINT (Ctrl-C) and SIGHUP (the terminal or SSH session it
    runs in closed) set ``stop``; main thread only. Left to its default, a hang-up killed
    the daemon with no ``offline`` but the broker's last will."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", signal.SIGTERM)):
        previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    return previous


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
