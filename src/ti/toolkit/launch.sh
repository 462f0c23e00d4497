#!/bin/sh
# The TI launcher: the main container's command. Placed in the shared volume by the fetch step so any
# image with /bin/sh can run it (busybox, dash, bash), as any user.
#
#   launch.sh ENTRY_POINT [ARG...]
#
# Runs ENTRY_POINT in the code directory with ARGs, tees its output to the log file, writes its exit
# code for the upload step, and when it fails without writing the failure file, writes the tail of its
# exception there. The failure file (the script's own or ours) is copied to the termination-message
# file, which the kubelet reads. Exits with the script's code.
#
# The upload step must learn that this container ended, whatever happened here; three things see to it:
# - an EXIT trap writes the exit code on every way out of this shell (dash exits at once when a
#   redirection fails), into a folder fetch made writable for every user;
# - every write is best effort: a log or failure file that cannot be written never stops the script
#   or the exit code;
# - a heartbeat file, rewritten every few seconds while this shell lives: when the shell never starts
#   (no /bin/sh, an unreadable launcher) or is killed with its container (an OOM kill of the whole
#   cgroup), the heartbeat stops and the upload step ends with the container, instead of waiting for
#   an exit code that never comes.

root="${TI_ML_ROOT:-/opt/ml}"
ti_dir="$root/.ti"
log="$ti_dir/training.log"
exit_file="$ti_dir/exitcode"
beat_file="$ti_dir/heartbeat"
failure="$root/output/failure"
limit=4096
beat_seconds=2

# The termination-message file the kubelet reads (local mode and tests name their own). Never created
# here: on a host, /dev is not ours.
term="${TI_TERMINATION_LOG:-}"
if [ -z "$term" ] && [ -f /dev/termination-log ] && [ -w /dev/termination-log ]; then
    term=/dev/termination-log
fi

# What the script writes in the shared volume stays writable for the pod's group (fsGroup): the upload
# step runs as another user.
umask 002

exit_written=
write_exit() {
    [ -z "$exit_written" ] || return 0
    exit_written=1
    # Through a rename: the upload step starts as soon as this file appears.
    if ! (echo "$1" > "$exit_file.tmp" && mv -f "$exit_file.tmp" "$exit_file") 2>/dev/null; then
        echo "ti launcher: cannot write the exit code to $exit_file" >&2
    fi
}

beat_pid=
stop_beat() {
    if [ -n "$beat_pid" ]; then
        kill "$beat_pid" 2>/dev/null
        beat_pid=
    fi
}

on_exit() {
    code=$1
    stop_beat
    write_exit "$code"
}
trap 'on_exit $?' EXIT

mkdir -p "$ti_dir" "$root/output/data" "$root/model" 2>/dev/null
# First, before anything that may fail: the upload step takes the heartbeat as a sign that the launcher
# runs. Its output goes nowhere, so no pipe of a caller waits for it. An image without `sleep` gets a
# heartbeat that says so once, and the upload step then waits for the exit code alone.
if command -v sleep >/dev/null 2>&1; then
    (
        while :; do
            echo beat > "$beat_file" 2>/dev/null
            sleep "$beat_seconds" || break
        done
    ) < /dev/null > /dev/null 2>&1 &
    beat_pid=$!
else
    echo steady > "$beat_file" 2>/dev/null
fi

if [ "$#" -lt 1 ]; then
    echo "usage: launch.sh ENTRY_POINT [ARG...]" >&2
    exit 2
fi
entry="$1"
shift

# A restarted container must not hand the upload step the previous run's exit code or reason.
rm -f "$exit_file" "$failure" 2>/dev/null
# A subshell: in dash a failed redirection of `:` would end this shell.
if ! (: > "$log") 2>/dev/null; then
    echo "ti launcher: cannot write $log (is $ti_dir writable by uid $(id -u 2>/dev/null)?); the log goes to the container's output only" >&2
    log=/dev/null
fi

say() {
    echo "ti launcher: $*" >&2
    [ "$log" = /dev/null ] || echo "ti launcher: $*" >> "$log" 2>/dev/null
}

# Why the script failed: its own failure file, else the tail of its last traceback, else the end of
# its log and its exit code.
reason() {
    code="$1"
    if [ -s "$failure" ]; then
        tail -c "$limit" "$failure"
        return
    fi
    line=$(grep -n '^Traceback (most recent call last):' "$log" 2>/dev/null | tail -n 1 | cut -d: -f1)
    if [ -n "$line" ]; then
        tail -n "+$line" "$log" | tail -c "$limit"
    else
        tail -c "$((limit - 256))" "$log" 2>/dev/null
        echo "$entry exited with code $code"
    fi
}

finish() {
    code="$1"
    if [ "$code" -ne 0 ]; then
        if [ ! -s "$failure" ]; then
            # The upload step and local mode read the reason from the failure file.
            (reason "$code" > "$failure.tmp" && mv -f "$failure.tmp" "$failure") 2>/dev/null
        fi
        # Written even when the failure file could not be: the kubelet's copy is what status reads.
        # Without a log and a failure file, nothing: the kubelet then takes the end of the container's
        # output (FallbackToLogsOnError), where the traceback is.
        if [ -n "$term" ] && { [ -s "$failure" ] || [ "$log" != /dev/null ]; }; then
            (reason "$code" > "$term") 2>/dev/null
        fi
    fi
    stop_beat
    write_exit "$code"
    exit "$code"
}

if ! cd "$root/code" 2>/dev/null; then
    say "no code directory at $root/code"
    finish 2
fi
if [ ! -f "$entry" ]; then
    say "entry point $entry not found in $root/code"
    finish 2
fi

case "$entry" in
    *.py)
        if command -v python3 >/dev/null 2>&1; then py=python3; else py=python; fi
        set -- "$py" "$entry" "$@"
        ;;
    *.sh) set -- sh "$entry" "$@" ;;
    *) set -- "./$entry" "$@" ;;
esac

# Unbuffered, so the log (and `ti logs`) follow the script as it prints.
PYTHONUNBUFFERED=1
export PYTHONUNBUFFERED

trap 'kill -TERM "$child" 2>/dev/null' TERM INT
if [ "$log" = /dev/null ]; then
    "$@" &
    child=$!
    tee_pid=
else
    # A fifo instead of a pipe keeps the script's own exit code (POSIX sh has no pipefail) and lets us
    # forward signals to it.
    fifo="$ti_dir/output.fifo"
    rm -f "$fifo"
    mkfifo "$fifo"
    tee -a "$log" < "$fifo" &
    tee_pid=$!
    "$@" > "$fifo" 2>&1 &
    child=$!
fi
wait "$child"
code=$?
# `wait` returns early when a trapped signal arrives; wait again for the script's real exit.
while kill -0 "$child" 2>/dev/null; do
    wait "$child"
    code=$?
done
if [ -n "$tee_pid" ]; then
    wait "$tee_pid"
    rm -f "$fifo"
fi
finish "$code"
