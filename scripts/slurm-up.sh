#!/usr/bin/env bash
# Brings up a real single-node Slurm on this machine (Debian/Ubuntu, run as root, no init system),
# so `membench slurm --submit` and harness/tests/slurm.rs run against real sbatch/squeue/scancel.
# Idempotent: installs only what is missing, starts only what is not running, and returns as soon
# as the node is idle. Daemons run in the foreground mode (-D) detached with setsid; logs go to
# /var/log/slurm/. Stop everything with scripts/slurm-down.sh.
#
# The cluster is deliberately minimal: one node (whatever `slurmd -C` reports), one default
# partition, cores as the consumable resource (select/cons_tres + CR_Core), no cgroups
# (proctrack/linuxproc, task/none) and no accounting database (so no sacct: poll squeue).
set -euo pipefail

if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null; then exec sudo -E bash "$0" "$@"; fi
    echo "slurm-up: must run as root (the daemons and munge need it)" >&2
    exit 1
fi

LOG_DIR=/var/log/slurm
CONF=/etc/slurm/slurm.conf
TIMEOUT_S=${SLURM_UP_TIMEOUT_S:-60}
t0=$SECONDS

node_state() { sinfo -h -N -o %t 2>/dev/null | head -n1; }

# sinfo retries for seconds when no controller answers, so ask only if slurmctld runs.
if pgrep -x slurmctld >/dev/null && pgrep -x slurmd >/dev/null; then
    state=$(node_state || true)
    case "$state" in
        idle* | mix* | alloc*) echo "slurm-up: already up ($state)"; exit 0 ;;
    esac
fi

# 1. Packages (~35 s on a fresh machine).
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    echo "slurm-up: installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# 2. munge: the package made /etc/munge/munge.key; munged must run as the munge user.
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    # Some images skip the postinst key; make one the way the package would.
    mungekey --create --force 2>/dev/null || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    rm -f /run/munge/munged.pid
    runuser -u munge -- munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || { echo "slurm-up: munged does not answer" >&2; exit 1; }
fi

# 3. slurm.conf. The node line is the first line of `slurmd -C` (what this machine has); the
#    controller is this host at 127.0.0.1 so no name resolution is needed.
host=$(hostname -s)
node_line=$(slurmd -C | head -n1)
install -d /etc/slurm "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
cat >"$CONF.tmp" <<EOF
# Written by membench scripts/slurm-up.sh: a single-node cluster for tests.
ClusterName=membench
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=main Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
mv "$CONF.tmp" "$CONF"

# 4. Daemons, detached. A stale pid file from an earlier stop would make slurmctld refuse to start.
if ! pgrep -x slurmctld >/dev/null; then
    rm -f /run/slurmctld.pid
    setsid slurmctld -D </dev/null >>"$LOG_DIR/slurmctld.stdout" 2>&1 &
fi
if ! pgrep -x slurmd >/dev/null; then
    rm -f /run/slurmd.pid
    setsid slurmd -D </dev/null >>"$LOG_DIR/slurmd.stdout" 2>&1 &
fi

# 5. Wait for the node to register and go idle.
while true; do
    state=$(node_state || true)
    [[ "$state" == idle* ]] && break
    if (( SECONDS - t0 > TIMEOUT_S )); then
        echo "slurm-up: node not idle after ${TIMEOUT_S}s (state '${state}'); logs:" >&2
        tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
        exit 1
    fi
    sleep 1
done
echo "slurm-up: node $host idle after $(( SECONDS - t0 ))s"
sinfo
