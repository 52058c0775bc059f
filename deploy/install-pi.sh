#!/usr/bin/env bash
# Install sightwire on a Raspberry Pi as a systemd service.
#
# Target: Raspberry Pi OS Bookworm, 64-bit, with a camera (and optionally a Coral
# Edge TPU). Run it from a copy of the repository's deploy/ folder:
#
#   sudo ./deploy/install-pi.sh [--with-broker] [--with-edgetpu] [--from PATH]
#
# Idempotent: run it again to upgrade sightwire or to add a flag. What it owns
# (the venv, the unit file) is brought up to date; what you own (the config in
# /etc/sightwire, deployed models, the broker's password file) is never
# overwritten. --dry-run prints every step and every command without changing
# anything; a real run prints the same lines as it goes.
#
# Why a venv with --system-site-packages: picamera2 needs libcamera and comes
# from apt (python3-picamera2), not from PyPI; the venv sees it and gets the rest
# (LiteRT, paho-mqtt, ...) from pip, without touching the system's Python.
set -Eeuo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROG=$(basename "$0")

SERVICE_USER=sightwire
SERVICE=sightwire.service
PREFIX=/opt/sightwire
VENV=$PREFIX/venv
CONF_DIR=/etc/sightwire
CONF=$CONF_DIR/sightwire.toml
STATE_DIR=/var/lib/sightwire
MODEL_DIR=$STATE_DIR/models
KEPT_DIR=$STATE_DIR/kept   # [keep]: frames the model was unsure of, for `sightwire pull`
UNIT=/etc/systemd/system/$SERVICE
# pip constraints that keep apt's numpy (see the file): installed beside the venv.
CONSTRAINTS=$PREFIX/pi-constraints.txt
BROKER_CONF=/etc/mosquitto/conf.d/sightwire.conf
BROKER_PASSWD=/etc/mosquitto/passwd
# Coral's apt repository, signed with Google's package key (apt-key is gone:
# the key goes to its own keyring, named by the sources entry's signed-by).
CORAL_KEY_URL=https://packages.cloud.google.com/apt/doc/apt-key.gpg
CORAL_KEYRING=/etc/apt/keyrings/coral-edgetpu.gpg
CORAL_LIST=/etc/apt/sources.list.d/coral-edgetpu.list
CORAL_REPO="deb [signed-by=$CORAL_KEYRING] https://packages.cloud.google.com/apt coral-edgetpu-stable main"

usage() {
  cat <<EOF
Usage: sudo $PROG [options]

Install sightwire on a Raspberry Pi (Bookworm, 64-bit) as a systemd service:
apt packages, a venv in $VENV with sightwire[device], the system user
'$SERVICE_USER', $CONF (kept if present), $MODEL_DIR and $SERVICE.

Options:
  --with-broker      also install the mosquitto broker with password auth
                     ($BROKER_CONF, users in $BROKER_PASSWD)
  --with-edgetpu     add Coral's apt repository (and its signing key) and install
                     libedgetpu1-std, the Edge TPU runtime for the USB Accelerator
  --from SPEC        what pip installs: a wheel, an sdist or a source folder
                     (installed with the [device] extra), or a pip requirement
                     (default: 'sightwire[device]' from PyPI)
  --deploy-user USER user allowed to deploy models over SSH without sudo (added to
                     group $SERVICE_USER; default: the user that ran sudo)
  --no-start         install and enable the service, but do not (re)start it now
  --uninstall        stop and remove the service, the venv and the user; keep
                     $CONF_DIR and $MODEL_DIR (remove those by hand)
  --dry-run          print every step and command; change nothing
  -h, --help         this help
EOF
}

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

# One command, printed as a shell line, then run (unless --dry-run).
quote() {
  local word out=()
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      out+=("$word")
    else
      out+=("'${word//\'/\'\\\'\'}'")
    fi
  done
  printf '%s' "${out[*]}"
}
run() {
  printf '  + %s\n' "$(quote "$@")"
  if [[ $dry_run -eq 0 ]]; then "$@"; fi
}
# A pipeline or redirection: one string made only of this script's constants.
run_shell() {
  printf '  + %s\n' "$1"
  if [[ $dry_run -eq 0 ]]; then bash -o pipefail -c "$1"; fi
}
# A check whose failure is worth a warning, not an abort.
run_soft() {
  local hint=$1
  shift
  printf '  + %s\n' "$(quote "$@")"
  if [[ $dry_run -eq 0 ]] && ! "$@"; then warn "$hint"; fi
}

with_broker=0
with_edgetpu=0
start=1
uninstall=0
dry_run=0
package="sightwire[device]"
spec=""
deploy_user=${SUDO_USER:-}

while [[ $# -gt 0 ]]; do
  case $1 in
    --with-broker) with_broker=1 ;;
    --with-edgetpu) with_edgetpu=1 ;;
    --from)
      [[ $# -ge 2 && -n $2 ]] || die "--from needs a wheel, sdist, folder or requirement"
      package=$2
      shift
      ;;
    --from=*) package=${1#--from=} ;;
    --deploy-user)
      [[ $# -ge 2 && -n $2 ]] || die "--deploy-user needs a user name"
      deploy_user=$2
      shift
      ;;
    --deploy-user=*) deploy_user=${1#--deploy-user=} ;;
    --no-start) start=0 ;;
    --uninstall) uninstall=1 ;;
    --dry-run | -n) dry_run=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      printf '%s: error: unknown option %s (see --help)\n' "$PROG" "$1" >&2
      exit 2
      ;;
  esac
  shift
done

trap 'printf "%s: error: step failed (exit %s): %s\n" "$PROG" "$?" "$BASH_COMMAND" >&2' ERR

have_systemd() { [[ -d /run/systemd/system ]]; }
has_user() { getent passwd "$1" >/dev/null 2>&1; }
has_group() { getent group "$1" >/dev/null 2>&1; }

preflight() {
  # Mistakes in the arguments first, then the machine.
  if [[ $uninstall -eq 0 ]]; then
    [[ -f $SCRIPT_DIR/$SERVICE ]] || die "$SCRIPT_DIR/$SERVICE not found: run this script from the repository's deploy/ folder"
    [[ -f $SCRIPT_DIR/sightwire.toml ]] || die "$SCRIPT_DIR/sightwire.toml (the example config) not found beside this script"
    [[ -f $SCRIPT_DIR/pi-constraints.txt ]] || die "$SCRIPT_DIR/pi-constraints.txt (pip constraints that keep apt's numpy) not found beside this script"
    if [[ $with_broker -eq 1 ]]; then
      [[ -f $SCRIPT_DIR/mosquitto.conf ]] || die "$SCRIPT_DIR/mosquitto.conf not found beside this script"
    fi
    pip_spec
  fi
  if [[ $dry_run -eq 1 ]]; then
    say "dry run: nothing is changed; these are the steps and commands of a real run"
  elif [[ $EUID -ne 0 ]]; then
    die "run as root: sudo $0 (or --dry-run to see what it would do)"
  fi
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script is for Raspberry Pi OS / Debian"
  local id="" codename="" arch
  if [[ -r /etc/os-release ]]; then
    # shellcheck disable=SC1091
    id=$(. /etc/os-release && echo "${ID:-}") codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  fi
  [[ $codename == bookworm ]] || warn "made for Raspberry Pi OS Bookworm; this is ${id:-unknown} ${codename:-?}"
  arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
  case $arch in
    arm64 | aarch64) ;;
    armhf | armel | armv7l | armv6l) die "32-bit OS ($arch): LiteRT has no wheels for it; install Raspberry Pi OS (64-bit)" ;;
    *) warn "made for a Raspberry Pi (arm64); this machine is $arch" ;;
  esac
}

# pip's argument for --from: a local wheel/sdist/folder gets the [device] extra and
# its absolute path; anything else is a pip requirement as written.
pip_spec() {
  spec=$package
  if [[ -e $package ]]; then
    local path
    path=$(realpath "$package")
    [[ -d $path || $path == *.whl || $path == *.tar.gz || $path == *.zip ]] ||
      die "--from $package: expected a wheel (.whl), an sdist (.tar.gz/.zip) or a source folder"
    spec="${path}[device]"
  elif [[ $package == */* || $package == *.whl || $package == *.tar.gz ]]; then
    die "--from $package: no such file or folder"
  fi
}

install_packages() {
  local pkgs=(python3-venv python3-picamera2 rsync mosquitto-clients)
  # rsync: what `sightwire deploy` copies models with. mosquitto-clients:
  # mosquitto_pub/_sub, for `sightwire deploy --mqtt` and for checking the broker.
  if [[ $with_broker -eq 1 ]]; then pkgs+=(mosquitto); fi
  if [[ $with_edgetpu -eq 1 ]]; then pkgs+=(ca-certificates curl gpg); fi
  say "apt packages: ${pkgs[*]}"
  run apt-get update
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}"
}

install_edgetpu() {
  [[ $with_edgetpu -eq 1 ]] || return 0
  say "Edge TPU runtime from Coral's apt repository"
  run install -d -m 0755 /etc/apt/keyrings
  if [[ -s $CORAL_KEYRING ]]; then
    note "$CORAL_KEYRING exists, kept"
  else
    run_shell "curl -fsSL $CORAL_KEY_URL | gpg --dearmor --yes -o $CORAL_KEYRING"
    run chmod 0644 "$CORAL_KEYRING"
  fi
  run_shell "echo '$CORAL_REPO' > $CORAL_LIST"
  run apt-get update
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y libedgetpu1-std
  note "libedgetpu1-std is the standard clock; libedgetpu1-max runs faster and hotter (swap by hand)"
}

create_user() {
  say "system user '$SERVICE_USER' (no login; HOME $STATE_DIR)"
  if has_user "$SERVICE_USER"; then
    note "user $SERVICE_USER exists, kept"
  else
    run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
      --shell /usr/sbin/nologin --comment "sightwire daemon" "$SERVICE_USER"
  fi
  # video: the camera. plugdev: the USB Edge TPU (libedgetpu's udev rule).
  # apex: the PCIe/M.2 Edge TPU (gasket driver's udev rule), where installed.
  local groups=(video) group
  if [[ $with_edgetpu -eq 1 ]]; then
    groups+=(plugdev)
    if has_group apex; then groups+=(apex); else note "no group apex (no PCIe Edge TPU driver): skipped"; fi
  fi
  for group in "${groups[@]}"; do
    if ! has_group "$group"; then
      run groupadd --system "$group"  # shown in a dry run too: a real run would do it
    fi
    run usermod --append --groups "$group" "$SERVICE_USER"
  done
  if [[ -n $deploy_user && $deploy_user != root ]]; then
    if has_user "$deploy_user"; then
      run usermod --append --groups "$SERVICE_USER" "$deploy_user"
      note "$deploy_user may deploy models to $MODEL_DIR without sudo (from its next login)"
    else
      warn "--deploy-user $deploy_user: no such user, skipped"
    fi
  fi
}

install_venv() {
  say "venv $VENV (sees apt's picamera2) with $spec"
  run install -d -m 0755 "$PREFIX"
  if [[ -x $VENV/bin/python ]] && grep -qs '^include-system-site-packages = true' "$VENV/pyvenv.cfg"; then
    note "venv exists, kept (upgrading sightwire in it)"
  elif [[ -x $VENV/bin/python ]]; then
    note "venv exists without system site packages (picamera2 invisible): recreating it"
    run python3 -m venv --clear --system-site-packages "$VENV"
  else
    run python3 -m venv --system-site-packages "$VENV"
  fi
  # --upgrade: a re-run brings sightwire up to date; its dependencies move only
  # when it needs newer ones (pip's default only-if-needed strategy). The
  # constraints keep apt's numpy, which picamera2's compiled modules were built
  # against: without them the newest OpenCV and ml-dtypes would pull in numpy 2.
  # The venv's pip.conf names them too, so a later `pip install` there keeps them.
  run install -m 0644 "$SCRIPT_DIR/pi-constraints.txt" "$CONSTRAINTS"
  run_shell "printf '[install]\\nconstraint = %s\\n' $CONSTRAINTS > $VENV/pip.conf"
  run "$VENV/bin/python" -m pip install --upgrade --constraint "$CONSTRAINTS" "$spec"
  run_soft "the venv has its own numpy, not apt's: picamera2 may fail (see $CONSTRAINTS)" \
    "$VENV/bin/python" -c "import numpy, sys; sys.exit(not numpy.__file__.startswith('/usr/'))"
  run "$VENV/bin/sightwire" --version
  run_soft "picamera2 is not importable in the venv: is python3-picamera2 installed?" \
    "$VENV/bin/python" -c "import picamera2"
}

install_config() {
  say "config $CONF (yours: never overwritten)"
  run install -d -m 0755 "$CONF_DIR"
  if [[ -e $CONF ]]; then
    note "$CONF exists, kept"
  else
    # 0640 root:sightwire: it may hold the MQTT password.
    run install -m 0640 -o root -g "$SERVICE_USER" "$SCRIPT_DIR/sightwire.toml" "$CONF"
    note "edit it: the broker ([mqtt]) and the device id, then: sudo systemctl restart sightwire"
  fi
}

make_model_dir() {
  say "model directory $MODEL_DIR (versions + the 'current' symlink)"
  run install -d -m 0755 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE_DIR"
  # setgid, group-writable: members of group sightwire (the deploy user) add
  # versions, which stay group sightwire so the next deploy can prune them.
  run install -d -m 2775 -o "$SERVICE_USER" -g "$SERVICE_USER" "$MODEL_DIR"
  # Group-writable too: `sightwire pull` (the deploy user) removes what it fetched.
  run install -d -m 2775 -o "$SERVICE_USER" -g "$SERVICE_USER" "$KEPT_DIR"
}

install_broker() {
  [[ $with_broker -eq 1 ]] || return 0
  say "mosquitto broker with password auth ($BROKER_CONF)"
  if [[ -e $BROKER_CONF ]]; then
    note "$BROKER_CONF exists, kept"
  else
    run install -m 0644 "$SCRIPT_DIR/mosquitto.conf" "$BROKER_CONF"
  fi
  if [[ -e $BROKER_PASSWD ]]; then
    note "$BROKER_PASSWD exists, kept"
  else
    # mosquitto will not start without the file; an empty one admits nobody.
    run install -m 0640 -o root -g mosquitto /dev/null "$BROKER_PASSWD"
    note "add a user: sudo mosquitto_passwd $BROKER_PASSWD sightwire && sudo systemctl reload mosquitto"
  fi
  if have_systemd; then
    run systemctl enable mosquitto.service
    if [[ $start -eq 1 ]]; then run systemctl restart mosquitto.service; fi
  else
    warn "systemd is not running: enable and start mosquitto yourself"
  fi
}

install_unit() {
  say "systemd unit $UNIT"
  run install -m 0644 "$SCRIPT_DIR/$SERVICE" "$UNIT"
  if ! have_systemd; then
    warn "systemd is not running (a container or chroot?): enable the unit after boot"
    run systemctl enable "$SERVICE"
    return 0
  fi
  run systemctl daemon-reload
  run systemctl enable "$SERVICE"
  if [[ $start -eq 0 ]]; then
    note "not started (--no-start): sudo systemctl start sightwire"
  elif [[ ! -e $MODEL_DIR/current ]]; then
    note "not started: no model yet. From your computer:"
    note "  sightwire deploy BUNDLE --host ${deploy_user:-pi}@$(hostname).local"
    note "copies it to $MODEL_DIR/current and starts the service."
  else
    run systemctl reset-failed "$SERVICE"
    run systemctl restart "$SERVICE"
  fi
}

uninstall() {
  say "uninstall: service, unit, venv and user (config and models are kept)"
  if [[ -e $UNIT ]]; then
    if have_systemd; then run systemctl disable --now "$SERVICE"; else run systemctl disable "$SERVICE"; fi
    run rm -f "$UNIT"
  else
    note "$UNIT absent"
  fi
  if have_systemd; then run systemctl daemon-reload; fi
  if [[ -e $PREFIX ]]; then run rm -rf "$PREFIX"; else note "$PREFIX absent"; fi
  if has_user "$SERVICE_USER"; then run userdel "$SERVICE_USER"; else note "user $SERVICE_USER absent"; fi
  # userdel keeps the group while it has members (the deploy user).
  if has_group "$SERVICE_USER"; then run groupdel "$SERVICE_USER"; fi
  note "kept: $CONF_DIR and $STATE_DIR; remove them with: sudo rm -rf $CONF_DIR $STATE_DIR"
  note "kept: apt packages (python3-picamera2, mosquitto, libedgetpu1-std, ...)"
}

preflight
if [[ $uninstall -eq 1 ]]; then
  uninstall
  exit 0
fi
install_packages
install_edgetpu
create_user
install_venv
install_config
make_model_dir
install_broker
install_unit
if [[ $dry_run -eq 1 ]]; then
  say "dry run done: nothing was changed"
else
  say "done. Logs: journalctl -u sightwire -f"
fi
