#!/bin/sh
# A load balancer that follows the cluster, on one machine: haproxy in master-worker mode in
# front of three web nodes, each a tiny web server plus a rumor agent tagged role=web.
# The haproxy plugin keeps haproxy's backend equal to the alive web members.
#
# Needs: rumor on the PATH (or RUMOR=/path/to/rumor), haproxy (2.6+), socat, python3, curl.
# Everything listens on 127.0.0.1 and lives in a temporary folder removed at the end.
set -eu
RUMOR=${RUMOR:-rumor}
for tool in "$RUMOR" haproxy socat python3 curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing: $tool" >&2; exit 1; }
done
dir=$(mktemp -d)
pids=""
cleanup() {
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

step() { printf '\n== %s\n' "$*"; }
# Ten requests through haproxy: which web node answered each.
requests() {
    i=0
    while [ $i -lt 10 ]; do
        curl -s --max-time 2 http://127.0.0.1:8080/ | tr -d '\n' || printf 'FAILED'
        printf ' '
        i=$((i + 1))
    done
    echo
}
# Waits until the rendered config names exactly these servers.
wait_servers() {
    want="$*"
    n=0
    while [ $n -lt 100 ]; do
        got=$(awk '$1 == "server" { printf "%s ", $2 }' "$dir/haproxy.cfg" | sed 's/ $//')
        [ "$got" = "$want" ] && return 0
        sleep 0.1
        n=$((n + 1))
    done
    echo "haproxy's config lists '$got', expected '$want'" >&2
    return 1
}

step "three web servers on 8081-8083 (each answers with its name)"
for n in 1 2 3; do
    mkdir -p "$dir/www$n"
    printf 'web-%s\n' "$n" >"$dir/www$n/index.html"
    python3 -m http.server "808$n" --bind 127.0.0.1 --directory "$dir/www$n" >/dev/null 2>&1 &
    pids="$pids $!"
done

step "haproxy in master-worker mode, with a configuration that has no server yet"
cat >"$dir/haproxy.cfg" <<CFG
global
    master-worker
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend f
    bind 127.0.0.1:8080
    default_backend rumor_servers
backend rumor_servers
CFG
haproxy -W -S "$dir/master.sock" -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
pids="$pids $!"

step "the load balancer's agent, and the haproxy plugin"
"$RUMOR" agent --dev --node lb --bind 127.0.0.1:7946 --data-dir "$dir/lb" --tag role=lb \
    >"$dir/lb.log" 2>&1 &
pids="$pids $!"
# Commands for the load balancer's agent (each agent has its control socket in its data dir).
lb() { "$RUMOR" "$@" --control "$dir/lb/control.sock"; }
until lb info >/dev/null 2>&1; do sleep 0.1; done
lb plugin install haproxy \
    --set config="$dir/haproxy.cfg" \
    --set master_socket="$dir/master.sock" \
    --set bind=127.0.0.1:8080 \
    --set backend_tag=role=web \
    --set port_tag=port

step "three web agents join: tagged role=web and port=808N"
for n in 1 2 3; do
    "$RUMOR" agent --dev --node "web-$n" --bind "127.0.0.1:795$n" --data-dir "$dir/web$n" \
        --tag role=web --tag "port=808$n" --join 127.0.0.1:7946 >"$dir/web$n.log" 2>&1 &
    pids="$pids $!"
done
wait_servers web-1 web-2 web-3
lb members
requests

step "web-2 leaves gracefully: haproxy stops sending it requests"
"$RUMOR" leave --control "$dir/web2/control.sock"
wait_servers web-1 web-3
requests

step "web-3's agent is killed (kill -9): the cluster declares it failed, haproxy drops it"
pkill -9 -f -- "--node web-3 " || true
wait_servers web-1
requests

step "what the plugin did"
lb plugin info haproxy
echo "show proc" | socat -t 2 - "UNIX-CONNECT:$dir/master.sock"
