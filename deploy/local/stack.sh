#!/usr/bin/env bash
# The whole local stack: Kafka, PostgreSQL, schema, topics, then the PromptPulse services.
#   stack.sh up      start everything (idempotent: what already runs is left as it is)
#   stack.sh infra   only Kafka + PostgreSQL + schema + topics (what the tests need)
#   stack.sh down    stop what `up` started, services first
#   stack.sh status  one line per component; exit 1 if any is down
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

healthy() { "$PY" - "$1" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
PY
}

start_service() {
  local name=$1 pid_file="$RUN_DIR/$1.pid"
  if pid_alive "$pid_file"; then log "$name: already running"; return 0; fi
  log "$name: starting (log $LOG_DIR/$name.log)"
  nohup "$VENV_DIR/bin/promptpulse" "$name" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$pid_file"
  for _ in $(seq 1 60); do
    healthy "${HEALTH[$name]}" && { log "$name: ready (${HEALTH[$name]%/healthz})"; return 0; }
    pid_alive "$pid_file" || break
    sleep 0.5
  done
  tail -n 20 "$LOG_DIR/$name.log" >&2
  die "$name: did not become healthy"
}

# The aggregator's API keys for the local stack: taken from the environment, else made once and
# kept (mode 0600) beside the demo key in the git-ignored .local/keys/.
api_keys() {
  local dir="$LOCAL_DIR/keys" name var
  mkdir -p "$dir"
  for name in read admin; do
    var="PROMPTPULSE_API_${name^^}_KEY"
    if [ -z "${!var:-}" ]; then
      if [ ! -s "$dir/api-$name.key" ]; then
        (umask 077; "$PY" -c 'import secrets; print("ppapi_" + secrets.token_urlsafe(32))' >"$dir/api-$name.key")
      fi
      export "$var=$(cat "$dir/api-$name.key")"
    fi
  done
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
  api_keys
  for name in "${SERVICES[@]}"; do start_service "$name"; done
  local demo_key gw="http://127.0.0.1:${PROMPTPULSE_GATEWAY__PORT:-8080}"
  demo_key=$("$PY" -m services.gateway.demo_key 2>/dev/null || echo '<run: python -m services.gateway.demo_key>')
  cat >&2 <<MSG

PromptPulse local stack is up.
  Gateway (demo deployment):          $gw/v1/deployments/demo/score
  Demo API key:                       $demo_key  (also in .local/keys/demo.key)
  Try it:  curl -s $gw/v1/deployments/demo/score -H "api-key: $demo_key" \\
             -H 'content-type: application/json' -d '{"question": "What is sampled?"}'
  Aggregator query API:               http://127.0.0.1:${PROMPTPULSE_AGGREGATOR__PORT:-8081}/v1/deployments
  API read key:                       .local/keys/api-read.key (admin: api-admin.key)
  Processor (health, metrics):        http://127.0.0.1:${PROMPTPULSE_PROCESSOR__PORT:-8083}/metrics
  LLM simulator (OpenAI-compatible):  http://127.0.0.1:${PROMPTPULSE_LLMSIM__PORT:-8082}/v1
  Kafka:                              127.0.0.1:9092
  PostgreSQL:                         127.0.0.1:5432/promptpulse
  Logs:                               $LOG_DIR
  Stop it with:                       make down
MSG
}

down() {
  local i
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
  return $bad
}

case "${1:-}" in
  up) up ;;
  infra) infra ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|infra|down|status" >&2; exit 2 ;;
esac
