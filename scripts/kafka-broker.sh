#!/usr/bin/env bash
# Controls the Kafka-protocol test broker (tansu, built by .ci/build-tansu.sh) on 127.0.0.1:9092,
# with SQLite storage so a restart keeps the log.
#   scripts/kafka-broker.sh start|stop|restart|fresh
set -euo pipefail
cache="${TIDEMILL_CACHE:-$HOME/.cache/tidemill}"
bin="$cache/tansu-0.6.0/bin/tansu"
state="${TIDEMILL_KAFKA_DIR:-${TMPDIR:-/tmp}/tidemill-kafka}"
pidfile="$state/tansu.pid"
# memory:// is fast; sqlite:// keeps the log across a restart (the restart scenario needs it).
storage="${TIDEMILL_KAFKA_STORAGE:-sqlite}"

up() { (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; }

start() {
  if up; then return 0; fi
  if [ ! -x "$bin" ]; then
    echo "kafka-broker: $bin is missing: run .ci/build-tansu.sh" >&2
    exit 1
  fi
  # tansu reads ./.env: start it in an empty directory of its own.
  mkdir -p "$state/work"
  (cd "$state/work" && exec nohup "$bin" broker \
    --listener-url tcp://127.0.0.1:9092 \
    --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine "$( [ "$storage" = memory ] && echo memory://tansu/ || echo sqlite://tansu.db )" >>"$state/tansu.log" 2>&1 9>&-) &
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
