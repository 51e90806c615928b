#!/usr/bin/env bash
# Stops what scripts/slurm-up.sh started: slurmd, slurmctld and munged (by their pid files).
# Leaves the packages, slurm.conf and the logs in place, so slurm-up.sh starts again in seconds.
set -euo pipefail

if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null; then exec sudo -E bash "$0" "$@"; fi
    echo "slurm-down: must run as root" >&2
    exit 1
fi

# Sends SIGTERM to the pid in $1 and waits up to 10 s for it to exit; removes the pid file,
# which slurmctld leaves behind.
stop() {
    local pidfile=$1 name=$2 pid
    [[ -s $pidfile ]] || { echo "slurm-down: $name not running (no $pidfile)"; rm -f "$pidfile"; return 0; }
    pid=$(<"$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && echo "slurm-down: $name ($pid) still running after 10 s" >&2
    fi
    rm -f "$pidfile"
    echo "slurm-down: stopped $name"
}

stop /run/slurmd.pid slurmd
stop /run/slurmctld.pid slurmctld
stop /run/munge/munged.pid munged
