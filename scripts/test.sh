#!/usr/bin/env bash
# The test command: sets up everything the tests need on a fresh machine (etcd, MariaDB, protoc
# via scripts/services.sh), runs the whole workspace's tests with nextest, and stops the services
# it started. Extra arguments go to `cargo nextest run` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

# Services that were already running (a developer's, or another run's) are used and left alone;
# only what this run starts is stopped at the end.
started_services=0
if [ -z "${TIDAL_TEST_ETCD:-}" ] || [ -z "${TIDAL_TEST_MYSQL:-}" ]; then
  bash scripts/services.sh status || started_services=1
  env_lines=$(bash scripts/services.sh start)
  while IFS= read -r line; do
    case "$line" in
      TIDAL_TEST_*=*) export "${line?}" ;;
    esac
  done <<<"$env_lines"
fi
if [ "$started_services" = 1 ] && [ "${TIDAL_KEEP_SERVICES:-0}" != 1 ]; then
  trap 'bash scripts/services.sh stop' EXIT
fi
echo "etcd: $TIDAL_TEST_ETCD  mysql: $TIDAL_TEST_MYSQL" >&2

profile=default
[ "${CI:-}" = "true" ] && profile=ci
timeout "${TIDAL_TEST_TIMEOUT:-3600}" cargo nextest run --workspace --profile "$profile" "$@"
