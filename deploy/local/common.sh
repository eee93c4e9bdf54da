# Shared by the deploy/local scripts: where state, logs and the virtualenv live.
# Everything the local stack writes goes under one git-ignored folder (PROMPTPULSE_LOCAL_DIR).
set -euo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOCAL_DIR="${PROMPTPULSE_LOCAL_DIR:-$REPO_DIR/.local}"
LOG_DIR="$LOCAL_DIR/logs"
RUN_DIR="$LOCAL_DIR/run"
VENV_DIR="${PROMPTPULSE_VENV:-$REPO_DIR/.venv}"
PY="$VENV_DIR/bin/python"
mkdir -p "$LOG_DIR" "$RUN_DIR"
# The local stack talks to PostgreSQL over loopback, where TLS only costs CPU (about 40% of the
# aggregator's ingest rate, measured with bench/aggregator_throughput.py).
export PROMPTPULSE_DATABASE__SSL="${PROMPTPULSE_DATABASE__SSL:-disable}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Run as root when we are not (apt-get, pg_ctlcluster need it); CI and these machines run as root.
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Prefix of a background command that must outlive the terminal's Ctrl-C: `make up` ends by
# following alerts in the foreground, and Ctrl-C there signals the whole process group, which
# the services started from it would otherwise share (Python services handle SIGINT). setsid
# runs the command in a session of its own, under the same pid (a background job of a script
# is no group leader, so setsid does not fork), which keeps `$!` right for the pid file.
DETACH="$(command -v setsid || true)"

# stop_pidfile FILE NAME: SIGTERM, wait up to 30 s, then SIGKILL.
stop_pidfile() {
  local file=$1 name=$2 pid
  if ! pid_alive "$file"; then rm -f "$file"; log "$name: not running"; return 0; fi
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "$name: still running after 30 s, killing"; kill -9 "$pid" || true; fi
  rm -f "$file"
  log "$name: stopped"
}
