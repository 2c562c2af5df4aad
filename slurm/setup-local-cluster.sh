#!/usr/bin/env bash
# A real single-node Slurm on this machine, for the integration test (`make test-slurm`) and for
# trying `flywheel submit` without a cluster. Installs the Debian packages when missing, writes
# /etc/slurm/slurm.conf for one node (this host, all its CPUs), starts munged, slurmctld and slurmd,
# and waits until the node takes jobs. Run as root. Rerunning it is safe: running daemons are kept.
#
#   sudo slurm/setup-local-cluster.sh          # start (idempotent)
#   sudo slurm/setup-local-cluster.sh --stop   # stop the daemons this script started
#
# Container-friendly choices: proctrack/linuxproc and task/none need no cgroups; SlurmUser=root
# because the sandbox runs everything as root; no accounting database (squeue is enough for
# `flywheel submit`). A requeued job waits cred_expire seconds before it may start again (Slurm's
# default is 120 s); 30 s here keeps the requeue test short.
set -euo pipefail

CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
NODE=$(hostname -s)
CPUS=$(nproc)
# Leave some memory to the OS; Slurm refuses a node that reports less than RealMemory.
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)

log() { echo "[setup-local-cluster] $*"; }

stop_daemons() {
    for name in slurmd slurmctld; do
        if [ -f "/run/$name.pid" ] && kill -0 "$(cat "/run/$name.pid")" 2>/dev/null; then
            kill "$(cat "/run/$name.pid")" && log "stopped $name"
        fi
    done
    if [ -f /run/munge/munged.pid ] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; then
        kill "$(cat /run/munge/munged.pid)" && log "stopped munged"
    fi
}

if [ "${1:-}" = "--stop" ]; then
    stop_daemons
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-local-cluster.sh: run as root (it installs packages and starts system daemons)" >&2
    exit 1
fi

# ---- 1. packages ---------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
        || ! command -v munged >/dev/null; then
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y slurmctld slurmd slurm-client munge >/dev/null \
        || { apt-get update >/dev/null && apt-get install -y slurmctld slurmd slurm-client munge >/dev/null; }
fi

# ---- 2. munge ------------------------------------------------------------------------------------
mkdir -p /run/munge /var/lib/munge /var/log/munge /etc/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge
chmod 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating a munge key"
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n >/dev/null 2>&1; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 1 20); do munge -n >/dev/null 2>&1 && break; sleep 0.5; done
fi
munge -n | unmunge >/dev/null || { echo "munge does not work; see /var/log/munge/munged.log" >&2; exit 1; }

# ---- 3. slurm.conf -------------------------------------------------------------------------------
mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
CONF=$(cat <<EOF
# Written by flywheel slurm/setup-local-cluster.sh: one node, this host.
ClusterName=flywheel-local
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=30
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# Finished jobs stay visible to squeue for 5 minutes; signals escalate to KILL after 15 s.
MinJobAge=300
KillWait=15
SchedulerParameters=bf_interval=5
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
if [ ! -f "$CONF_DIR/slurm.conf" ] || [ "$(cat "$CONF_DIR/slurm.conf")" != "$CONF" ]; then
    log "writing $CONF_DIR/slurm.conf (node $NODE, $CPUS CPUs)"
    printf '%s\n' "$CONF" > "$CONF_DIR/slurm.conf"
    stop_daemons_slurm_only=1
fi
# A changed configuration needs fresh daemons.
if [ "${stop_daemons_slurm_only:-0}" = 1 ]; then
    for name in slurmd slurmctld; do
        if [ -f "/run/$name.pid" ] && kill -0 "$(cat "/run/$name.pid")" 2>/dev/null; then
            kill "$(cat "/run/$name.pid")"; sleep 1
        fi
    done
fi

# ---- 4. daemons ----------------------------------------------------------------------------------
running() { [ -f "/run/$1.pid" ] && kill -0 "$(cat "/run/$1.pid")" 2>/dev/null; }
if ! running slurmctld; then
    log "starting slurmctld"
    /usr/sbin/slurmctld
fi
if ! running slurmd; then
    log "starting slurmd"
    /usr/sbin/slurmd
fi

# ---- 5. wait for the node ------------------------------------------------------------------------
for _ in $(seq 1 60); do
    state=$(sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n1 || true)
    case "$state" in
        idle*|mixed*|allocated*) log "node $NODE is $state"; exit 0 ;;
        down*|drain*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
echo "setup-local-cluster.sh: node $NODE did not become ready (state: ${state:-unknown}); see $LOG_DIR/" >&2
exit 1
