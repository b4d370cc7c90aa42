#!/usr/bin/env bash
# Runs every test of the workspace against the local brokers: starts the ones that are down, builds
# the Kafka-protocol test broker once (cached outside the clone), then runs the tests that share
# brokers in parallel and the ones that restart a broker one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
if [ -d crates/tidemill-kafka ]; then
  .ci/build-tansu.sh
  # A fresh broker for this run (in memory: fast), stopped when the run ends.
  TIDEMILL_KAFKA_STORAGE=memory scripts/kafka-broker.sh fresh
  trap 'scripts/kafka-broker.sh stop' EXIT
fi

export TIDEMILL_CONFORMANCE="${TIDEMILL_CONFORMANCE:-full}"
cargo nextest run --workspace -E 'not test(/broker_restart/)'
cargo nextest run --workspace --profile restart -E 'test(/broker_restart/)' --no-tests=pass
cargo test --workspace --doc
