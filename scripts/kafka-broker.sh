#!/usr/bin/env bash
# Controls a Kafka-protocol test broker (tansu, built by .ci/build-tansu.sh) on 127.0.0.1.
#   scripts/kafka-broker.sh start|stop|restart|fresh
# Environment:
#   TIDEMILL_KAFKA_PORT     port to listen on (default 9092)
#   TIDEMILL_KAFKA_STORAGE  memory (default: fast, loses everything on restart) or sqlite (keeps
#                           the log across a restart, consumes slowly)
#   TIDEMILL_KAFKA_DIR      state directory (default $TMPDIR/tidemill-kafka, with -PORT appended
#                           for a port other than 9092)
# Each port is a broker of its own, with its own state directory, log and pid file.
set -euo pipefail
cache="${TIDEMILL_CACHE:-$HOME/.cache/tidemill}"
bin="$cache/tansu-0.6.0/bin/tansu"
port="${TIDEMILL_KAFKA_PORT:-9092}"
default_state="${TMPDIR:-/tmp}/tidemill-kafka"
if [ "$port" != 9092 ]; then default_state="$default_state-$port"; fi
state="${TIDEMILL_KAFKA_DIR:-$default_state}"
pidfile="$state/tansu.pid"
storage="${TIDEMILL_KAFKA_STORAGE:-memory}"
case "$storage" in
  memory) engine=memory://tansu/ ;;
  sqlite) engine=sqlite://tansu.db ;;
  *) echo "kafka-broker: TIDEMILL_KAFKA_STORAGE is memory or sqlite, not $storage" >&2; exit 2 ;;
esac

up() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

start() {
  if up; then return 0; fi
  if [ ! -x "$bin" ]; then
    echo "kafka-broker: $bin is missing: run .ci/build-tansu.sh" >&2
    exit 1
  fi
  # tansu reads ./.env: start it in an empty directory of its own.
  mkdir -p "$state/work"
  (cd "$state/work" && exec nohup "$bin" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$engine" >>"$state/tansu.log" 2>&1 9>&-) &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    if up; then return 0; fi
    sleep 0.1
  done
  echo "kafka-broker: tansu did not start; see $state/tansu.log" >&2
  exit 1
}

stop() {
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 100); do
      if ! up; then break; fi
      sleep 0.1
    done
    rm -f "$pidfile"
  fi
}

mkdir -p "$state"
exec 9>"$state/lock"
flock 9
case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  fresh) stop; rm -rf "$state/work"; start ;;
  *) echo "usage: $0 start|stop|restart|fresh" >&2; exit 2 ;;
esac
