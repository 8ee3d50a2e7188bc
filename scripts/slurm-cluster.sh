#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the Slurm test
# (cli/tests/slurm.rs) and for trying deploy/slurm/ by hand:
#
#   scripts/slurm-cluster.sh start DIR   # munged, slurmctld, slurmd; prints the SLURM_CONF to export
#   scripts/slurm-cluster.sh stop DIR
#
# Needs root and Debian's slurm-wlm and munge (installed here when missing,
# with apt-get). Everything the cluster writes (config, state, spool, logs,
# pid files, munge socket) lives under DIR; ports are picked free.
#
# The node advertises 64 CPUs, 256 GiB and 8 count-only GPUs whatever the
# machine has (SlurmdParameters=config_overrides), so the sbatch files'
# resource requests (--cpus-per-task=8, --mem=32G, --gres=gpu:1) are
# granted as written, for the coordinator and up to seven worker tasks at
# once: the jobs run unedited; the GPUs are names only (the workers run on
# the CPU through SWEEP_DEVICE=cpu).
set -euo pipefail

cmd="${1:-}"
dir="${2:-}"
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
fi
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

stop() {
    # The jobs first (their processes outlive slurmd otherwise), then the
    # daemons.
    if [ -s "$dir/slurmctld.pid" ]; then
        SLURM_CONF="$dir/slurm.conf" scancel --full --signal=KILL --partition=debug 2>/dev/null || true
        SLURM_CONF="$dir/slurm.conf" scancel --partition=debug 2>/dev/null || true
        for _ in $(seq 1 20); do
            [ -z "$(SLURM_CONF="$dir/slurm.conf" squeue -h 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    for d in slurmd slurmctld; do
        if [ -s "$dir/$d.pid" ]; then
            kill "$(cat "$dir/$d.pid")" 2>/dev/null || true
        fi
    done
    if [ -s "$dir/munged.pid" ]; then
        kill "$(cat "$dir/munged.pid")" 2>/dev/null || true
    fi
}

if [ "$cmd" = stop ]; then
    stop
    exit 0
fi
if [ "$cmd" != start ]; then
    echo "unknown command $cmd: start or stop" >&2
    exit 2
fi

# Exit code 3: Slurm cannot be had on this machine (not root, or the
# packages cannot be installed); the test then says so and skips. Any other
# failure is 1.
if [ "$(id -u)" != 0 ]; then
    echo "starting a Slurm cluster needs root (slurmd runs jobs as their users)" >&2
    exit 3
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "installing slurm-wlm and munge (apt-get)" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >"$dir/apt.log" 2>&1 \
        && ! { apt-get update -q >>"$dir/apt.log" 2>&1 \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >>"$dir/apt.log" 2>&1; }; then
        echo "apt-get install slurm-wlm munge failed:" >&2
        tail -n 5 "$dir/apt.log" >&2
        exit 3
    fi
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
chown munge:munge "$dir/munge"
chmod 711 "$dir/munge"
key=/etc/munge/munge.key
if [ ! -s "$key" ]; then
    echo "no $key: the munge package creates it; reinstall munge" >&2
    exit 1
fi
# munged as the munge user (it refuses root), with its socket in DIR.
runuser -u munge -- /usr/sbin/munged --key-file="$key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
cp "$dir/munge/munged.pid" "$dir/munged.pid"

host="$(hostname -s)"
ctld_port="$(free_port)"
slurmd_port="$(free_port)"
cat >"$dir/slurm.conf" <<CONF
ClusterName=sweeptest
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
GresTypes=gpu
KillWait=10
MinJobAge=3600
NodeName=$host CPUs=64 RealMemory=262144 Gres=gpu:8 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
# Count-only GPUs are refused (reported 0), so they get stand-in device
# files; nothing opens them (TaskPlugin=task/none: no device cgroup).
for i in 0 1 2 3 4 5 6 7; do : >"$dir/gpu$i"; done
cat >"$dir/gres.conf" <<CONF
NodeName=$host Name=gpu File=$dir/gpu[0-7]
CONF

export SLURM_CONF="$dir/slurm.conf"
/usr/sbin/slurmctld -f "$SLURM_CONF"
/usr/sbin/slurmd -f "$SLURM_CONF"

for _ in $(seq 1 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        echo "SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.5
done
echo "the cluster did not come up; logs: $dir/slurmctld.log $dir/slurmd.log" >&2
sinfo >&2 || true
tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
stop
exit 1
