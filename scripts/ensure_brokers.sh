#!/usr/bin/env bash
# Make sure the brokers the test suite talks to are running on this machine:
# Redis on 127.0.0.1:6379 and RabbitMQ on 127.0.0.1:5672 (guest/guest).
# Installs them with apt-get when missing and starts them when stopped.
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
need_package() {  # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
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
echo "ensure_brokers: Redis and RabbitMQ are up"
