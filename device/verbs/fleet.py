"""``sightwire fleet``: every station on a broker as one table, and rollouts to many.

``fleet status`` subscribes to ``<prefix>/+/status|state|stats|cmd/result`` and prints
what the retained messages (and, with ``--watch``, the live ones) say. ``fleet rollout``
serves a bundle zip over HTTP from this machine for the duration and sends ``cmd/update``
to the matching stations, canary first, then in batches, halting and rolling back when
more than ``--max-failures`` fail (``device.fleet.rollout``). Needs no TensorFlow.

A rollout survives a broker restart (its commands wait for the link, up to
``--timeout``) and Ctrl-C: the first one rolls back what it switched, prints the table
and exits 130; a second one stops at once and prints what is left switched and the
``{"rollback": true}`` command that undoes each (``_undo``).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import shlex
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
        help="seconds to gather messages (and stats) before printing; the retained ones "
        "are always waited for (default: %(default)s)",
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
        help="seconds to wait for each reply, for stats after the soak, and for the broker "
        "while the link is down (default: 300)",
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
        "(default: this machine's address on the route to the broker; a loopback one "
        "is warned about)",
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


# The retained messages come right after the subscription: whatever --wait says, the
# table waits until they stop coming (QUIET_S without one), for at most RETAINED_MAX_S.
QUIET_S = 0.3
RETAINED_MAX_S = 5.0


def _seconds(value: float, option: str, low: float = 0.0, above: bool = False) -> None:
    """A usage error unless ``value`` is a finite number ≥ ``low`` (> with ``above``)."""
    if not math.isfinite(value) or value < low or (above and value <= low):
        raise UsageError(f"{option} must be a number of seconds {'>' if above else '≥'} {low:g}")


def gather(args: argparse.Namespace) -> tuple[fleet_status.Fleet, Link]:
    cfg = mqtt_config(args)
    fleet = fleet_status.Fleet(cfg.prefix)
    started = time.monotonic()
    link = Link(cfg, fleet_status.topics(cfg.prefix), fleet.apply).connect()
    fleet.quiet(QUIET_S, RETAINED_MAX_S)
    time.sleep(max(args.wait - (time.monotonic() - started), 0.0))
    return fleet, link


def _none_found(args: argparse.Namespace) -> None:
    print(
        f"no station has a retained status under {args.prefix}/+/status on {args.broker} "
        "(a station announces itself when it connects; check --broker and --prefix)",
        file=sys.stderr,
    )


def run_status(args: argparse.Namespace) -> int:
    _seconds(args.wait, "--wait")
    _seconds(args.interval, "--interval", above=True)
    fleet, link = gather(args)
    try:
        if args.json:
            print(json.dumps(fleet_status.as_json(fleet.snapshot()), indent=1, allow_nan=False))
            return 0
        if not args.watch:
            rows = fleet.snapshot()
            print(fleet_status.table(rows))
            if not rows:
                _none_found(args)
            return 0
        while True:
            sys.stdout.write("\033[H\033[2J" + fleet_status.table(fleet.snapshot()) + "\n")
            sys.stdout.flush()
            time.sleep(max(args.interval, 0.2))
    finally:
        link.close()


def _loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _undo(cfg: MqttConfig, left: list[tuple[str, str]]) -> str:
    """What a stop left switched, and the command that sends each station back."""
    if not left:
        return "stopped: no station was left switched by this rollout"
    where = f"-h {shlex.quote(cfg.host)} -p {cfg.port}"
    auth = " -u <user> -P <password>" if cfg.username else ""
    tls = " --cafile <ca>" if cfg.tls.active else ""
    prefix = cfg.prefix
    lines = ["stopped: these stations may be left on the new model:"]
    for name, state in left:
        lines.append(f"  {fleet_status.printable(name, 60)}: {fleet_status.printable(state)}")
    switched = [name for name, state in left if state == "switched"]
    if switched:
        lines.append(
            "undo: send each switched station ONE rollback (a second one switches it back "
            "again; check first with `sightwire fleet status`):"
        )
        for name in switched:
            topic = shlex.quote(f"{prefix}/{name}/cmd/update")
            lines.append(
                f"  mosquitto_pub {where}{auth}{tls} -q 1 -t {topic} -m '{{\"rollback\": true}}'"
            )
    if len(switched) < len(left):
        lines.append(
            "the others may still switch or switch back: see `sightwire fleet status` before "
            "sending them anything"
        )
    return "\n".join(lines)


def run_rollout(args: argparse.Namespace) -> int:
    if args.canary < 0 or args.batch < 1 or args.max_failures < 0:
        raise UsageError("--canary and --max-failures must be ≥ 0, --batch ≥ 1")
    _seconds(args.soak, "--soak")
    _seconds(args.timeout, "--timeout", above=True)
    _seconds(args.wait, "--wait")
    if not 0 <= args.http_port < 65536:  # before the broker is asked anything
        raise UsageError(f"--http-port {args.http_port}: not a port number (0: any free one)")
    if not any(p.strip() for p in args.devices.split(",")):
        raise UsageError("--devices: give at least one device id or glob ('line1-*', '*')")
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
        if not args.url_host and _loopback(url_host):
            print(
                f"warning: the bundle URL's host is {url_host}, this machine's loopback (the "
                f"broker is on {link.cfg.host}): a station on another machine cannot fetch "
                "it; give --url-host with this machine's address on the stations' network",
                file=sys.stderr,
            )
        with BundleServer(args.bundle, args.http_bind, args.http_port, url_host) as server:
            say(
                f"serving {args.bundle} ({server.size} bytes, sha256 {server.sha256[:12]}) "
                f"at http://{url_host}:{server.server.server_address[1]}/…/bundle.zip; "
                f"{fleet_status.plural(len(devices), 'station')}, "
                f"model {', '.join(sorted(hashes))}"
            )
            plan = Plan(args.canary, args.batch, args.max_failures, args.soak, args.timeout)
            rollout = Rollout(
                fleet,
                lambda topic, payload: link.publish(topic, payload, wait_s=args.timeout),
                devices,
                server.url,
                server.sha256,
                hashes,
                plan,
                say,
                link_state=link.state,
            )
            started = time.monotonic()
            try:
                ok = rollout.run()
            except KeyboardInterrupt:
                if rollout.stopped:  # a second Ctrl-C: stop at once, say what is left
                    print(_undo(link.cfg, rollout.left_over()), file=sys.stderr)
                    raise
                ok = False  # the first: what it switched was rolled back; report, re-raise
            seconds = time.monotonic() - started
        time.sleep(0.5)  # the last stats and states, for the table
        rows = [fleet.get(d.device) or d for d in devices]
        results = {n: o.text() for n, o in rollout.outcomes.items()}
        if args.json:
            out = {
                "ok": ok,
                "halted": rollout.halted,
                "interrupted": rollout.interrupted,
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
            print(f"rollout {rollout.summary()} in {seconds:.0f} s")
        if rollout.interrupted:
            left = rollout.left_over()  # a rollback that failed or went unanswered
            if left:
                print(_undo(link.cfg, left), file=sys.stderr)
            raise KeyboardInterrupt  # exit 130, as any interrupted command
        return 0 if ok else 1
    finally:
        link.close()


def run(args: argparse.Namespace) -> int:
    if args.fleet_command == "status":
        return run_status(args)
    return run_rollout(args)
