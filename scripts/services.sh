#!/usr/bin/env bash
# Starts each local service the tests use that is not answering, with this machine's own commands.
set -euo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local name=$1 port=$2
  for _ in $(seq 1 60); do
    if up "$port"; then return 0; fi
    sleep 1
  done
  echo "services: $name did not come up on port $port" >&2
  return 1
}

start() {
  local name=$1 port=$2; shift 2
  if up "$port"; then
    echo "services: $name is up on $port"
    return 0
  fi
  echo "services: starting $name"
  "$@"
  wait_for "$name" "$port"
}

start PostgreSQL 5432 pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
start MariaDB 3306 start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
start Redis 6379 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
  --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
start RabbitMQ 5672 rabbitmq-server -detached
start Mosquitto 1883 mosquitto -d -c /etc/mosquitto/mosquitto.conf
start NATS 4222 start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
  -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
