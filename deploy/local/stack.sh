#!/usr/bin/env bash
# The whole local stack: Kafka, PostgreSQL, schema, topics, then the PromptPulse services.
#   stack.sh up      start everything (idempotent: what already runs is left as it is), with the
#                    demo's traffic generator and llmsim's quality drift (docs/demo.md)
#   stack.sh infra   only Kafka + PostgreSQL + schema + topics (what the tests need)
#   stack.sh down    stop what `up` started, traffic and services first
#   stack.sh status  one line per component; exit 1 if any is down
#   stack.sh banner  what the demo shows and when (printed by `make up` before it follows alerts)
#   stack.sh env NAME  the names (never the values) of the PROMPTPULSE_* variables service NAME
#                    (or traffic) is started with: each gets only the secrets it uses
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
HERE="$REPO_DIR/deploy/local"

# name → health URL; services are started in this order and stopped in reverse.
SERVICES=(llmsim aggregator processor gateway)
declare -A HEALTH=(
  [llmsim]="http://127.0.0.1:${PROMPTPULSE_LLMSIM__PORT:-8082}/healthz"
  [aggregator]="http://127.0.0.1:${PROMPTPULSE_AGGREGATOR__PORT:-8081}/healthz"
  [processor]="http://127.0.0.1:${PROMPTPULSE_PROCESSOR__PORT:-8083}/healthz"
  [gateway]="http://127.0.0.1:${PROMPTPULSE_GATEWAY__PORT:-8080}/healthz"
)

# The demo (docs/demo.md): llmsim degrades variant_1's answers 3 minutes after it starts, and a
# traffic generator asks the demo deployment 4 questions a second. Both can be changed:
# PROMPTPULSE_LLMSIM__DRIFT_SCHEDULE (a JSON list of steps, '[]' for no drift), PROMPTPULSE_DEMO__*
# (the generator's settings, services/demo/settings.py), PROMPTPULSE_DEMO_TRAFFIC=off (no generator).
DEMO_DRIFT='[{"variant": "variant_1", "level": 0.7, "after_seconds": 180}]'
export PROMPTPULSE_LLMSIM__DRIFT_SCHEDULE="${PROMPTPULSE_LLMSIM__DRIFT_SCHEDULE:-$DEMO_DRIFT}"
TRAFFIC_PID="$RUN_DIR/traffic.pid"
GATEWAY_URL="http://127.0.0.1:${PROMPTPULSE_GATEWAY__PORT:-8080}"
DASHBOARD_URL="http://127.0.0.1:${PROMPTPULSE_AGGREGATOR__PORT:-8081}/"
# Alerts sent to Alertmanager link back to the dashboard through this address (docs/alerting.md).
export PROMPTPULSE_AGGREGATOR__PUBLIC_URL="${PROMPTPULSE_AGGREGATOR__PUBLIC_URL:-${DASHBOARD_URL%/}}"
LLMSIM_URL="http://127.0.0.1:${PROMPTPULSE_LLMSIM__PORT:-8082}"

traffic_enabled() { [ "${PROMPTPULSE_DEMO_TRAFFIC:-on}" != off ]; }

healthy() { "$PY" - "$1" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
PY
}

start_service() {
  local name=$1 pid_file="$RUN_DIR/$1.pid"
  if pid_alive "$pid_file"; then log "$name: already running"; return 0; fi
  log "$name: starting (log $LOG_DIR/$name.log)"
  with_secrets_of "$name" $DETACH nohup "$VENV_DIR/bin/promptpulse" "$name" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$pid_file"
  for _ in $(seq 1 60); do
    healthy "${HEALTH[$name]}" && { log "$name: ready (${HEALTH[$name]%/healthz})"; return 0; }
    pid_alive "$pid_file" || break
    sleep 0.5
  done
  tail -n 20 "$LOG_DIR/$name.log" >&2
  die "$name: did not become healthy"
}

# The demo's traffic generator: not a server, so "started" means still alive a moment later.
start_traffic() {
  if ! traffic_enabled; then log "traffic: off (PROMPTPULSE_DEMO_TRAFFIC=off)"; return 0; fi
  if pid_alive "$TRAFFIC_PID"; then log "traffic: already running"; return 0; fi
  log "traffic: starting (log $LOG_DIR/traffic.log)"
  PROMPTPULSE_GATEWAY_URL="${PROMPTPULSE_GATEWAY_URL:-$GATEWAY_URL}" \
    with_secrets_of traffic $DETACH nohup "$PY" -m services.demo traffic >>"$LOG_DIR/traffic.log" 2>&1 </dev/null &
  echo $! >"$TRAFFIC_PID"
  sleep 2
  if ! pid_alive "$TRAFFIC_PID"; then
    tail -n 20 "$LOG_DIR/traffic.log" >&2
    die "traffic: exited at start"
  fi
  log "traffic: sending ${PROMPTPULSE_DEMO__RATE:-4} requests/s to the demo deployment, and a quarter as many through demo-proxy"
}

# When llmsim's drift steps start, from its control API (a line each; nothing if unreachable).
drift_times() { "$PY" - "$LLMSIM_URL/control/state" <<'PY' 2>/dev/null || true
import json, sys, urllib.request
from datetime import datetime, timezone
state = json.load(urllib.request.urlopen(sys.argv[1], timeout=2))
now = datetime.now(timezone.utc)
for step in state["drift"]["schedule"]:
    start = datetime.fromisoformat(step["starts_at"])
    wait = (start - now).total_seconds()
    when = f"in {wait // 60:.0f} min {wait % 60:.0f} s" if wait > 0 else "already started"
    print(f"{step['variant']} to level {step['level']:g} at {start.astimezone():%H:%M:%S} ({when})")
PY
}

# Where alerts go besides the terminal: the Alertmanager URLs (host and port only: a URL may
# hold a password), or how to set them.
alert_destinations() {
  local urls=${PROMPTPULSE_AGGREGATOR__MONITORS__ALERTMANAGER__URLS:-}
  if [ -n "$urls" ]; then
    echo "Alertmanager at $(echo "$urls" | tr -d '[]"' | sed -E 's#(https?://)([^/@,]*@)?([^/,]*)[^,]*#\1\3#g')"
  else
    echo "none besides this terminal and the alerts topic; to send them to Alertmanager, set
               PROMPTPULSE_AGGREGATOR__MONITORS__ALERTMANAGER__URLS=http://127.0.0.1:9093 before
               \`make up\` (deploy/alertmanager/alertmanager.yml routes to Slack, PagerDuty, e-mail);
               or straight to Slack, Teams or PagerDuty: a \`destinations:\` entry in
               deploy/local/deployments/demo.yaml naming the variable with the URL (docs/alerting.md)"
  fi
}

banner() {
  local drift rule alerts
  rule="──────────────────────────────────────────────────────────────────────────────"
  drift=$(drift_times | paste -sd ';' | sed 's/;/; /g')
  alerts=$(alert_destinations)
  cat >&2 <<MSG

$rule
 PromptPulse demo
   Running:    Kafka, PostgreSQL, llmsim (the LLM simulator), gateway, processor, aggregator,
               and a traffic generator: ${PROMPTPULSE_DEMO__RATE:-4} questions/s to the "demo" deployment,
               split between its two prompt variants, variant_0 and variant_1, and one more a second
               through "demo-proxy", the OpenAI-compatible proxy, asked with the openai SDK.
   Your app:   watched the same way by changing two settings of its openai client:
               base_url="$GATEWAY_URL/v1" (Azure: azure_endpoint="$GATEWAY_URL"), api_key= the
               key in .local/keys/demo-proxy.key (docs/proxy.md).
   Dashboard:  $DASHBOARD_URL  (read key: .local/keys/api-read.key)
   Drift:      ${drift:-see PROMPTPULSE_LLMSIM__DRIFT_SCHEDULE}
   Alerts to:  $alerts
   What next:  llmsim's quality drift makes one variant's answers worse; about 4 minutes
               after it starts, that variant's relevance monitor fires and the alert, naming the
               variant, is printed below. Watch the quality chart of the dashboard meanwhile.
   Ctrl-C stops watching alerts; the stack keeps running (\`make watch\` follows them again,
   \`make down\` stops everything). Logs: $LOG_DIR
$rule
MSG
}

# The aggregator's API keys for the local stack: taken from the environment, else made once and
# kept (mode 0600) beside the demo key in the git-ignored .local/keys/. Held in this script's own
# variables, not exported: with_secrets_of hands them to the aggregator only.
API_KEY_VARS=(PROMPTPULSE_API_READ_KEY PROMPTPULSE_API_ADMIN_KEY)
declare -A API_KEYS=()
api_keys() {
  local dir="$LOCAL_DIR/keys" name var
  mkdir -p "$dir"
  for name in read admin; do
    var="PROMPTPULSE_API_${name^^}_KEY"
    if [ -n "${!var:-}" ]; then
      API_KEYS[$var]=${!var}
    else
      if [ ! -s "$dir/api-$name.key" ]; then
        (umask 077; "$PY" -c 'import secrets; print("ppapi_" + secrets.token_urlsafe(32))' >"$dir/api-$name.key")
      fi
      API_KEYS[$var]=$(cat "$dir/api-$name.key")
    fi
  done
}

# with_secrets_of NAME COMMAND...: exec COMMAND with the query API's keys only when NAME is the
# aggregator (the one service that serves that API); every other process goes without them, even
# when they are exported in the caller's environment. It execs, keeping the pid the pid file
# records: call it only as a background job or in a pipeline (a subshell, whose exports and
# unsets end with it). The keys travel in the environment, never on a command line (`env
# VAR=key`), which any local user can read in ps.
with_secrets_of() {
  local name=$1 var; shift
  for var in "${API_KEY_VARS[@]}"; do
    if [ "$name" = aggregator ] && [ -n "${API_KEYS[$var]:-}" ]; then export "$var=${API_KEYS[$var]}"
    else unset "$var"; fi
  done
  exec "$@"
}

# The PROMPTPULSE_* names a service is started with, one a line (values never printed).
service_env() {
  api_keys
  with_secrets_of "$1" env | sed -n 's/^\(PROMPTPULSE_[A-Za-z0-9_]*\)=.*/\1/p' | sort
}

infra() {
  [ -x "$PY" ] || die "virtualenv missing at $VENV_DIR: run \`make install\` first"
  bash "$HERE/postgres.sh" up
  bash "$HERE/kafka.sh" up
  "$VENV_DIR/bin/promptpulse" migrate
  "$VENV_DIR/bin/promptpulse" topics
}

up() {
  infra
  # The shipped flows' Python requirements, constrained to the services' own versions (docs/flows.md).
  "$VENV_DIR/bin/promptpulse" flows install "$REPO_DIR/deploy/local/deployments"
  api_keys
  for name in "${SERVICES[@]}"; do start_service "$name"; done
  start_traffic
  local demo_key proxy_key gw="$GATEWAY_URL"
  demo_key=$("$PY" -m shared.demo_key 2>/dev/null || echo '<run: python -m shared.demo_key>')
  proxy_key=$("$PY" -m shared.demo_key demo-proxy 2>/dev/null || echo '<run: python -m shared.demo_key demo-proxy>')
  cat >&2 <<MSG

PromptPulse local stack is up.
  Gateway (demo deployment):          $gw/v1/deployments/demo/score
  Demo API key:                       $demo_key  (also in .local/keys/demo.key)
  Try it:  curl -s $gw/v1/deployments/demo/score -H "api-key: $demo_key" \\
             -H 'content-type: application/json' -d '{"question": "What is sampled?"}'
  Proxy (demo-proxy, the OpenAI API): $gw/v1  (Azure OpenAI clients: azure_endpoint $gw)
  Proxy key:                          $proxy_key  (also in .local/keys/demo-proxy.key)
  Point an app at it:  OpenAI(base_url="$gw/v1", api_key="$proxy_key")  (docs/proxy.md)
  Dashboard:                          $DASHBOARD_URL
  Aggregator query API:               http://127.0.0.1:${PROMPTPULSE_AGGREGATOR__PORT:-8081}/v1/deployments
  API read key:                       .local/keys/api-read.key (admin: api-admin.key)
  Processor (health, metrics):        http://127.0.0.1:${PROMPTPULSE_PROCESSOR__PORT:-8083}/metrics
  LLM simulator (OpenAI-compatible):  $LLMSIM_URL/v1  (drift: PROMPTPULSE_LLMSIM__DRIFT_SCHEDULE)
  Traffic generator:                  $(traffic_enabled && echo "${PROMPTPULSE_DEMO__RATE:-4} requests/s, log $LOG_DIR/traffic.log" || echo off)
  Kafka:                              127.0.0.1:9092
  PostgreSQL:                         127.0.0.1:5432/promptpulse
  Logs:                               $LOG_DIR
  Stop it with:                       make down
MSG
}

down() {
  local i
  stop_pidfile "$TRAFFIC_PID" traffic
  for ((i=${#SERVICES[@]}-1; i>=0; i--)); do stop_pidfile "$RUN_DIR/${SERVICES[$i]}.pid" "${SERVICES[$i]}"; done
  bash "$HERE/kafka.sh" down
  bash "$HERE/postgres.sh" down
}

status() {
  local bad=0 name
  bash "$HERE/postgres.sh" status || bad=1
  bash "$HERE/kafka.sh" status || bad=1
  for name in "${SERVICES[@]}"; do
    if pid_alive "$RUN_DIR/$name.pid" && healthy "${HEALTH[$name]}"; then echo "$name: up"; else echo "$name: down"; bad=1; fi
  done
  if ! traffic_enabled; then echo "traffic: off"
  elif pid_alive "$TRAFFIC_PID"; then echo "traffic: up ($(tail -n 1 "$LOG_DIR/traffic.log" 2>/dev/null | cut -c1-120))"
  else echo "traffic: down"; bad=1; fi
  return $bad
}

case "${1:-}" in
  up) up ;;
  infra) infra ;;
  down) down ;;
  status) status ;;
  banner) banner ;;
  env) [ -n "${2:-}" ] || { echo "usage: $0 env SERVICE" >&2; exit 2; }; service_env "$2" ;;
  *) echo "usage: $0 up|infra|down|status|banner|env SERVICE" >&2; exit 2 ;;
esac
