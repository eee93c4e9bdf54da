#!/usr/bin/env bash
# A real PostgreSQL for the local stack, without Docker.
# If PROMPTPULSE_DATABASE_URL is set, that server is used and nothing is started or stopped here.
# Otherwise Debian's `postgresql` package (installed when missing) runs its `main` cluster on
# 127.0.0.1:5432 with role and database `promptpulse`. `initdb` refuses to run as root, which is
# why the Debian cluster tools (pg_createcluster / pg_ctlcluster, running as `postgres`) are used.
#   postgres.sh up | down | status
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PG_PORT=5432
DB_NAME=promptpulse
DB_USER=promptpulse
DB_PASSWORD="${PROMPTPULSE_LOCAL_PG_PASSWORD:-promptpulse}"
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
  if [ -n "${PROMPTPULSE_DATABASE_URL:-}" ]; then log "postgres: using PROMPTPULSE_DATABASE_URL (not started here)"; return 0; fi
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
  if [ -n "${PROMPTPULSE_DATABASE_URL:-}" ]; then log "postgres: external server, not stopped"; return 0; fi
  # Stop only a cluster this script started: a server someone else runs is left alone.
  if [ -f "$STARTED_MARK" ]; then
    as_root pg_ctlcluster "$(pg_version)" main stop >>"$LOG_DIR/postgres.log" 2>&1 || true
    rm -f "$STARTED_MARK"
    log "postgres: stopped"
  else
    log "postgres: not started by promptpulse, left running"
  fi
}

status() {
  local host=127.0.0.1 port=$PG_PORT
  if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then echo "postgres: up ($host:$port)"; else echo "postgres: down"; return 1; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
