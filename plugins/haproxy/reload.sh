#!/bin/sh
# Reloads haproxy through its master CLI and confirms the outcome.
#
# haproxy 2.6 answers nothing to `reload` on the master CLI, and refuses connections for a
# moment while the master re-executes. So: read the master's reload counters with `show proc`,
# send `reload`, then ask `show proc` again until the reload count has grown; the `[failed: N]`
# count says whether the new configuration was refused (the old worker keeps serving then).
#
# Usage: reload.sh MASTER_SOCKET [TIMEOUT_SECONDS]
set -u
socket=$1
timeout=${2:-20}

if ! command -v socat >/dev/null 2>&1; then
    echo "socat is needed to talk to haproxy's master socket: install it (apt-get install socat)" >&2
    exit 1
fi

# "<reloads> <failed>" of the master's line: "PID master 3 [failed: 1] 0d00h01m 2.6.12".
counters() {
    echo "show proc" | socat -t 2 "UNIX-CONNECT:$socket" - 2>/dev/null |
        awk '$2 == "master" { f = $5; sub(/\]/, "", f); print $3, f; exit }'
}

before=$(counters)
if [ -z "$before" ]; then
    echo "haproxy's master CLI does not answer on $socket: is haproxy running in master-worker mode (haproxy -W -S $socket -f CONFIG)?" >&2
    exit 1
fi
set -- $before
reloads=$1
failed=$2

echo "reload" | socat -t 2 "UNIX-CONNECT:$socket" - >/dev/null 2>&1

waited=0
while [ "$waited" -lt $((timeout * 20)) ]; do
    now=$(counters)
    if [ -n "$now" ]; then
        set -- $now
        if [ "$1" -gt "$reloads" ]; then
            if [ "$2" -gt "$failed" ]; then
                echo "haproxy refused the new configuration (the running one keeps serving); see haproxy's log" >&2
                exit 1
            fi
            echo "haproxy reloaded (reload $1)"
            exit 0
        fi
    fi
    sleep 0.05
    waited=$((waited + 1))
done
echo "haproxy did not report the reload within ${timeout}s (show proc on $socket)" >&2
exit 1
