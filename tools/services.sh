#!/usr/bin/env bash
# Make sure the local services the functional tests talk to are running:
# RabbitMQ (5672), PostgreSQL (5432), MariaDB (3306). Starts what is down,
# installing it from Debian's packages first if absent. Tests that need a
# service still fail with a clear message if it cannot be started here.
set -uo pipefail

log() { printf '[services] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local port=$1 tries=${2:-60}
    for _ in $(seq "$tries"); do port_open "$port" && return 0; sleep 0.5; done
    return 1
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
    else return 1
    fi
}

ensure_package() {
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2"
    as_root apt-get update -qq && \
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

start_rabbitmq() {
    ensure_package rabbitmq-server rabbitmq-server || return 1
    as_root rabbitmq-server -detached >/dev/null 2>&1
}

start_postgresql() {
    ensure_package pg_ctlcluster postgresql || return 1
    local version
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
    [ -n "$version" ] || return 1
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
}

start_mariadb() {
    ensure_package mariadbd mariadb-server || return 1
    as_root start-stop-daemon --start --oknodo --background \
        --exec /usr/sbin/mariadbd
}

ensure() {
    local name=$1 port=$2 starter=$3
    port_open "$port" && return 0
    log "$name is not listening on 127.0.0.1:$port; starting it"
    if $starter && wait_port "$port" 60; then
        log "$name is up"
    else
        log "could not start $name; tests that need it will fail and say so"
    fi
}

ensure RabbitMQ 5672 start_rabbitmq
ensure PostgreSQL 5432 start_postgresql
ensure MariaDB 3306 start_mariadb
exit 0
