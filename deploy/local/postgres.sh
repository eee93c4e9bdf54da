#!/usr/bin/env bash
# A real PostgreSQL for the local stack, without Docker.
# If PROMPTPULSE_DATABASE_URL names a server that is not on this machine's loopback, that server
# is used and nothing is started or stopped here. Otherwise Debian's `postgresql` package
# (installed when missing) runs its `main` cluster on 127.0.0.1:5432, with the role, password and
# database of the URL (default: promptpulse / promptpulse / promptpulse). `initdb` refuses to run as root, which is
# why the Debian cluster tools (pg_createcluster / pg_ctlcluster, running as `postgres`) are used.
#   postgres.sh up | down | status
#   postgres.sh fresh-db   drop and re-create the local database (CI starts from an empty one)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DEFAULT_URL="postgresql://promptpulse:promptpulse@127.0.0.1:5432/promptpulse"
# host port user password database, from the URL (stdlib only: this runs before any venv exists).
read -r PG_HOST PG_PORT DB_USER DB_PASSWORD DB_NAME < <(python3 - "${PROMPTPULSE_DATABASE_URL:-$DEFAULT_URL}" <<'PY'
import sys
from urllib.parse import unquote, urlsplit
u = urlsplit(sys.argv[1])
print(u.hostname or "127.0.0.1", u.port or 5432, unquote(u.username or "promptpulse"),
      unquote(u.password or "promptpulse"), (u.path or "/promptpulse").lstrip("/") or "promptpulse")
PY
)
for value in "$DB_USER" "$DB_NAME"; do
  [[ "$value" =~ ^[a-z_][a-z0-9_]*$ ]] || die "postgres: role and database names must match [a-z_][a-z0-9_]* (got '$value')"
done
[[ "$DB_PASSWORD" != *"'"* ]] || die "postgres: the password may not contain a quote"
external() { [[ "$PG_HOST" != "127.0.0.1" && "$PG_HOST" != "localhost" && "$PG_HOST" != "::1" ]]; }
STARTED_MARK="$RUN_DIR/postgres.started-by-promptpulse"

pg_version() { ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n1; }

install_server() {
  if [ -n "$(pg_version)" ] && [ -x "/usr/lib/postgresql/$(pg_version)/bin/postgres" ] && command -v pg_ctlcluster >/dev/null; then
    return 0
  fi
  log "postgres: installing Debian's postgresql package"
  as_root apt-get update -qq >"$LOG_DIR/apt.log" 2>&1 || die "apt-get update failed, see $LOG_DIR/apt.log"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >>"$LOG_DIR/apt.log" 2>&1 \
    || die "apt-get install postgresql failed, see $LOG_DIR/apt.log"
}

cluster_running() { pg_lsclusters -h 2>/dev/null | awk -v v="$1" '$1==v && $2=="main" {print $4}' | grep -q online; }

psql_admin() { as_root runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" "$@"; }

up() {
  if external; then log "postgres: using the server at $PG_HOST:$PG_PORT (not started here)"; return 0; fi
  install_server
  local ver; ver=$(pg_version)
  if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$ver main"; then
    log "postgres: creating cluster $ver/main"
    as_root pg_createcluster --port "$PG_PORT" "$ver" main >>"$LOG_DIR/postgres.log" 2>&1
  fi
  if cluster_running "$ver"; then
    log "postgres: cluster $ver/main already running"
  else
    log "postgres: starting cluster $ver/main"
    as_root pg_ctlcluster "$ver" main start >>"$LOG_DIR/postgres.log" 2>&1 || {
      tail -n 20 "/var/log/postgresql/postgresql-$ver-main.log" >&2 || true
      die "postgres: pg_ctlcluster start failed"
    }
    touch "$STARTED_MARK"
  fi
  for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 0.5; done
  pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || die "postgres: not accepting connections on 127.0.0.1:$PG_PORT"
  # Role and database, idempotently. CREATEDB lets the integration tests make a database per test.
  psql_admin -d postgres <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
  END IF;
END \$\$;
SQL
  if ! psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
    psql_admin -d postgres -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >/dev/null
  fi
  log "postgres: ready (postgresql://$DB_USER:***@127.0.0.1:$PG_PORT/$DB_NAME)"
}

down() {
  if external; then log "postgres: external server, not stopped"; return 0; fi
  # Stop only a cluster this script started: a server someone else runs is left alone.
  if [ -f "$STARTED_MARK" ]; then
    as_root pg_ctlcluster "$(pg_version)" main stop >>"$LOG_DIR/postgres.log" 2>&1 || true
    rm -f "$STARTED_MARK"
    log "postgres: stopped"
  else
    log "postgres: not started by promptpulse, left running"
  fi
}

fresh_db() {
  external && die "postgres: fresh-db only touches the local server"
  up
  psql_admin -d postgres -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null
  psql_admin -d postgres -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >/dev/null
  log "postgres: database $DB_NAME is new and empty"
}

status() {
  local host=$PG_HOST port=$PG_PORT
  if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then echo "postgres: up ($host:$port)"; else echo "postgres: down"; return 1; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  fresh-db) fresh_db ;;
  *) echo "usage: $0 up|down|status|fresh-db" >&2; exit 2 ;;
esac
