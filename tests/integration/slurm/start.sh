#!/usr/bin/env bash
# Start a single-node SLURM on this machine (root only): munge, slurmctld and slurmd.
#
#   bash tests/integration/slurm/start.sh [STATE_DIR]     # default /tmp/histodetect-slurm
#   bash tests/integration/slurm/stop.sh  [STATE_DIR]     # stops what this script started
#
# Installs the Debian packages when missing. The node is this host (named after `hostname -s`)
# with its CPUs, 80% of its memory and one declared GPU (gres gpu:1 on /dev/null), so `gpu: 1`
# jobs schedule. No accounting daemon: use `--slurm-status-command squeue` (completed jobs stay
# visible to squeue for MinJobAge seconds). Config goes to /etc/slurm/ (the SLURM executor plugin
# drops SLURM_CONF inside jobs, so it must be at the default place); an existing config that this
# script did not write is never overwritten. State, spool, pids and logs live under STATE_DIR.
set -euo pipefail

STATE=${1:-/tmp/histodetect-slurm}
MARK="# written by histodetect tests/integration/slurm/start.sh"
CTLD_PORT=${HISTODETECT_SLURMCTLD_PORT:-16817}
SLURMD_PORT=${HISTODETECT_SLURMD_PORT:-16818}

die() { echo "start.sh: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root (it starts munged, slurmctld and slurmd)"

missing=()
for bin in munged slurmctld slurmd sinfo; do
    command -v "$bin" >/dev/null || [[ -x /usr/sbin/$bin ]] || missing+=("$bin")
done
if ((${#missing[@]})); then
    echo "start.sh: installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
export PATH=/usr/sbin:$PATH

for f in /etc/slurm/slurm.conf /etc/slurm/gres.conf; do
    if [[ -e $f ]] && ! grep -qF "$MARK" "$f"; then
        die "$f exists and was not written by this script; refusing to overwrite it"
    fi
done
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
    die "slurmctld or slurmd is already running here; stop it first (stop.sh STATE_DIR if ours)"
fi
if [[ -s $STATE/pids ]]; then
    die "$STATE/pids exists: a test cluster may be running; run stop.sh $STATE first"
fi

mkdir -p "$STATE"/{ctld,spool,run,log} /etc/slurm
: >"$STATE/pids"
host=$(hostname -s)
# CPUs, sockets, cores and threads as slurmd sees them; memory below the machine's.
hw=$(slurmd -C | head -1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)

cat >/etc/slurm/slurm.conf <<CONF
$MARK
ClusterName=histodetect
SlurmctldHost=$host
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host ${hw}RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
printf '%s\nNodeName=%s Name=gpu File=/dev/null\n' "$MARK" "$host" >/etc/slurm/gres.conf

# munge: reuse a running munged (not ours to stop), otherwise start one as the munge user.
if ! pgrep -x munged >/dev/null; then
    [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid
    for _ in $(seq 50); do [[ -s /run/munge/munged.pid ]] && break; sleep 0.1; done
    echo "munged $(cat /run/munge/munged.pid)" >>"$STATE/pids"
fi
munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"

slurmctld -i
for _ in $(seq 100); do [[ -s $STATE/run/slurmctld.pid ]] && break; sleep 0.1; done
echo "slurmctld $(cat "$STATE/run/slurmctld.pid")" >>"$STATE/pids"
slurmd
for _ in $(seq 100); do [[ -s $STATE/run/slurmd.pid ]] && break; sleep 0.1; done
echo "slurmd $(cat "$STATE/run/slurmd.pid")" >>"$STATE/pids"

for _ in $(seq 60); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
    if [[ $state == idle ]]; then
        echo "start.sh: node $host idle (state in $STATE, pids in $STATE/pids)"
        exit 0
    fi
    sleep 1
done
die "node $host not idle after 60 s (state '${state:-none}'); see $STATE/log/"
