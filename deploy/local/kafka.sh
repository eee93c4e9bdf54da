#!/usr/bin/env bash
# A real single-node Apache Kafka (KRaft mode) for the local stack, without Docker.
#   kafka.sh fetch   jars from Maven Central (mvn), cached under .local/kafka/jars
#   kafka.sh up      fetch if needed, format storage once, start, wait until the broker answers
#   kafka.sh down    stop the broker this script started
#   kafka.sh kill    SIGKILL it (fault tests)
#   kafka.sh status  exit 0 when running and answering
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

KAFKA_PORT="${PROMPTPULSE_LOCAL_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${PROMPTPULSE_LOCAL_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP="${PROMPTPULSE_LOCAL_KAFKA_HEAP:-512m}"
KAFKA_DIR="$LOCAL_DIR/kafka"
JARS_DIR="${PROMPTPULSE_LOCAL_KAFKA_JARS:-$KAFKA_DIR/jars}"
DATA_DIR="$KAFKA_DIR/data"
CONF_DIR="$REPO_DIR/deploy/local/kafka"
PID_FILE="$RUN_DIR/kafka.pid"
STAMP="$JARS_DIR/.pom.sha256"

fetch() {
  local want
  want=$(sha256sum "$CONF_DIR/pom.xml" | cut -d' ' -f1)
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install -y maven)"
  command -v java >/dev/null || die "java not found: install a JDK 17 (apt-get install -y openjdk-17-jre-headless)"
  log "kafka: fetching broker jars from Maven Central (once; cached in $JARS_DIR)"
  rm -rf "$JARS_DIR"; mkdir -p "$JARS_DIR"
  mvn -q -B -f "$CONF_DIR/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$JARS_DIR" -DincludeScope=runtime >"$LOG_DIR/kafka-fetch.log" 2>&1 \
    || die "kafka: mvn failed, see $LOG_DIR/kafka-fetch.log"
  echo "$want" >"$STAMP"
}

answering() {
  [ -x "$PY" ] || return 1
  "$PY" "$REPO_DIR/deploy/local/wait_kafka.py" "127.0.0.1:$KAFKA_PORT" "${1:-2}" >/dev/null 2>&1
}

up() {
  fetch
  if pid_alive "$PID_FILE"; then
    answering 30 || die "kafka: process $(cat "$PID_FILE") is running but not answering on :$KAFKA_PORT"
    log "kafka: already running on 127.0.0.1:$KAFKA_PORT"; return 0
  fi
  mkdir -p "$DATA_DIR"
  local props="$KAFKA_DIR/server.properties"
  sed -e "s|@PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" -e "s|@DATA_DIR@|$DATA_DIR|g" \
    "$CONF_DIR/server.properties.in" >"$props"
  local cp="$JARS_DIR/*"
  if [ ! -f "$DATA_DIR/meta.properties" ]; then
    local cluster_id
    cluster_id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
    log "kafka: formatting storage (cluster $cluster_id)"
    java -cp "$cp" -Dlog4j.configuration="file:$CONF_DIR/log4j.properties" kafka.tools.StorageTool \
      format -t "$cluster_id" -c "$props" >>"$LOG_DIR/kafka.log" 2>&1 || die "kafka: format failed, see $LOG_DIR/kafka.log"
  fi
  log "kafka: starting on 127.0.0.1:$KAFKA_PORT (heap $KAFKA_HEAP, log $LOG_DIR/kafka.log)"
  $DETACH nohup java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j.configuration="file:$CONF_DIR/log4j.properties" \
    -cp "$cp" kafka.Kafka "$props" >>"$LOG_DIR/kafka.log" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  # The port opening is not enough: wait until a metadata request is answered.
  if ! answering 90; then
    tail -n 30 "$LOG_DIR/kafka.log" >&2
    die "kafka: broker did not answer within 90 s"
  fi
  log "kafka: ready"
}

case "${1:-}" in
  fetch) fetch ;;
  up) up ;;
  down) stop_pidfile "$PID_FILE" kafka ;;
  kill) if pid_alive "$PID_FILE"; then kill -9 "$(cat "$PID_FILE")"; rm -f "$PID_FILE"; log "kafka: killed"; fi ;;
  status) if pid_alive "$PID_FILE" && answering 5; then echo "kafka: up (127.0.0.1:$KAFKA_PORT)"; else echo "kafka: down"; exit 1; fi ;;
  *) echo "usage: $0 fetch|up|down|kill|status" >&2; exit 2 ;;
esac
