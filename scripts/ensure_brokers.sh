#!/usr/bin/env bash
# Make sure the brokers the test suite talks to are running on this machine:
# Redis on 127.0.0.1:6379, RabbitMQ on 127.0.0.1:5672 (guest/guest) and
# PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth for local TCP, as
# Debian's cluster sets it up). Installs them with apt-get when missing and
# starts them when stopped.
set -euo pipefail

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && exec 3>&- 3<&-
}

wait_port() {  # name port seconds
    local i
    for ((i = 0; i < $3 * 2; i++)); do
        port_open "$2" && return 0
        sleep 0.5
    done
    echo "ensure_brokers: $1 did not open port $2 within $3 s" >&2
    return 1
}

apt_updated=0
install_package() {  # package
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

need_package() {  # command package
    command -v "$1" >/dev/null 2>&1 || install_package "$2"
}

if ! port_open 6379; then
    echo "ensure_brokers: starting Redis"
    need_package redis-server redis-server
    redis-server --daemonize yes --port 6379 --bind 127.0.0.1 --save "" --appendonly no
    wait_port Redis 6379 30
fi

if ! port_open 5672; then
    echo "ensure_brokers: starting RabbitMQ"
    need_package rabbitmq-server rabbitmq-server
    rabbitmq-server -detached
    wait_port RabbitMQ 5672 120
    rabbitmqctl await_startup >/dev/null 2>&1 || true
fi

if ! port_open 5432; then
    echo "ensure_brokers: starting PostgreSQL"
    if [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
        install_package postgresql  # creates and starts cluster "main"
        # A fresh cluster asks for passwords on TCP; the tests connect as
        # postgres without one, on loopback only.
        for hba in /etc/postgresql/*/main/pg_hba.conf; do
            grep -q '^host all all 127.0.0.1/32 trust' "$hba" ||
                sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
        done
    fi
    for version in $(ls /etc/postgresql); do
        # Started by the package already: reload, so that pg_hba.conf counts.
        pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
            pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
    done
    wait_port PostgreSQL 5432 60
fi
echo "ensure_brokers: Redis, RabbitMQ and PostgreSQL are up"
