#!/usr/bin/env bash
# A single-node Slurm cluster on this machine (slurmctld + slurmd + munge on localhost), for the
# Slurm test and for trying the cluster workflow without a cluster.
#
#   sudo apt-get install -y slurm-wlm munge      (Debian; root is needed for munge and slurmd)
#   scripts/slurm-local.sh start                  prints `export SLURM_CONF=...` to use it
#   scripts/slurm-local.sh stop
#
# State lives under ${SLURM_LOCAL_DIR:-/tmp/freeal-bench-slurm}; no system file is changed.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/freeal-bench-slurm}
CONF=$DIR/slurm.conf

start() {
    for bin in slurmctld slurmd munged sinfo; do
        command -v "$bin" >/dev/null || { echo "missing $bin: apt-get install -y slurm-wlm munge" >&2; exit 2; }
    done
    mkdir -p "$DIR"/{state,spool,log,munge}
    chmod 700 "$DIR/munge"
    if [ ! -f "$DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$DIR/munge/munge.key"
    fi
    local socket=$DIR/munge/munge.socket
    if ! pgrep -f "munged.*$DIR" >/dev/null; then
        munged --key-file="$DIR/munge/munge.key" --socket="$socket" \
            --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" \
            --seed-file="$DIR/munge/munge.seed" --force
    fi
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    cat > "$CONF" <<CONF
ClusterName=freeal-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
AuthInfo=socket=$socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF=$CONF
    pgrep -f "slurmctld -f $CONF" >/dev/null || slurmctld -f "$CONF"
    pgrep -f "slurmd -f $CONF" >/dev/null || slurmd -f "$CONF"
    for _ in $(seq 30); do
        if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            echo "export SLURM_CONF=$CONF"
            return 0
        fi
        sleep 1
    done
    echo "the node did not come up; see $DIR/log/" >&2
    sinfo >&2 || true
    exit 1
}

stop() {
    for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
