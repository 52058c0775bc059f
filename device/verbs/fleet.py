"""``sightwire fleet``: every station on a broker as one table, and rollouts to many.

``fleet status`` subscribes to ``<prefix>/+/status|state|stats|cmd/result`` and prints
what the retained messages (and, with ``--watch``, the live ones) say. ``fleet rollout``
serves a bundle zip over HTTP from this machine for the duration and sends ``cmd/update``
to the matching stations, canary first, then in batches, halting and rolling back when
more than ``--max-failures`` fail (``device.fleet.rollout``). Needs no TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from device.config import ConfigError, MqttConfig, describe_errors
from device.errors import SightwireError, UsageError
from device.fleet import status as fleet_status
from device.fleet.link import Link
from device.fleet.rollout import Plan, Rollout, select
from device.fleet.serve import BundleServer, local_address, model_hashes
from device.verbs.run import parse_broker

HELP = (
    "See every station on an MQTT broker (fleet status) and roll a bundle out to many "
    "(fleet rollout: canary, batches, soak, halt and rollback)."
)


def _broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker", default="localhost:1883", metavar="HOST[:PORT]", help="default: %(default)s"
    )
    parser.add_argument("--prefix", default="sightwire", help="mqtt.prefix of the stations")
    parser.add_argument("--username", help="MQTT user (the rollout user may send cmd/update)")
    parser.add_argument(
        "--password-file", type=Path, help="file holding the MQTT password (never on the line)"
    )
    parser.add_argument("--tls", action="store_true", help="TLS with the system CAs")
    parser.add_argument("--ca", type=Path, help="CA file (turns TLS on)")
    parser.add_argument("--cert", type=Path, help="client certificate (with --key)")
    parser.add_argument("--key", type=Path, help="client key (with --cert)")
    parser.add_argument(
        "--tls-insecure", action="store_true", help="skip the broker host name check"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="fleet_command", metavar="{status,rollout}", required=True)
    st = sub.add_parser("status", help="table of every station that announced itself")
    _broker_options(st)
    st.add_argument(
        "--wait",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds to gather retained messages (and stats) before printing "
        "(default: %(default)s)",
    )
    st.add_argument("--watch", action="store_true", help="keep the table live until Ctrl-C")
    st.add_argument("--interval", type=float, default=2.0, help="--watch refresh, s (default: 2)")
    st.add_argument("--json", action="store_true", help="one JSON list, for scripts")

    ro = sub.add_parser("rollout", help="update many stations: canary, batches, halt, rollback")
    ro.add_argument("bundle", type=Path, help="bundle folder or .zip (with manifest.json)")
    _broker_options(ro)
    ro.add_argument(
        "--devices",
        required=True,
        metavar="PATTERN",
        help="device ids to update: glob patterns, comma-separated ('line1-*', '*')",
    )
    ro.add_argument("--canary", type=int, default=1, help="stations updated first (default: 1)")
    ro.add_argument("--batch", type=int, default=5, help="stations per batch after (default: 5)")
    ro.add_argument(
        "--max-failures",
        type=int,
        default=0,
        metavar="K",
        help="more failures than K halt the rollout and roll back (default: 0)",
    )
    ro.add_argument(
        "--soak",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds each updated station must stay healthy; it must also send one stats "
        "message after the update (mqtt.stats_interval_s) (default: 60)",
    )
    ro.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds to wait for each reply, and for stats after the soak (default: 300)",
    )
    ro.add_argument(
        "--wait",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds to gather the retained status and state first (default: %(default)s)",
    )
    ro.add_argument(
        "--http-bind", default="0.0.0.0", help="address the bundle is served on (default: all)"
    )
    ro.add_argument("--http-port", type=int, default=0, help="port (default: any free one)")
    ro.add_argument(
        "--url-host",
        help="host name the stations use to reach this machine "
        "(default: this machine's address on the route to the broker)",
    )
    ro.add_argument("--json", action="store_true", help="final results as JSON on stdout")


def mqtt_config(args: argparse.Namespace) -> MqttConfig:
    values = parse_broker(args.broker)
    data: dict[str, Any] = {
        "host": values["mqtt.host"],
        "port": values.get("mqtt.port", 1883),
        "prefix": args.prefix,
    }
    if args.username:
        data["username"] = args.username
    if args.password_file:
        try:
            data["password"] = args.password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--password-file: {exc.strerror}: {args.password_file}") from None
    if args.tls or args.ca or args.cert or args.key:
        data["tls"] = {
            "enabled": True,
            "ca": args.ca,
            "cert": args.cert,
            "key": args.key,
            "insecure": args.tls_insecure,
        }
    try:
        return MqttConfig.model_validate(data)
    except ValidationError as exc:
        why = describe_errors(exc, MqttConfig, prefix="mqtt.")
        for key, option in _OPTIONS.items():
            why = why.replace(f"{key}:", f"{option}:")
        # --prefix, --broker or --username as typed: a usage error (2); a --ca, --cert or
        # --key file, or what --password-file holds: the files (1).
        typed = all(err["loc"] and err["loc"][0] in _TYPED for err in exc.errors())
        raise (UsageError if typed else ConfigError)(why) from None


# The keys whose values are typed on the command line (not read from a file).
_TYPED = {"prefix", "host", "port", "username"}
# What the user typed, for each key an error names (the config file's names mean nothing here).
_OPTIONS = {
    "mqtt.prefix": "--prefix",
    "mqtt.host": "--broker (host)",
    "mqtt.port": "--broker (port)",
    "mqtt.username": "--username",
    "mqtt.password": "--password-file",
}


def gather(args: argparse.Namespace) -> tuple[fleet_status.Fleet, Link]:
    cfg = mqtt_config(args)
    fleet = fleet_status.Fleet(cfg.prefix)
    link = Link(cfg, fleet_status.topics(cfg.prefix), fleet.apply).connect()
    time.sleep(max(args.wait, 0.0))
    return fleet, link


def run_status(args: argparse.Namespace) -> int:
    fleet, link = gather(args)
    try:
        if args.json:
            print(json.dumps(fleet_status.as_json(fleet.snapshot()), indent=1, allow_nan=False))
            return 0
        if not args.watch:
            print(fleet_status.table(fleet.snapshot()))
            return 0
        while True:
            sys.stdout.write("\033[H\033[2J" + fleet_status.table(fleet.snapshot()) + "\n")
            sys.stdout.flush()
            time.sleep(max(args.interval, 0.2))
    finally:
        link.close()


def run_rollout(args: argparse.Namespace) -> int:
    if args.canary < 0 or args.batch < 1 or args.max_failures < 0:
        raise UsageError("--canary and --max-failures must be ≥ 0, --batch ≥ 1")
    if args.soak < 0 or args.timeout <= 0:
        raise UsageError("--soak must be ≥ 0 and --timeout > 0")
    if not args.bundle.exists():
        raise SightwireError(f"{args.bundle}: no such bundle")
    hashes = model_hashes(args.bundle)
    fleet, link = gather(args)
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    try:
        devices = select(fleet, args.devices)
        if not devices:
            known = ", ".join(d.device for d in fleet.snapshot()[:10]) or "none"
            raise SightwireError(f"no station matches {args.devices!r} (known: {known})")
        url_host = args.url_host or local_address(link.cfg.host, link.cfg.port)
        with BundleServer(args.bundle, args.http_bind, args.http_port, url_host) as server:
            say(
                f"serving {server.zip.name} ({server.size} bytes, sha256 {server.sha256[:12]}) "
                f"at http://{url_host}:{server.server.server_address[1]}/…; "
                f"{len(devices)} stations, model {', '.join(sorted(hashes))}"
            )
            plan = Plan(args.canary, args.batch, args.max_failures, args.soak, args.timeout)
            rollout = Rollout(
                fleet, link.publish, devices, server.url, server.sha256, hashes, plan, say
            )
            started = time.monotonic()
            ok = rollout.run()
            seconds = time.monotonic() - started
        time.sleep(0.5)  # the last stats and states, for the table
        rows = [fleet.get(d.device) or d for d in devices]
        results = {n: o.text() for n, o in rollout.outcomes.items()}
        if args.json:
            out = {
                "ok": ok,
                "halted": rollout.halted,
                "seconds": round(seconds, 1),
                "devices": [
                    {
                        **row,
                        "result": rollout.outcomes[row["device"]].result,
                        "detail": rollout.outcomes[row["device"]].detail,
                    }
                    for row in fleet_status.as_json(rows)
                ],
            }
            print(json.dumps(out, indent=1, allow_nan=False))
        else:
            print(fleet_status.table(rows, results))
            verdict = "all updated" if ok else "not all updated"
            if rollout.halted:
                verdict = "halted and rolled back"
            print(f"rollout {verdict} in {seconds:.0f} s")
        return 0 if ok else 1
    finally:
        link.close()


def run(args: argparse.Namespace) -> int:
    if args.fleet_command == "status":
        return run_status(args)
    return run_rollout(args)
