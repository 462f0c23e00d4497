#!/bin/sh
# The TI launcher: the main container's command. Placed in the shared volume by the fetch step so any
# image with /bin/sh can run it (busybox, dash, bash).
#
#   launch.sh ENTRY_POINT [ARG...]
#
# Runs ENTRY_POINT in the code directory with ARGs, tees its output to the log file, writes its exit
# code for the upload step, and when it fails without writing the failure file, writes the tail of its
# exception there. Exits with the script's code.

root="${TI_ML_ROOT:-/opt/ml}"
ti_dir="$root/.ti"
log="$ti_dir/training.log"
exit_file="$ti_dir/exitcode"
failure="$root/output/failure"
limit=4096

if [ "$#" -lt 1 ]; then
    echo "usage: launch.sh ENTRY_POINT [ARG...]" >&2
    exit 2
fi
entry="$1"
shift

mkdir -p "$ti_dir" "$root/output/data" "$root/model"
# A restarted container must not hand the upload step the previous run's exit code or reason.
rm -f "$exit_file" "$failure"
: > "$log"

finish() {
    code="$1"
    if [ "$code" -ne 0 ] && [ ! -s "$failure" ]; then
        # The tail of the last traceback says why; without one, the end of the log does.
        line=$(grep -n '^Traceback (most recent call last):' "$log" 2>/dev/null | tail -n 1 | cut -d: -f1)
        if [ -n "$line" ]; then
            tail -n "+$line" "$log" | tail -c "$limit" > "$failure.tmp"
        else
            { tail -c "$((limit - 256))" "$log"; echo "$entry exited with code $code"; } > "$failure.tmp"
        fi
        mv "$failure.tmp" "$failure"
    fi
    # Written last, through a rename: the upload step starts as soon as this file appears.
    echo "$code" > "$exit_file.tmp"
    mv "$exit_file.tmp" "$exit_file"
    exit "$code"
}

if ! cd "$root/code" 2>/dev/null; then
    echo "ti launcher: no code directory at $root/code" | tee -a "$log" >&2
    finish 2
fi
if [ ! -f "$entry" ]; then
    echo "ti launcher: entry point $entry not found in $root/code" | tee -a "$log" >&2
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

# A fifo instead of a pipe keeps the script's own exit code (POSIX sh has no pipefail) and lets us
# forward signals to it.
fifo="$ti_dir/output.fifo"
rm -f "$fifo"
mkfifo "$fifo"
tee -a "$log" < "$fifo" &
tee_pid=$!
"$@" > "$fifo" 2>&1 &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
wait "$child"
code=$?
# `wait` returns early when a trapped signal arrives; wait again for the script's real exit.
while kill -0 "$child" 2>/dev/null; do
    wait "$child"
    code=$?
done
wait "$tee_pid"
rm -f "$fifo"
finish "$code"
