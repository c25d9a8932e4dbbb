#!/usr/bin/env bash
# What a test phase left running: scripts/test.sh runs its phases in a CPU group of their own (a
# cgroup-v1 group of the normal weight, as root with the cpu controller mounted), so that every
# process a phase started, in whatever session (launchers, ranks, sshd daemons and what they
# start), is known to be the suite's own. Once a phase has ended, anything still in the group but
# the script itself is a process the suite left behind: it is listed, then ended. Left running
# it would hold the CPU that what runs beside the tests (scripts/lowest.sh: an idle group, which
# runs only on CPU nothing else wants) waits for.
#   bash scripts/leftovers.sh make                  print a new group's folder (or nothing)
#   bash scripts/leftovers.sh join GROUP PID        move PID (and what it starts later) into GROUP
#   bash scripts/leftovers.sh sweep GROUP KEEP WHAT [S]
#                                   list and KILL GROUP's processes but KEEP, naming WHAT left
#                                   them; those ending on their own get S seconds first (10)
#   bash scripts/leftovers.sh remove GROUP          remove GROUP (its processes go to its parent)
# Where no group can be made every call does nothing.
set -uo pipefail

CPU_HIERARCHIES="/sys/fs/cgroup/cpu /sys/fs/cgroup/cpu,cpuacct"

make_group() {
    local root
    for root in $CPU_HIERARCHIES; do
        [ -f "$root/cpu.shares" ] && [ -w "$root" ] || continue
        rmdir "$root"/corral-tests-* 2>/dev/null  # those an earlier run left empty
        if mkdir "$root/corral-tests-$$" 2>/dev/null; then
            echo "$root/corral-tests-$$"
            return 0
        fi
    done
}

others() {  # others GROUP KEEP: the group's processes but KEEP and this script's own
    local pid procs
    mapfile -t procs < "$1/cgroup.procs"
    for pid in "${procs[@]}"; do
        [ "$pid" = "$2" ] || [ "$pid" = "$$" ] || [ "$pid" = "$BASHPID" ] || echo "$pid"
    done
}

sweep() {  # sweep GROUP KEEP WHAT S
    local group=$1 keep=$2 what=$3 tenths=$(($4 * 10)) left waited=0
    [ -n "$group" ] && [ -d "$group" ] || return 0
    # A process that is ending (its parent just ended) gets S seconds to finish on its own.
    while left=$(others "$group" "$keep") && [ -n "$left" ] && [ "$waited" -lt "$tenths" ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    [ -n "$left" ] || return 0
    echo "corral: processes $what left behind (ended now):"
    # shellcheck disable=SC2086  # one pid a word
    ps -o pid=,etime=,time=,args= -p "$(echo $left | tr ' ' ,)" | cut -c1-200 | sed 's/^/  /'
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
}

case "${1:-}" in
    make) make_group ;;
    join) [ -z "${2:-}" ] || echo "$3" > "$2/cgroup.procs" 2>/dev/null || true ;;
    sweep) sweep "${2:-}" "${3:-}" "${4:-a phase}" "${5:-10}" ;;
    remove)
        if [ -n "${2:-}" ] && [ -d "$2" ]; then
            while read -r pid; do
                echo "$pid" > "$(dirname "$2")/cgroup.procs" 2>/dev/null || true
            done < "$2/cgroup.procs"
            rmdir "$2" 2>/dev/null || true
        fi ;;
    *) echo "usage: scripts/leftovers.sh make | join GROUP PID | sweep GROUP KEEP WHAT [S] | remove GROUP" >&2
       exit 2 ;;
esac
