"""Deployment to a Pi: install script, systemd unit, broker config, `sightwire deploy`.

Everything runs for real where it can here: bash and shellcheck on the script (its
dry run on this Debian machine), systemd-analyze on the unit, a mosquitto started
with the shipped config, and `sightwire deploy` over SSH to a real sshd on the
loopback (the "Pi" is a temporary directory on this machine).
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from device.bundle import load_bundle
from device.models_dir import ModelStore, cid_of, content_id_of, version_name
from device.verbs.deploy import (
    DEFAULT_REMOTE_DIR,
    DeployError,
    Deployment,
    Remote,
    Step,
    add_arguments,
    payload_of,
    prunable,
    validate,
)
from tests.conftest import write_imagenet_labels
from tests.mqtt_helpers import Broker, free_port, wait_port
from tests.test_hostile_updates import run_update
from tests.test_ota import BIG, SMALL, make_bundle, zip_dir

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
SCRIPT = DEPLOY / "install-pi.sh"
UNIT = DEPLOY / "sightwire.service"
SSHD = "/usr/sbin/sshd"
# What a real install creates; a dry run must leave every one as it found it.
INSTALL_PATHS = [
    "/etc/sightwire",
    "/opt/sightwire",
    "/var/lib/sightwire",
    "/etc/systemd/system/sightwire.service",
    "/etc/mosquitto/conf.d/sightwire.conf",
    "/etc/mosquitto/passwd",
    "/etc/apt/sources.list.d/coral-edgetpu.list",
    "/etc/apt/keyrings/coral-edgetpu.gpg",
]


# --- install-pi.sh -------------------------------------------------------------------


@pytest.fixture
def deploy_copy(tmp_path: Path) -> Path:
    """deploy/ copied aside; the example daemon config is stubbed where not yet written."""
    target = tmp_path / "deploy"
    shutil.copytree(DEPLOY, target)
    if not (target / "sightwire.toml").exists():
        (target / "sightwire.toml").write_text(
            '[model]\npath = "/var/lib/sightwire/models/current"\n'
        )
    return target


def install(script_dir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "SUDO_USER"}
    return subprocess.run(
        ["bash", str(script_dir / "install-pi.sh"), *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
    )


def system_state() -> dict[str, bool]:
    state = {path: os.path.lexists(path) for path in INSTALL_PATHS}
    state["user sightwire"] = subprocess.run(["getent", "passwd", "sightwire"]).returncode == 0
    return state


def commands(output: str) -> list[str]:
    """The command lines a run prints (`  + cmd`)."""
    return [line[4:] for line in output.splitlines() if line.startswith("  + ")]


def test_install_script_is_valid_bash():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert os.access(SCRIPT, os.X_OK), "install-pi.sh must be executable"


def test_install_script_passes_shellcheck():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    proc = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_install_dry_run_lists_every_step_and_changes_nothing(deploy_copy: Path):
    before = system_state()
    proc = install(deploy_copy, "--dry-run", env={"SUDO_USER": "nobody"})
    assert proc.returncode == 0, proc.stderr
    assert system_state() == before
    if not before["/etc/sightwire"]:
        assert not os.path.exists("/etc/sightwire")
    cmds = commands(proc.stdout)
    text = "\n".join(cmds)
    # apt packages, venv, pip, user and groups, config, model dir, unit, enable.
    install_line = next(c for c in cmds if "apt-get install" in c)
    for package in ("python3-picamera2", "python3-venv", "rsync"):
        assert package in install_line.split()
    assert "mosquitto" not in install_line.split()  # only with --with-broker
    assert "python3 -m venv --system-site-packages /opt/sightwire/venv" in text
    constraints = "/opt/sightwire/pi-constraints.txt"
    pip = f"/opt/sightwire/venv/bin/python -m pip install --upgrade --constraint {constraints} "
    assert f"{pip}'sightwire[device]'" in text
    # The constraints go in first, and the venv's own pip.conf names them for later upgrades.
    assert f"install -m 0644 {deploy_copy}/pi-constraints.txt {constraints}" in text
    assert f"constraint = %s\\n' {constraints} > /opt/sightwire/venv/pip.conf" in text
    assert text.index(f"{constraints} > /opt/sightwire/venv/pip.conf") < text.index(pip)
    if not before["user sightwire"]:
        assert re.search(r"^useradd --system .* sightwire$", text, re.M)
    assert "usermod --append --groups video sightwire" in text
    has_video = subprocess.run(["getent", "group", "video"], capture_output=True).returncode == 0
    # A group a real run would make is shown too (a dry run lists every command).
    assert ("groupadd --system video" in text) == (not has_video)
    assert "usermod --append --groups sightwire nobody" in text  # the deploy user
    if not before["/etc/sightwire"]:
        conf = f"install -m 0640 -o root -g sightwire {deploy_copy}/sightwire.toml"
        assert f"{conf} /etc/sightwire/sightwire.toml" in text
    assert "install -d -m 2775 -o sightwire -g sightwire /var/lib/sightwire/models" in text
    unit = f"install -m 0644 {deploy_copy}/sightwire.service /etc/systemd/system/sightwire.service"
    assert unit in text
    assert "systemctl enable sightwire.service" in text
    assert "libedgetpu1-std" not in text and "coral" not in text  # only with --with-edgetpu
    assert "dry run" in proc.stdout


# What PyPI publishes (wheel metadata, cp311 manylinux aarch64) for the releases around the
# constraints: the numpy each asks for. Read with `pip download --no-deps PKG==V --platform
# manylinux2014_aarch64 --python-version 3.11 --only-binary=:all:` and the wheel's METADATA.
NEEDS_NUMPY = {
    ("opencv-python-headless", "4.11.0.86"): ">=1.23.5",
    ("opencv-python-headless", "4.12.0.88"): ">=2,<2.3.0",
    ("opencv-python-headless", "4.13.0.92"): ">=2",
    ("opencv-python-headless", "5.1.0.95"): ">=2",
    ("ml-dtypes", "0.5.4"): ">=1.23.3",
    ("ml-dtypes", "0.6.0"): ">=2.0.0",
    ("ml-dtypes", "0.7.0"): ">=2.0.0",
    ("ai-edge-litert", "2.3.0"): ">=1.23.2",
}
BOOKWORM = {"python_version": "3.11", "numpy": "1.24.2"}  # apt's python3 and python3-numpy
TRIXIE = {"python_version": "3.13", "numpy": "2.2.4"}


def constraints(path: Path, python_version: str) -> dict[str, SpecifierSet]:
    """The constraints file as pip reads it on a Pi with that Python (markers applied)."""
    out: dict[str, SpecifierSet] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"python_version": python_version}):
            out[canonicalize_name(req.name)] = req.specifier
    return out


def test_pi_constraints_keep_apt_numpy():
    """On Bookworm the venv must keep apt's numpy 1.24 (picamera2 and simplejpeg are built
    against it): every release the constraints allow of a dependency that needs numpy 2
    is excluded, and the ones left accept numpy 1.24. On Trixie (numpy 2 from apt, Python
    3.13, which numpy 1 has no wheels for) nothing is held back."""
    pins = constraints(DEPLOY / "pi-constraints.txt", BOOKWORM["python_version"])
    assert BOOKWORM["numpy"] in pins["numpy"] and "2.0.0" not in pins["numpy"]
    for (name, version), numpy in NEEDS_NUMPY.items():
        allowed = pins.get(canonicalize_name(name), SpecifierSet()).contains(version)
        works = BOOKWORM["numpy"] in SpecifierSet(numpy)
        assert allowed == works, (name, version, numpy)
    assert constraints(DEPLOY / "pi-constraints.txt", TRIXIE["python_version"]) == {}
    # What the device extra asks for leaves room inside the constraints.
    with (REPO / "pyproject.toml").open("rb") as fh:
        device = tomllib.load(fh)["project"]["optional-dependencies"]["device"]
    for req in map(Requirement, device):
        pin = pins.get(canonicalize_name(req.name))
        if pin is not None:
            assert any(v in req.specifier and v in pin for v in ("1.24.2", "4.11.0.86")), req


def test_install_dry_run_is_repeatable(deploy_copy: Path):
    first = install(deploy_copy, "--dry-run")
    second = install(deploy_copy, "--dry-run")
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    assert commands(first.stdout)


def test_install_dry_run_with_broker_edgetpu_and_a_local_wheel(deploy_copy: Path, tmp_path: Path):
    wheel = tmp_path / "sightwire-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")  # only its name and path matter to a dry run
    before = system_state()
    proc = install(
        deploy_copy,
        "--dry-run",
        "--with-broker",
        "--with-edgetpu",
        "--no-start",
        "--from",
        str(wheel),
    )
    assert proc.returncode == 0, proc.stderr
    assert system_state() == before
    text = "\n".join(commands(proc.stdout))
    assert "mosquitto" in next(c for c in commands(proc.stdout) if "apt-get install" in c).split()
    keyring = "/etc/apt/keyrings/coral-edgetpu.gpg"
    if not before[keyring]:
        assert (
            "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | gpg --dearmor"
            in text
        )
    assert (
        f"deb [signed-by={keyring}] https://packages.cloud.google.com/apt coral-edgetpu-stable main"
        in text
    )
    assert "apt-get install -y libedgetpu1-std" in text
    assert "usermod --append --groups plugdev sightwire" in text
    constraints = "--constraint /opt/sightwire/pi-constraints.txt"
    assert f"pip install --upgrade {constraints} '{wheel}[device]'" in text
    if not before["/etc/mosquitto/conf.d/sightwire.conf"]:
        assert (
            f"install -m 0644 {deploy_copy}/mosquitto.conf /etc/mosquitto/conf.d/sightwire.conf"
            in text
        )
    if not before["/etc/mosquitto/passwd"]:
        assert "install -m 0640 -o root -g mosquitto /dev/null /etc/mosquitto/passwd" in text
    assert "systemctl restart sightwire.service" not in text  # --no-start
    # The Coral repository is set up before its package is installed.
    assert text.index("coral-edgetpu-stable") < text.index("libedgetpu1-std")


def test_uninstall_dry_run(deploy_copy: Path):
    before = system_state()
    proc = install(deploy_copy, "--dry-run", "--uninstall")
    assert proc.returncode == 0, proc.stderr
    assert system_state() == before
    assert "kept: /etc/sightwire and /var/lib/sightwire" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frobnicate"], "unknown option --frobnicate"),
        (["--dry-run", "--from", "dist/nothing-here.whl"], "no such file or folder"),
        (["--dry-run", "--from"], "--from needs"),
    ],
)
def test_install_rejects_bad_arguments_in_one_line(deploy_copy: Path, args, message):
    proc = install(deploy_copy, *args)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert proc.stderr.count("error:") == 1, proc.stderr
    assert not commands(proc.stdout)


def test_install_needs_the_example_config_beside_it(deploy_copy: Path):
    (deploy_copy / "sightwire.toml").unlink()
    proc = install(deploy_copy, "--dry-run")
    assert proc.returncode == 1
    assert "sightwire.toml (the example config) not found" in proc.stderr


def test_install_needs_the_pip_constraints_beside_it(deploy_copy: Path):
    (deploy_copy / "pi-constraints.txt").unlink()
    proc = install(deploy_copy, "--dry-run")
    assert proc.returncode == 1 and not commands(proc.stdout)
    assert "pi-constraints.txt (pip constraints that keep apt's numpy) not found" in proc.stderr


def test_install_without_dry_run_needs_root(deploy_copy: Path):
    """Run as an unprivileged user: the script refuses before touching anything."""
    argv = ["bash"]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root and setpriv is missing: cannot drop privileges")
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash"]
    public = Path(tempfile.mkdtemp(prefix="sightwire-install-"))
    try:
        public.chmod(0o755)
        for f in deploy_copy.iterdir():
            if f.is_file():  # the files the script installs (deploy/fleet/ is not its)
                shutil.copy(f, public / f.name)
        before = system_state()
        proc = subprocess.run(
            [*argv, str(public / "install-pi.sh")], capture_output=True, text=True
        )
        assert system_state() == before
    finally:
        shutil.rmtree(public)
    assert proc.returncode == 1
    assert "run as root" in proc.stderr


def test_example_config_runs_the_model_that_deploy_switches():
    """The installed config must point at the `current` symlink `sightwire deploy` moves."""
    example = DEPLOY / "sightwire.toml"
    with example.open("rb") as fh:  # a deleted example fails here, never skips
        config = tomllib.load(fh)
    assert config["model"]["path"] == f"{DEFAULT_REMOTE_DIR}/current"


# --- sightwire.service ---------------------------------------------------------------


def unit_root(tmp_path: Path, unit_text: str) -> Path:
    """A file system root for systemd-analyze: the unit, an ExecStart binary, systemd's units.

    ``verify`` checks that ExecStart exists and that dependencies resolve; under
    ``--root`` both are looked up inside the root, so the shipped unit is checked as it is.
    """
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/sightwire.service").write_text(unit_text)
    exec_start = re.search(r"^ExecStart=(\S+)", unit_text, re.M)
    assert exec_start, "no ExecStart="
    binary = root / exec_start.group(1).lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    system_units = next(
        p for p in ("/usr/lib/systemd/system", "/lib/systemd/system") if Path(p).is_dir()
    )
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    return root


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", *args, f"--root={root}", "/etc/systemd/system/sightwire.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not found (apt-get install systemd)")
    return tool


def verify_problems(root: Path) -> list[str]:
    """rc != 0 or any complaint about the unit (bad keys only warn, with rc 0)."""
    proc = analyze(root, "verify")
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "sightwire.service" in ln]
    return lines + ([f"exit {proc.returncode}"] if proc.returncode else [])


def test_unit_passes_systemd_analyze_verify(systemd_analyze, tmp_path: Path):
    assert verify_problems(unit_root(tmp_path, UNIT.read_text())) == []


def test_unit_check_catches_a_broken_unit(systemd_analyze, tmp_path: Path):
    """The check above can fail: a misspelt key and a bad value are reported."""
    broken = UNIT.read_text().replace("Restart=on-failure", "Restart=sometimes\nRestartSecs=3")
    problems = verify_problems(unit_root(tmp_path, broken))
    assert any("sometimes" in p for p in problems)
    assert any("RestartSecs" in p for p in problems)


def test_unit_is_hardened(systemd_analyze, tmp_path: Path):
    """systemd's exposure score stays "OK" or better (at most 3.0 of 10)."""
    proc = analyze(
        unit_root(tmp_path, UNIT.read_text()), "security", "--offline=yes", "--threshold=30"
    )
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("systemd-analyze too old for security --offline (needs systemd 250+)")
    score = re.search(r"Overall exposure level for sightwire.service: ([\d.]+)", proc.stdout)
    assert score, proc.stdout[-2000:] + proc.stderr
    print(f"exposure {score.group(1)}")
    assert proc.returncode == 0, f"exposure {score.group(1)} > 3.0"


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_agrees_with_the_install_layout():
    unit = unit_settings(UNIT.read_text())
    script = SCRIPT.read_text()
    exec_start = unit["ExecStart"][0].split()
    assert exec_start[0] == "/opt/sightwire/venv/bin/sightwire" and "VENV=$PREFIX/venv" in script
    assert exec_start[1:] == ["run", "--config", "/etc/sightwire/sightwire.toml"]
    assert unit["User"] == ["sightwire"] and "SERVICE_USER=sightwire" in script
    assert unit["StateDirectory"] == ["sightwire"]  # /var/lib/sightwire, the model dir's parent
    assert unit["Restart"] == ["on-failure"] and unit["KillSignal"] == ["SIGTERM"]
    assert unit["DevicePolicy"] == ["closed"]
    allowed = {v.split()[0] for v in unit["DeviceAllow"]}
    assert {"char-video4linux", "char-media", "char-dma_heap", "char-usb_device"} <= allowed
    assert "video" in unit["SupplementaryGroups"][0].split()
    assert "network-online.target" in " ".join(unit["Wants"]) + " ".join(unit["After"])


# --- mosquitto.conf ------------------------------------------------------------------


class DropInBroker(Broker):
    """mosquitto laid out as Debian installs it, with deploy/mosquitto.conf as a drop-in.

    The main file is Debian's (persistence_location, log_dest, include_dir) with paths
    moved to a temp dir; it leaves out Debian's own `persistence true`, so persistence
    here comes from the drop-in. The drop-in gets this broker's port and password file.
    """

    def config(self) -> str:
        text = (DEPLOY / "mosquitto.conf").read_text()
        rewrites = {
            r"^listener 1883$": f"listener {self.port} {self.host}",
            r"^password_file /etc/mosquitto/passwd$": f"password_file {self.workdir / 'passwd'}",
        }
        for pattern, replacement in rewrites.items():
            text, count = re.subn(pattern, replacement, text, flags=re.M)
            assert count == 1, f"deploy/mosquitto.conf has no line {pattern!r}"
        (self.workdir / "conf.d").mkdir(exist_ok=True)
        (self.workdir / "conf.d" / "sightwire.conf").write_text(text)
        (self.workdir / "data").mkdir(exist_ok=True)
        main = [
            f"persistence_location {self.workdir / 'data'}/",
            f"log_dest file {self.log_path}",
            f"include_dir {self.workdir / 'conf.d'}",
        ]
        if os.geteuid() == 0:
            main.append("user root")
        return "\n".join(main) + "\n"


def mqtt_connect(broker: Broker, user: str | None = None, password: str | None = None):
    """Connect; returns (reason code, client). The client is connected only on success."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    if user is not None:
        client.username_pw_set(user, password)
    answered = threading.Event()
    result = {}

    def on_connect(c, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        answered.set()

    client.on_connect = on_connect
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert answered.wait(10), "no CONNACK"
    if result["rc"].is_failure:
        client.loop_stop()
        client.disconnect()
    return result["rc"], client


@pytest.mark.mqtt
def test_broker_config_wants_a_password_and_keeps_retained_messages(tmp_path, mosquitto_binary):
    passwd_tool = shutil.which("mosquitto_passwd")
    if passwd_tool is None:
        pytest.fail("mosquitto_passwd not found (it comes with the mosquitto package)")
    broker = DropInBroker(tmp_path / "broker", mosquitto_binary)
    subprocess.run(
        [passwd_tool, "-c", "-b", str(broker.workdir / "passwd"), "sightwire", "s3cret pass"],
        check=True,
    )
    broker.start()
    try:
        rc, _ = mqtt_connect(broker)
        assert rc.is_failure and "authori" in str(rc).lower(), f"anonymous client got {rc}"
        rc, _ = mqtt_connect(broker, "sightwire", "wrong")
        assert rc.is_failure, f"wrong password got {rc}"
        rc, client = mqtt_connect(broker, "sightwire", "s3cret pass")
        assert not rc.is_failure, rc
        client.publish("sightwire/pi/label", b"cat", qos=1, retain=True).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()

        broker.restart()  # SIGTERM: mosquitto saves its database, then starts from it
        rc, client = mqtt_connect(broker, "sightwire", "s3cret pass")
        got: list[bytes] = []
        arrived = threading.Event()
        client.on_message = lambda c, u, msg: (got.append(msg.payload), arrived.set())
        client.subscribe("sightwire/pi/label", qos=1)
        assert arrived.wait(10), "retained message lost over a restart"
        client.loop_stop()
        client.disconnect()
        assert got == [b"cat"]
    finally:
        broker.stop()
    assert "Error" not in broker.log(), broker.log()


# --- sightwire deploy: local checks and dry run ----------------------------------------


def write_manifest(folder: Path, model: Path, sha256: str | None = None) -> None:
    labels = (folder / "labels.txt").read_text().splitlines()
    manifest = {
        "format_version": 1,
        "name": "tiny imagenet",
        "created": "2026-11-22T10:00:00Z",
        "labels": [lab for lab in labels if lab.strip()],
        "input": {"width": 128, "height": 128, "color": "RGB", "resize": "bilinear",
                  "crop": "none", "normalization": {"mean": 127.5, "std": 127.5}},
        "models": {"int8": {"file": model.name, "input_dtype": "uint8",
                            "sha256": sha256 or hashlib.sha256(model.read_bytes()).hexdigest()}},
    }  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def bundle(tmp_path: Path, reference: Path) -> Path:
    """A real bundle: the small reference MobileNet, ImageNet labels, a correct manifest."""
    folder = tmp_path / "bundle"
    (folder / "report").mkdir(parents=True)
    model = folder / "model_int8.tflite"
    shutil.copy(reference / "mobilenet_v1_0.25_128_quant.tflite", model)
    write_imagenet_labels(folder, reference)
    (folder / "report" / "metrics.json").write_text('{"accuracy": 0.5}')
    (folder / ".DS_Store").write_bytes(b"junk")
    write_manifest(folder, model)
    return folder


def sightwire(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter, which must not have imported TensorFlow at the end."""
    code = (
        "import sys\nfrom device.cli import main\nrc = main(sys.argv[1:])\n"
        "assert 'tensorflow' not in sys.modules, 'deploy imported TensorFlow'\nsys.exit(rc)"
    )
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def printed_commands(stdout: str) -> list[str]:
    return [ln for ln in stdout.splitlines() if ln and not ln.startswith(("#", "bundle "))]


def test_deploy_dry_run_prints_the_commands(bundle: Path):
    proc = sightwire("deploy", str(bundle), "--host", "pi@raspberrypi.local", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = printed_commands(proc.stdout)
    assert [ln.split()[0] for ln in lines] == ["ssh", "rsync", "ssh", "ssh", "ssh", "ssh"]
    version = re.search(r"^# new version: /var/lib/sightwire/models/(\S+)$", proc.stdout, re.M)
    assert version and re.fullmatch(r"\d{8}T\d{6}Z-tiny-imagenet-[0-9a-f]{8}", version.group(1))
    partial = f"/var/lib/sightwire/models/{version.group(1)}.partial"
    assert lines[0].startswith("ssh -o ConnectTimeout=15 -- pi@raspberrypi.local ")
    assert f"mkdir -- {partial}" in lines[0]
    assert lines[1].endswith(f"{bundle}/ pi@raspberrypi.local:{partial}/")
    assert "sha256sum --check" in lines[2]
    assert "ln -sfn" in lines[3] and "mv -T -- /var/lib/sightwire/models/.current.new" in lines[3]
    assert "sudo -n systemctl restart sightwire.service" in lines[4]
    # The checksums fed to sha256sum -c on the Pi: every file but hidden ones.
    sums = dict(
        reversed(ln[4:].split("  ", 1)) for ln in proc.stdout.splitlines() if ln.startswith("#   ")
    )
    assert set(sums) == {"labels.txt", "manifest.json", "model_int8.tflite", "report/metrics.json"}
    for rel, digest in sums.items():
        assert digest == hashlib.sha256((bundle / rel).read_bytes()).hexdigest()


def test_deploy_dry_run_with_scp_and_mqtt_reload(bundle: Path):
    proc = sightwire(
        "deploy", str(bundle), "--host", "pi@raspberrypi.local", "--dry-run",
        "--transfer", "scp", "--mqtt", "sightwire/kitchen", "--remote-dir", "/srv/models/",
        "--ssh-opt", "Port=2222",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = printed_commands(proc.stdout)
    scp = lines[1].split()
    assert scp[:3] == ["scp", "-q", "-r"] and "Port=2222" in scp
    assert {f"{bundle}/model_int8.tflite", f"{bundle}/report"} <= set(scp)
    assert not any(".DS_Store" in word for word in scp)
    assert all("/srv/models" in ln for ln in lines[:4] + lines[5:])
    assert "/srv/models//" not in proc.stdout
    assert "mosquitto_pub -h localhost -p 1883 -q 1 -t sightwire/kitchen/cmd/reload -n" in lines[4]


def test_deploy_accepts_a_zip(bundle: Path, tmp_path: Path):
    archive = tmp_path / "caps.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in bundle.rglob("*"):
            zf.write(path, Path("caps") / path.relative_to(bundle))
    proc = sightwire("deploy", str(archive), "--host", "pi", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "model_int8.tflite" in proc.stdout and "sightwire-deploy-" in proc.stdout


def test_deploy_refuses_a_bundle_with_a_wrong_hash(bundle: Path):
    write_manifest(bundle, bundle / "model_int8.tflite", sha256="0" * 64)
    proc = sightwire("deploy", str(bundle), "--host", "pi@raspberrypi.local", "--dry-run")
    assert proc.returncode == 1
    assert "sha256 does not match manifest.json" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "rsync" not in proc.stdout and "ssh" not in proc.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--host", "-oProxyCommand=touch /tmp/pwned"], "--host"),
        (["--host", "pi@host;reboot"], "--host"),
        (["--host", "pi", "--remote-dir", "models"], "--remote-dir"),
        (["--host", "pi", "--remote-dir", "/srv/$(reboot)"], "--remote-dir"),
        (["--host", "pi", "--remote-dir", "/srv/../etc"], "--remote-dir"),
        (["--host", "pi", "--mqtt", "sightwire/#"], "--mqtt"),
        (["--host", "pi", "--ssh-opt=-oProxyCommand=x"], "--ssh-opt"),
        (["--host", "pi", "--ssh-opt", "ProxyCommand"], "--ssh-opt"),
        (["--host", "pi", "--keep", "-1"], "--keep"),
    ],
)
def test_deploy_rejects_hostile_or_bad_arguments(bundle: Path, extra, message):
    proc = sightwire("deploy", str(bundle), *extra, "--dry-run")
    assert proc.returncode == 2, proc.stdout  # a flag's value: a usage error
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_deploy_rejects_a_single_model_file(reference: Path):
    proc = sightwire(
        "deploy", str(reference / "mobilenet_v1_0.25_128_quant.tflite"), "--host", "pi", "--dry-run"
    )
    assert proc.returncode == 1
    assert "give the bundle directory or its .zip" in proc.stderr


def tools_dir(tmp_path: Path, names: list[str]) -> str:
    """A PATH holding only the named real tools (a machine without the others)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in names:
        real = shutil.which(name)
        if real is None:
            pytest.skip(f"{name} not installed")
        (folder / name).symlink_to(real)
    return str(folder)


def test_deploy_without_ssh_says_so(bundle: Path, tmp_path: Path):
    proc = sightwire(
        "deploy", str(bundle), "--host", "pi", "--dry-run", path=tools_dir(tmp_path, [])
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "sightwire deploy: error: ssh not found: install the OpenSSH client "
        "(apt install openssh-client)"
    )


def test_deploy_without_rsync_falls_back_to_scp(bundle: Path, tmp_path: Path):
    path = tools_dir(tmp_path, ["ssh", "scp"])
    proc = sightwire("deploy", str(bundle), "--host", "pi", "--dry-run", path=path)
    assert proc.returncode == 0, proc.stderr
    assert printed_commands(proc.stdout)[1].startswith("scp ")
    forced = sightwire(
        "deploy", str(bundle), "--host", "pi", "--dry-run", "--transfer", "rsync", path=path
    )
    assert forced.returncode == 1 and "rsync not found here" in forced.stderr


def test_prunable_keeps_the_newest_and_current_and_leaves_foreign_names():
    names = [
        "20260101T000000Z-caps-00000001",
        "20260102T000000Z-caps-00000002",
        "20260103T000000Z-bolts-00000003",
        "20260104T000000Z-caps-00000004",
        "20260102T120000Z-caps-0000000a.partial",  # a failed earlier upload
        "20260101T000000Z-caps-0000000b.partial",  # older stamp, but still being copied
        "current",
        "my-hand-copied-model",
    ]
    dead = {"20260102T120000Z-caps-0000000a.partial", "my-hand-copied-model"}
    doomed = prunable(names, current="20260104T000000Z-caps-00000004", keep=2, abandoned=dead)
    assert doomed == [
        "20260101T000000Z-caps-00000001",
        "20260102T000000Z-caps-00000002",
        "20260102T120000Z-caps-0000000a.partial",
    ]
    # A rollback (current pointing at an old version) keeps that version too.
    assert "20260101T000000Z-caps-00000001" not in prunable(
        names, current="20260101T000000Z-caps-00000001", keep=1
    )
    # What previous names stays, however old.
    assert "20260101T000000Z-caps-00000001" not in prunable(
        names, current="20260104T000000Z-caps-00000004", keep=1,
        previous="20260101T000000Z-caps-00000001",
    )  # fmt: skip
    # A partial copy goes only when the device found it abandoned, whatever its stamp.
    assert prunable(names, current="x", keep=0, abandoned=dead) == [
        "20260102T120000Z-caps-0000000a.partial"
    ]
    assert prunable(names, current="x", keep=0) == []


# --- sightwire deploy over real SSH --------------------------------------------------


class Sshd:
    """A real OpenSSH server on a free loopback port, logging in this user by key."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.port = free_port()
        self.user = getpass.getuser()
        for name in ("hostkey", "id"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / name)],
                check=True,
            )
        shutil.copy(workdir / "id.pub", workdir / "authorized_keys")
        (workdir / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {workdir / 'hostkey'}\n"
            f"PidFile {workdir / 'sshd.pid'}\nAuthorizedKeysFile {workdir / 'authorized_keys'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nLogLevel ERROR\n"
        )
        self.log = open(workdir / "sshd.log", "w")  # noqa: SIM115 - open while sshd runs
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(workdir / "sshd_config")],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        try:
            wait_port("127.0.0.1", self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                f"sshd did not start: {(workdir / 'sshd.log').read_text()}"
            ) from None

    @property
    def host(self) -> str:
        return f"{self.user}@127.0.0.1"

    @property
    def ssh_opts(self) -> list[str]:
        return [
            f"Port={self.port}",
            f"IdentityFile={self.dir / 'id'}",
            "IdentitiesOnly=yes",
            f"UserKnownHostsFile={self.dir / 'known_hosts'}",
            "StrictHostKeyChecking=accept-new",
            "BatchMode=yes",
        ]

    def deploy_args(self, bundle: Path, remote_dir: Path, *extra: str) -> list[str]:
        opts = [x for opt in self.ssh_opts for x in ("--ssh-opt", opt)]
        return [
            "deploy",
            str(bundle),
            "--host",
            self.host,
            "--remote-dir",
            str(remote_dir),
            *opts,
            *extra,
        ]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    for tool in ("ssh", "scp", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install openssh-client)")
    if not os.access(SSHD, os.X_OK):
        pytest.skip(f"{SSHD} not installed (apt-get install openssh-server)")
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        # sshd's privilege-separation directory, which its own systemd unit makes.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def versions(remote: Path) -> list[str]:
    return sorted(p.name for p in remote.iterdir() if p.name != "current")


def retouch(bundle: Path, n: int) -> Path:
    """The same model with other content (another report): another version."""
    (bundle / "report" / "metrics.json").write_text(json.dumps({"accuracy": n / 100}))
    return bundle


def test_deploy_over_ssh_switches_current_and_prunes(sshd: Sshd, bundle: Path, tmp_path: Path):
    remote = tmp_path / "pi-models"
    remote.mkdir()
    (remote / "my-own-model").mkdir()  # not ours: never pruned
    first = sightwire(*sshd.deploy_args(bundle, remote, "--no-reload"))
    assert first.returncode == 0, first.stderr
    [v1] = [v for v in versions(remote) if v != "my-own-model"]
    assert os.readlink(remote / "current") == v1  # relative: the tree can move
    assert not (remote / "previous").exists()  # nothing ran before
    for rel in ("model_int8.tflite", "labels.txt", "manifest.json", "report/metrics.json"):
        assert (remote / "current" / rel).read_bytes() == (bundle / rel).read_bytes()
    assert not (remote / "current" / ".DS_Store").exists()
    assert (remote / "current" / "model_int8.tflite").stat().st_mode & 0o004  # daemon can read
    assert (remote / v1).stat().st_mode & 0o070 == 0o070  # the group (cmd/update) prunes it

    time.sleep(1.1)  # the next version gets a later stamp
    second = sightwire(
        *sshd.deploy_args(
            retouch(bundle, 2), remote, "--no-reload", "--transfer", "scp", "--keep", "1"
        )
    )
    assert second.returncode == 0, second.stderr
    v2 = os.readlink(remote / "current")
    assert "with scp" in second.stdout and v2 != v1
    # previous → what current named before; so it is kept, --keep 1 or not.
    assert os.readlink(remote / "previous") == v1
    assert f"previous → {remote}/{v1} (what a rollback goes back to)" in second.stdout
    assert "removed" not in second.stdout and versions(remote) == sorted(
        [v1, v2, "my-own-model", "previous"]
    )

    time.sleep(1.1)
    third = sightwire(*sshd.deploy_args(retouch(bundle, 3), remote, "--no-reload", "--keep", "1"))
    assert third.returncode == 0, third.stderr
    v3 = os.readlink(remote / "current")
    assert os.readlink(remote / "previous") == v2
    assert f"removed 1 old version(s): {v1}" in third.stdout
    assert versions(remote) == sorted([v2, v3, "my-own-model", "previous"])
    assert (remote / "current" / "report" / "metrics.json").is_file()
    assert not list(remote.glob("*.partial")) and not list(remote.glob(".*.new"))


def test_deploy_after_an_ota_update_keeps_what_a_rollback_needs(
    sshd: Sshd, bundle: Path, tmp_path: Path, reference: Path
):
    """cmd/update, then deploy --keep 1: previous names what ran before the deploy (the
    update's version), which is kept; the daemon's rollback reaches it."""
    remote = tmp_path / "pi-models"
    small = make_bundle(tmp_path / "small", reference, SMALL, "small", 128)
    big = make_bundle(tmp_path / "big", reference, BIG, "big", 224)
    served = tmp_path / "served"
    served.mkdir()
    big_zip = zip_dir(big, served / "big.zip")
    first = version_name("small", content_id_of(small), "20260101T000000Z")
    shutil.copytree(small, remote / first)
    os.symlink(first, remote / "current")

    outcome = run_update(remote / "current", served, f"file://{big_zip}")
    assert outcome.error is None and outcome.installed is not None, outcome.error
    updated = outcome.installed.version
    assert os.readlink(remote / "previous") == first

    proc = sightwire(*sshd.deploy_args(bundle, remote, "--no-reload", "--keep", "1"))
    assert proc.returncode == 0, proc.stderr
    deployed = os.readlink(remote / "current")
    assert os.readlink(remote / "previous") == updated, "previous must name what ran before"
    assert (remote / updated).is_dir()
    assert f"removed 1 old version(s): {first}" in proc.stdout  # named by no link any more
    assert versions(remote) == sorted([updated, deployed, "previous"])

    # The daemon's own rollback (cmd/update {"rollback": true}) goes back to the update.
    store = ModelStore.of(remote / "current")
    assert store.rollback() == (updated, deployed)
    assert load_bundle(remote / "current").name == "big"


def test_deploy_of_what_current_holds_changes_nothing(sshd: Sshd, bundle: Path, tmp_path: Path):
    """The same content again: no copy, no switch; the daemon is still told (the deploy
    before switched with --no-reload: "deploy again" must make the Pi run it); --force
    deploys it anyway, and previous keeps naming the other model."""
    remote = tmp_path / "pi-models"
    remote.mkdir()
    no_unit = ("--service", "sightwire-test-no-such-unit.service")
    other = sightwire(*sshd.deploy_args(retouch(bundle, 1), remote, "--no-reload"))
    assert other.returncode == 0, other.stderr
    v0 = os.readlink(remote / "current")
    time.sleep(1.1)
    first = sightwire(*sshd.deploy_args(retouch(bundle, 2), remote, "--no-reload"))
    assert first.returncode == 0, first.stderr
    v1 = os.readlink(remote / "current")
    before = versions(remote)

    again = sightwire(*sshd.deploy_args(bundle, remote, "--no-reload"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"already installed: current on {sshd.host} names {v1}" in again.stdout
    assert "nothing copied or switched (--force deploys it again)" in again.stdout
    assert "copying" not in again.stdout and "daemon not reloaded" in again.stdout
    assert versions(remote) == before and os.readlink(remote / "current") == v1
    assert os.readlink(remote / "previous") == v0
    told = sightwire(*sshd.deploy_args(bundle, remote, *no_unit))  # the restart is tried
    assert told.returncode == 1 and "already installed" in told.stdout, told.stdout
    assert f"new model in place (current → {v1}) but the reload failed" in told.stderr
    assert versions(remote) == before and os.readlink(remote / "current") == v1

    # Files that differ from the bundle's (same name, so same content id): copied anew.
    (remote / v1 / "report" / "metrics.json").write_text("changed on the Pi")
    time.sleep(1.1)
    repaired = sightwire(*sshd.deploy_args(bundle, remote, "--no-reload"))
    assert repaired.returncode == 0 and "already installed" not in repaired.stdout
    v2 = os.readlink(remote / "current")
    assert v2 != v1 and cid_of(v2) == cid_of(v1)
    assert os.readlink(remote / "previous") == v0  # not v1: that holds this model too

    time.sleep(1.1)
    forced = sightwire(*sshd.deploy_args(bundle, remote, "--force", "--no-reload"))
    assert forced.returncode == 0, forced.stderr
    assert "already installed" not in forced.stdout and "copying" in forced.stdout
    assert os.readlink(remote / "current") not in (v1, v2)
    assert os.readlink(remote / "previous") == v0


def test_deploy_refuses_a_model_the_daemon_could_not_load(sshd: Sshd, bundle: Path, tmp_path: Path):
    """1001 outputs, 5 labels, hashes right: refused here, before anything is copied."""
    labels = (bundle / "labels.txt").read_text().splitlines()[:5]
    (bundle / "labels.txt").write_text("\n".join(labels) + "\n")
    write_manifest(bundle, bundle / "model_int8.tflite")
    remote = tmp_path / "pi-models"
    remote.mkdir()
    (remote / "20260101T000000Z-good-00000000").mkdir()
    os.symlink("20260101T000000Z-good-00000000", remote / "current")
    before = sorted(os.listdir(remote))
    for extra in ((), ("--dry-run",)):
        proc = sightwire(*sshd.deploy_args(bundle, remote, "--no-reload", *extra))
        assert proc.returncode == 1, proc.stdout
        assert "model has 1001 outputs but there are 5 labels" in proc.stderr
        assert "the daemon would refuse this model; nothing was copied" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "copying" not in proc.stdout and "ssh " not in proc.stdout
    assert sorted(os.listdir(remote)) == before
    assert os.readlink(remote / "current") == "20260101T000000Z-good-00000000"


def sightwire_without_runtime(*args: str) -> subprocess.CompletedProcess:
    """The CLI where no TFLite runtime can be imported (a workstation without one)."""
    code = (
        "import sys\n"
        "for name in ('ai_edge_litert', 'tflite_runtime', 'tensorflow'):\n"
        "    sys.modules[name] = None  # import raises ImportError\n"
        "from device.cli import main\nsys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_deploy_without_a_runtime_says_so_and_goes_on_only_with_no_verify(bundle: Path):
    refused = sightwire_without_runtime("deploy", str(bundle), "--host", "pi", "--dry-run")
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert "cannot open the model here to check it (no TFLite runtime found" in line
    assert "--no-verify" in line
    unchecked = sightwire_without_runtime(
        "deploy", str(bundle), "--host", "pi", "--dry-run", "--no-verify"
    )
    assert unchecked.returncode == 0, unchecked.stderr
    assert "model not opened here (--no-verify)" in unchecked.stdout
    assert "sha256 of 1 model file checked against manifest.json" in unchecked.stdout


def test_deploy_says_what_was_checked(bundle: Path, tmp_path: Path, reference: Path):
    proc = sightwire("deploy", str(bundle), "--host", "pi", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert (
        "; sha256 of 1 model file checked against manifest.json; int8 model opened and ran here"
        in proc.stdout
    )
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(reference / SMALL, bare / "model.tflite")
    shutil.copy(reference / "imagenet_labels.txt", bare / "labels.txt")
    proc = sightwire("deploy", str(bare), "--host", "pi", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "sha256 checked" not in proc.stdout
    assert "no manifest.json: no sha256 to check here; int8 model opened and ran here" in (
        proc.stdout
    )


def test_deploy_names_an_ssh_failure_once(bundle: Path, tmp_path: Path):
    closed = free_port()  # nothing listens there
    proc = sightwire(
        "deploy", str(bundle), "--host", "pi@127.0.0.1", "--ssh-opt", f"Port={closed}",
        "--ssh-opt", "BatchMode=yes", "--ssh-opt", f"UserKnownHostsFile={tmp_path / 'kh'}",
        "--no-reload",
    )  # fmt: skip
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert f"preparing on pi@127.0.0.1 failed: ssh: connect to host 127.0.0.1 port {closed}" in line
    assert "ssh: ssh:" not in line


def test_deploy_leaves_a_copy_still_arriving_and_removes_an_abandoned_one(
    sshd: Sshd, bundle: Path, tmp_path: Path
):
    """Another deploy's .partial with an older stamp is left while anything in it is
    fresh; one untouched for over an hour (a deploy that died) is removed."""
    remote = tmp_path / "pi-models"
    remote.mkdir()
    arriving = remote / "20200101T000000Z-caps-0000000a.partial"
    (arriving / "report").mkdir(parents=True)
    (arriving / "report" / "metrics.json").write_text("being written")  # fresh, deep down
    dead = remote / "20200101T000000Z-caps-0000000b.partial"
    (dead / "report").mkdir(parents=True)
    (dead / "report" / "metrics.json").write_text("left behind")
    hours_ago = time.time() - 2 * 3600
    for path in (
        arriving,
        arriving / "report",
        dead,
        dead / "report",
        dead / "report/metrics.json",
    ):
        os.utime(path, (hours_ago, hours_ago))
    proc = sightwire(*sshd.deploy_args(bundle, remote, "--no-reload"))
    assert proc.returncode == 0, proc.stderr
    assert arriving.is_dir() and (arriving / "report" / "metrics.json").is_file()
    assert not dead.exists()
    assert (
        f"removed 1 abandoned copy(ies), nothing written to them for 60 minutes: {dead.name}"
        in (proc.stdout)
    )


def deployment_for(sshd: Sshd, bundle: Path, remote: Path) -> Deployment:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(sshd.deploy_args(bundle, remote)[1:])
    validate(args)
    return Deployment(args, payload_of(load_bundle(bundle)), "rsync")


def test_a_copy_removed_under_a_deploy_fails_in_one_clear_line(
    sshd: Sshd, bundle: Path, tmp_path: Path
):
    remote = tmp_path / "pi-models"
    remote.mkdir()
    ssh = Remote(sshd.host, sshd.ssh_opts, None)
    # Removed while being copied: another deploy's prune, then the copy fails (rsync
    # says "some files could not be transferred", exit 23).
    deployment = deployment_for(sshd, bundle, remote)
    steps = deployment.steps(ssh)
    deployment._do("preparing", steps["prepare"])
    racing = ssh.ssh(f"rm -rf -- {shlex.quote(deployment.partial)}; exit 23")
    steps["copy"] = Step("a copy whose folder another deploy removes", racing)
    with pytest.raises(DeployError) as failed:
        deployment.land(ssh, steps)
    message = str(failed.value)
    assert "\n" not in message
    assert f"{deployment.partial} was removed there while it was being copied" in message
    assert "nothing was switched, the running model is unchanged; deploy again" in message
    # Removed between the copy and the switch.
    deployment = deployment_for(sshd, bundle, remote)
    steps = deployment.steps(ssh)
    deployment._do("preparing", steps["prepare"])
    deployment.land(ssh, steps)
    shutil.rmtree(deployment.partial)
    with pytest.raises(DeployError, match="was removed there before the switch"):
        deployment._switch(steps["switch"])
    assert not (remote / "current").exists()


def test_deploy_over_ssh_removes_a_copy_that_does_not_match(
    sshd: Sshd, bundle: Path, tmp_path: Path
):
    """The Pi gets other bytes than were hashed here: the copy is dropped, current stays."""
    remote = tmp_path / "pi-models"
    remote.mkdir()
    (remote / "current").symlink_to("old")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(sshd.deploy_args(bundle, remote)[1:])
    validate(args)
    deployment = Deployment(args, payload_of(load_bundle(bundle)), "rsync")
    steps = deployment.steps(Remote(sshd.host, sshd.ssh_opts, None))
    model = bundle / "model_int8.tflite"
    model.write_bytes(model.read_bytes()[:-10])  # after hashing: as if cut short on the way
    deployment._do("preparing", steps["prepare"])
    assert Path(deployment.partial).is_dir()
    with pytest.raises(DeployError, match=r"model_int8.tflite: FAILED.*running model is unchanged"):
        deployment.land(Remote(sshd.host, sshd.ssh_opts, None), steps)
    assert not Path(deployment.partial).exists()
    assert os.readlink(remote / "current") == "old"


def test_deploy_over_ssh_explains_a_missing_model_dir(sshd: Sshd, bundle: Path, tmp_path: Path):
    proc = sightwire(*sshd.deploy_args(bundle, tmp_path / "nowhere", "--no-reload"))
    assert proc.returncode == 1
    assert "no such directory on the Pi (run deploy/install-pi.sh there first)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.mqtt
def test_deploy_over_ssh_reloads_through_mqtt(
    sshd: Sshd, bundle: Path, tmp_path: Path, broker, recorder
):
    if shutil.which("mosquitto_pub") is None:
        pytest.skip("mosquitto_pub not installed (apt-get install mosquitto-clients)")
    remote = tmp_path / "pi-models"
    remote.mkdir()
    proc = sightwire(
        *sshd.deploy_args(bundle, remote, "--mqtt", "sightwire/kitchen", "--mqtt-host", broker.host,
                          "--mqtt-port", str(broker.port))
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    message = recorder.wait_for("sightwire/kitchen/cmd/reload")
    assert message.payload == b"" and not message.retain
    assert (remote / "current" / "model_int8.tflite").is_file()


def test_a_dangling_current_does_not_become_previous(sshd: Sshd, bundle: Path, tmp_path: Path):
    """``current``'s folder removed by hand: the next deploy must keep ``previous`` on a
    model that is there, not move it onto the dead link (a rollback then had nowhere to go)."""
    remote = tmp_path / "pi-models"
    remote.mkdir()
    for k in (1, 2):
        proc = sightwire(*sshd.deploy_args(retouch(bundle, k), remote, "--no-reload"))
        assert proc.returncode == 0, proc.stderr
        time.sleep(1.1)
    v1, v2 = os.readlink(remote / "previous"), os.readlink(remote / "current")
    shutil.rmtree(remote / v2)  # by hand
    proc = sightwire(*sshd.deploy_args(retouch(bundle, 3), remote, "--no-reload"))
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(remote / "previous") == v1 and (remote / v1).is_dir()
    store = ModelStore(remote / "current")  # the daemon's own switch, the same rule
    store.switch(v1)
    shutil.rmtree(remote / v1)
    store.switch(os.readlink(remote / "previous"))
    assert (remote / os.readlink(remote / "previous")).is_dir()
