#!/usr/bin/env bash
# Stop the daemons that start.sh started (their pids are in STATE_DIR/pids) and remove the
# /etc/slurm files it wrote. Daemons it did not start are left alone. Logs stay in STATE_DIR/log.
set -uo pipefail

STATE=${1:-/tmp/histodetect-slurm}
MARK="# written by histodetect tests/integration/slurm/start.sh"

if [[ -f $STATE/pids ]]; then
    # Cancel what is still queued or running, so no job step outlives the daemons.
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [[ -n $jobs ]]; then
        scancel $jobs
        for _ in $(seq 30); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 1; done
    fi
    # Reverse order: slurmd, slurmctld, then munged.
    tac "$STATE/pids" | while read -r name pid; do
        [[ -n ${pid:-} ]] || continue
        if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
            kill -TERM "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
            echo "stop.sh: stopped $name ($pid)"
        fi
    done
    rm -f "$STATE/pids"
fi
for f in /etc/slurm/slurm.conf /etc/slurm/gres.conf; do
    if [[ -f $f ]] && grep -qF "$MARK" "$f"; then rm -f "$f"; fi
done
exit 0
