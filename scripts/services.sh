#!/usr/bin/env bash
# Installs (idempotently) and starts the real services Tidal's tests talk to: etcd for cluster
# metadata and MariaDB for the MySQL sink, both on loopback, both without systemd.
#
#   scripts/services.sh start   # install if missing, start, print the addresses as KEY=VALUE lines
#   scripts/services.sh stop    # stop what `start` started
#   scripts/services.sh env     # print the addresses only
#   scripts/services.sh status  # exit 0 if both services answer
#
# Everything lives under $TIDAL_SVC_DIR (default: $TMPDIR/tidal-services). Ports can be moved with
# TIDAL_ETCD_PORT, TIDAL_ETCD_PEER_PORT and TIDAL_MYSQL_PORT.
set -euo pipefail

SVC_DIR=${TIDAL_SVC_DIR:-${TMPDIR:-/tmp}/tidal-services}
ETCD_PORT=${TIDAL_ETCD_PORT:-23790}
ETCD_PEER_PORT=${TIDAL_ETCD_PEER_PORT:-23800}
MYSQL_PORT=${TIDAL_MYSQL_PORT:-33306}
MYSQL_SOCK=$SVC_DIR/mysql.sock
mkdir -p "$SVC_DIR"

etcd_ctl() { ETCDCTL_API=3 timeout 5 etcdctl --endpoints="127.0.0.1:$ETCD_PORT" --dial-timeout=1s --command-timeout=2s "$@"; }
maria_admin() { timeout 5 mariadb-admin --socket="$MYSQL_SOCK" -uroot "$@"; }

install_packages() {
  local missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v etcdctl >/dev/null || missing+=(etcd-client)
  command -v mariadbd >/dev/null || missing+=(mariadb-server)
  command -v mariadb >/dev/null || missing+=(mariadb-client)
  command -v protoc >/dev/null || missing+=(protobuf-compiler)
  [ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq
    timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

start_etcd() {
  etcd_ctl endpoint health >/dev/null 2>&1 && return 0
  rm -rf "$SVC_DIR/etcd"
  nohup etcd --name tidal --data-dir "$SVC_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "tidal=http://127.0.0.1:$ETCD_PEER_PORT" \
    --logger=zap --log-outputs=stderr --log-level=warn \
    >"$SVC_DIR/etcd.log" 2>&1 </dev/null &
  echo $! >"$SVC_DIR/etcd.pid"
  for _ in $(seq 1 75); do
    etcd_ctl endpoint health >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "etcd did not become healthy; last log lines:" >&2
  tail -20 "$SVC_DIR/etcd.log" >&2
  return 1
}

start_mariadb() {
  maria_admin ping >/dev/null 2>&1 && return 0
  if [ ! -d "$SVC_DIR/mysql/mysql" ]; then
    rm -rf "$SVC_DIR/mysql"
    timeout 120 mariadb-install-db --no-defaults --user=root --datadir="$SVC_DIR/mysql" \
      --auth-root-authentication-method=socket --skip-test-db >"$SVC_DIR/mysql-install.log" 2>&1
  fi
  nohup mariadbd --no-defaults --user=root --datadir="$SVC_DIR/mysql" --socket="$MYSQL_SOCK" \
    --port="$MYSQL_PORT" --bind-address=127.0.0.1 --pid-file="$SVC_DIR/mariadbd.pid" \
    --log-error="$SVC_DIR/mariadbd.err" --skip-name-resolve --skip-log-bin \
    --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=2 \
    --max-connections=500 >/dev/null 2>&1 </dev/null &
  echo $! >"$SVC_DIR/mariadbd.launch.pid"
  for _ in $(seq 1 150); do
    maria_admin ping >/dev/null 2>&1 && break
    sleep 0.2
  done
  if ! maria_admin ping >/dev/null 2>&1; then
    echo "MariaDB did not answer; last log lines:" >&2
    tail -20 "$SVC_DIR/mariadbd.err" >&2
    return 1
  fi
  timeout 10 mariadb --socket="$MYSQL_SOCK" -uroot -e "
    CREATE DATABASE IF NOT EXISTS tidal;
    CREATE USER IF NOT EXISTS 'tidal'@'127.0.0.1' IDENTIFIED BY 'tidal';
    GRANT ALL ON *.* TO 'tidal'@'127.0.0.1' WITH GRANT OPTION;
    FLUSH PRIVILEGES;"
}

stop_pidfile() {
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

print_env() {
  echo "TIDAL_TEST_ETCD=127.0.0.1:$ETCD_PORT"
  echo "TIDAL_TEST_MYSQL=mysql://tidal:tidal@127.0.0.1:$MYSQL_PORT/tidal"
}

case "${1:-start}" in
  start)
    install_packages
    start_etcd
    start_mariadb
    print_env
    ;;
  install) install_packages ;;
  stop)
    stop_pidfile "$SVC_DIR/etcd.pid"
    stop_pidfile "$SVC_DIR/mariadbd.launch.pid"
    ;;
  env) print_env ;;
  status)
    etcd_ctl endpoint health >/dev/null 2>&1 && maria_admin ping >/dev/null 2>&1
    ;;
  *)
    echo "usage: $0 start|stop|install|env|status" >&2
    exit 2
    ;;
esac
