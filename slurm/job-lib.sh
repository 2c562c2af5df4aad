# flywheel job library, sourced by every rendered job script of this run (RUN_DIR/slurm/*.sbatch).
# Needs JOB, RUN_DIR and SLURM_DIR set. Written by `flywheel submit` from slurm/job-lib.sh.
# ---- job bookkeeping: status json per job, FAILED.md when the chain stops ----
child=""
warned=0
terminated=0
stamp() { echo "[$(date -u +%Y-%m-%dT%H:%M:%SZ)] $*"; }
slurm_id() {  # ARRAYJOB_TASK for an array element (what scontrol requeue and the log name use), else the job id
    if [ -n "${SLURM_ARRAY_JOB_ID:-}" ]; then echo "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"; else echo "${SLURM_JOB_ID:-local}"; fi
}
log_file() { echo "$SLURM_DIR/logs/$JOB-$(slurm_id).out"; }
set_status() {  # STATE REASON
    local tmp="$SLURM_DIR/status/.$JOB.json.$$"
    printf '{"job": "%s", "slurm_job_id": "%s", "state": "%s", "reason": "%s", "restarts": %s, "node": "%s", "time": "%s"}\n' \
        "$JOB" "$(slurm_id)" "$1" "$2" "${SLURM_RESTART_COUNT:-0}" "$(hostname -s)" \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$tmp" && mv -f "$tmp" "$SLURM_DIR/status/$JOB.json"
}
job_start() {
    stamp "$JOB starts: slurm job $(slurm_id) on $(hostname -s), restart ${SLURM_RESTART_COUNT:-0}"
    JOB_STARTED="$SLURM_DIR/status/.$JOB.started"
    touch "$JOB_STARTED"
    # A rerun of the job that stopped the chain clears its failure note.
    if [ -f "$SLURM_DIR/FAILED.md" ] && grep -qF "($JOB)" "$SLURM_DIR/FAILED.md"; then rm -f "$SLURM_DIR/FAILED.md"; fi
    set_status running "started"
}
write_failed() {  # REASON
    {
        echo "# The chain stopped: $1 ($JOB)"
        echo
        echo "- slurm job: $(slurm_id), node $(hostname -s), $(date -u +%Y-%m-%dT%H:%M:%SZ), restart ${SLURM_RESTART_COUNT:-0}"
        echo "- log: $(log_file)"
        echo "- the jobs after it in the chain were cancelled by Slurm (afterok dependency never satisfied)"
        echo "- to continue: fix the cause, then rerun \`flywheel submit\` with the same recipe; it resubmits from here"
        if [ -n "${ROUND:-}" ] && [ -f "$RUN_DIR/rounds/round-$(printf %04d "$ROUND").failed.json" ]; then
            echo; echo "Round record: rounds/round-$(printf %04d "$ROUND").failed.json"; echo '```'
            cat "$RUN_DIR/rounds/round-$(printf %04d "$ROUND").failed.json"; echo '```'
        fi
        echo; echo "Last lines of the log:"; echo '```'
        tail -n 40 "$(log_file)" 2>/dev/null | grep -v '^\[setup\]'
        echo '```'
    } > "$SLURM_DIR/FAILED.md.$$" && mv -f "$SLURM_DIR/FAILED.md.$$" "$SLURM_DIR/FAILED.md"
}
on_warning() {  # USR1 from --signal: ask the running step to checkpoint and stop
    warned=1
    stamp "warning signal: asking the running step to save a checkpoint and stop"
    touch "$FLYWHEEL_PREEMPT_FLAG"
}
on_term() {  # scancel, scontrol requeue, time limit: pass it on to the running step
    terminated=1
    stamp "terminated by Slurm (cancel, requeue or time limit)"
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
}
on_exit() {
    local rc=$?
    rm -f "$FLYWHEEL_PREEMPT_FLAG"
    if [ "$rc" -ne 0 ] && [ "$warned" = 0 ]; then
        if [ "$terminated" = 1 ]; then
            set_status terminated "terminated by Slurm (requeued, cancelled or out of time), exit $rc"
            write_failed "$JOB was terminated by Slurm (if it was requeued it restarts and removes this note)"
        else
            set_status failed "exit code $rc"
            write_failed "$JOB failed with exit code $rc"
        fi
    fi
}
# skip_if_round_skipped: in a period of `flywheel submit --every`, round $ROUND had nothing new: its
# prepare wrote rounds/round-XXXX.skipped.json and no checkpoint. Record "skipped" and end the job
# well, so the period's next job still runs (the round number is not consumed). The train job counts
# only a record written since it started; eval and refit find the one their train job left.
skip_if_round_skipped() {
    local r4 skipped
    r4=$(printf %04d "$ROUND")
    skipped="$RUN_DIR/rounds/round-$r4.skipped.json"
    [ -f "$RUN_DIR/rounds/round-$r4/manifest.json" ] && return 0
    [ -f "$skipped" ] || return 0
    if [ "${JOB%%-*}" = train ] && ! [ "$skipped" -nt "$JOB_STARTED" ]; then return 0; fi
    set_status skipped "round $ROUND skipped: nothing new (rounds/round-$r4.skipped.json)"
    stamp "round $ROUND skipped: nothing new since the last round; $JOB has nothing to do"
    exit 0
}
# run_step CMD...: runs the step in the background so the traps fire while it runs; returns its code.
run_step() {
    "$@" &
    child=$!
    local rc=0
    while :; do
        wait "$child"; rc=$?
        kill -0 "$child" 2>/dev/null || break  # else a trap interrupted wait: keep waiting
    done
    child=""
    return "$rc"
}
# requeue_after_warning: the step stopped at a checkpoint because of the warning signal.
requeue_after_warning() {
    set_status preempted "warning signal: checkpoint saved, job requeued"
    stamp "requeueing $(slurm_id)"
    scontrol requeue "$(slurm_id)"
    exit 0
}
export FLYWHEEL_PREEMPT_FLAG="$SLURM_DIR/preempt/$JOB.$(slurm_id)"
rm -f "$FLYWHEEL_PREEMPT_FLAG"
