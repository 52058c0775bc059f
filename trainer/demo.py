"""``make demo``: the whole chain on this machine, offline, in a few minutes.

dataset → ``sightwire train`` → bundle → ``sightwire run`` (folder source replaying
held-out photos) → a broker it starts itself → the MQTT messages printed → a short
``sightwire bench``. No camera and no internet needed.

Data: a small slice of the shared NEU steel-defect photos when ``../shared`` is there
(with the shared ImageNet weights), else drawn shapes and ``--weights imagenet``
(downloaded once) or, failing that, ``--weights none``.

Then, with the shared photos, the loop back from the line in short (``trainer.learn_loop``):
field photos under darker light replayed through the daemon with ``[keep]`` on, the kept
frames labelled by script, a retrain with ``--baseline``, field accuracy before and after.

``--tiny`` runs the same chain (without the loop back) on a quarter of the photos at
96x96 with one short training stage, so that tests/test_demo.py can run it whole in about
a minute; ``--out`` puts the bundle elsewhere than ``demo-out/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from trainer.synthetic import make_dataset

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "demo-out"


@dataclass(frozen=True)
class Size:
    """How much the demo trains: the shown size, or ``--tiny`` for a test of the chain."""

    per_class: int = 40  # photos (or drawn shapes) per class
    input_size: int = 160  # with the shared weights; 96 for the other datasets
    fine_tune_epochs: int = 8
    representative: int = 100
    scratch_fine_tune_epochs: int = 30  # when training from scratch (no weights at all)
    extra: tuple[str, ...] = ()  # further training flags
    bench_runs: int = 20


FULL = Size()
TINY = Size(
    per_class=10,
    input_size=96,
    fine_tune_epochs=1,
    representative=20,
    scratch_fine_tune_epochs=3,
    extra=("--head-epochs", "20", "--augment-copies", "0", "--no-progress"),
    bench_runs=5,
)


def shared_dir() -> Path | None:
    env = os.environ.get("SIGHTWIRE_SHARED")
    for path in ([Path(env)] if env else []) + [REPO.parent / "shared"]:
        if (path / "models").is_dir():
            return path
    return None


def sightwire(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device.cli", *args], check=False, **kwargs)


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def pick_data(work: Path, size: Size = FULL) -> tuple[Path, list[str]]:
    """A dataset folder and the training flags that suit it."""
    shared = shared_dir()
    weights = shared / "models" / "mobilenet_v2_1.0_224_no_top.weights.h5" if shared else None
    neu = shared / "datasets" / "neu_surface_defects" if shared else None
    if weights and weights.is_file() and neu and neu.is_dir():
        data = work / "steel"
        for cls in sorted(p for p in neu.iterdir() if p.is_dir())[:4]:
            (data / cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[: size.per_class]:
                shutil.copy(f, data / cls.name / f.name)
        print(f"dataset: 4 NEU steel-defect classes x {size.per_class} photos (from {neu})")
        flags = ["--weights", str(weights), "--input-size", str(size.input_size)]
        return data, [*flags, "--vertical-flip"]
    data = make_dataset(work / "shapes", classes=3, per_class=size.per_class, size=96, seed=1)
    print("dataset: drawn shapes (no shared data found); ImageNet weights are downloaded once")
    return data, ["--weights", "imagenet", "--input-size", "96"]


def learn_from_the_line(out: Path) -> None:
    """The loop back, short: field photos under darker light, what the daemon kept,
    labelled by script, retrained with ``--baseline`` (``trainer.learn_loop``)."""
    shared = shared_dir()
    weights = shared / "models" / "mobilenet_v2_1.0_224_no_top.weights.h5" if shared else None
    neu = shared / "datasets" / "neu_surface_defects" if shared else None
    if not (weights and weights.is_file() and neu and neu.is_dir()):
        return  # the loop needs real photos; drawn shapes have no "line" to drift from
    from trainer import learn_loop

    step("and back: the device keeps what it was unsure of, the workstation retrains")
    work = out / "learn-loop"
    shutil.rmtree(work, ignore_errors=True)  # a second demo starts from the photos as taken
    figures = learn_loop.run(neu, work, str(weights), per_class=20)
    print(learn_loop.table(figures))


def start_broker(work: Path) -> tuple[subprocess.Popen | None, int]:
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        print("mosquitto not found: install it (sudo apt-get install mosquitto) to see MQTT")
        return None, 0
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    print(f"mosquitto listening on 127.0.0.1:{port}")
    return proc, port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (demo-out/)")
    parser.add_argument("--tiny", action="store_true", help="a quick run of the same chain")
    args = parser.parse_args(argv)
    size = TINY if args.tiny else FULL
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sightwire-demo-"))
    bundle = out / "bundle"
    try:
        step("1/4 train")
        data, flags = pick_data(work, size)
        proc = sightwire(
            "train",
            str(data),
            "--out",
            str(bundle),
            "--force",  # a second `make demo` replaces the first one's bundle
            *flags,
            "--fine-tune-epochs",
            str(size.fine_tune_epochs),
            "--representative",
            str(size.representative),
            *size.extra,
        )
        if proc.returncode != 0 and "--weights" in flags and "imagenet" in flags:
            print("ImageNet weights unavailable offline: training from scratch instead")
            proc = sightwire(
                "train",
                str(data),
                "--out",
                str(bundle),
                "--force",
                "--weights",
                "none",
                "--input-size",
                "96",
                "--alpha",
                "0.35",
                "--fine-tune-lr",
                "3e-3",
                "--fine-tune-epochs",
                str(size.scratch_fine_tune_epochs),
                "--batch-size",
                "16",
                *size.extra,
            )
        if proc.returncode != 0:
            return proc.returncode

        step("2/4 run the daemon on replayed held-out photos, publishing to MQTT")
        split = json.loads((bundle / "report" / "split.json").read_text())
        frames = work / "frames"
        frames.mkdir()
        by_class: dict[str, list[str]] = {}
        for rel, label in sorted(split["test"]):
            by_class.setdefault(label, []).append(rel)
        # Runs of 4 frames per class, class after class: the label changes, debounced.
        order = [
            rel for k in range(0, 8, 4) for files in by_class.values() for rel in files[k : k + 4]
        ]
        for i, rel in enumerate(order):
            shutil.copy(data / rel, frames / f"{i:03d}{Path(rel).suffix}")
        broker, port = start_broker(work)
        messages: list[tuple[str, str]] = []
        client = None
        if broker:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            client.on_message = lambda c, u, m: messages.append(
                (m.topic, m.payload.decode("utf-8", "replace")[:160])
            )
            client.connect("127.0.0.1", port)
            client.subscribe("sightwire/#")
            client.loop_start()
        args = [
            "run",
            "--model",
            str(bundle),
            "--source",
            "folder",
            "--source-path",
            str(frames),
            "--device-id",
            "demo",
            "--set",
            "source.fps=8",
            "--set",
            "source.loop=false",
            "--set",
            "mqtt.stats_interval_s=2",
            "--duration",
            "8",
        ]
        args += ["--broker", f"127.0.0.1:{port}"] if broker else ["--no-mqtt"]
        daemon = subprocess.Popen([sys.executable, "-m", "device.cli", *args])
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(10)
        time.sleep(0.5)
        if client:
            client.loop_stop()
            client.disconnect()
        if broker:
            broker.terminate()
            broker.wait(5)
        step("3/4 what the broker received")
        for topic, payload in messages:
            if not topic.endswith("/snapshot"):
                print(f"{topic}  {payload}")
        print(f"({len(messages)} messages)")

        step("4/4 benchmark")
        bench = sightwire(
            "bench",
            str(bundle),
            "--runs",
            str(size.bench_runs),
            "--threads",
            "2",
            "--json",
            str(out / "bench.json"),
        )
        if bench.returncode == 2:
            print("(bench not available in this build)")
        if size is FULL:
            learn_from_the_line(out)
        print(f"\nbundle: {bundle}\nreport: {bundle / 'report'}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
