#!/usr/bin/env bash
# What scripts/test.sh runs beside its tests (the torch matrix's builds and tests, the type check)
# runs at the lowest CPU priority, so that it takes only the CPU the tests leave idle:
#   bash scripts/lowest.sh make                 print a new idle CPU group's folder (or nothing)
#   bash scripts/lowest.sh run GROUP COMMAND... run COMMAND at the lowest priority, in GROUP
#   bash scripts/lowest.sh remove GROUP [S]     remove GROUP once what ran in it has ended
#                                               (S seconds at most, default 10)
#   bash scripts/lowest.sh raise GROUP          give GROUP the normal weight: once the tests
#                                               have ended, what runs there is all there is
# `nice -n 19` alone is not the lowest priority where the kernel groups processes by session
# (autogroup, on by default in most distributions): each session then gets an equal share of
# the CPU whatever its processes' nice, and what runs beside the tests runs in a session of its
# own (setsid), as do the launchers and SSH sessions its tests start. So a niced matrix took as
# much CPU as the tests' own session, and more than its share, stretching the parallel phase
# (docs/benchmarks/ci-time.md "CI's time, round 6: what runs beside the tests"). Where this script may make
# a cgroup-v1 CPU group (as root, with the cpu controller mounted), the group is marked idle
# (cpu.idle; the least weight, cpu.shares 2, on kernels without it): every process in it, and
# every process those start, in whatever session, runs only on CPU nothing else wants.
# Elsewhere the command's session is given the autogroup nice of 19 besides its own nice.
set -uo pipefail

CPU_HIERARCHIES="/sys/fs/cgroup/cpu /sys/fs/cgroup/cpu,cpuacct"

make_group() {  # the folder of a new idle CPU group, or nothing where none can be made
    local root group
    for root in $CPU_HIERARCHIES; do
        [ -f "$root/cpu.shares" ] && [ -w "$root" ] || continue
        rmdir "$root"/corral-beside-* 2>/dev/null  # those an earlier run left empty
        group=$root/corral-beside-$$
        mkdir "$group" 2>/dev/null || continue
        if echo 1 > "$group/cpu.idle" 2>/dev/null || echo 2 > "$group/cpu.shares" 2>/dev/null
        then
            echo "$group"
            return 0
        fi
        rmdir "$group"
    done
}

run_lowest() {  # run_lowest GROUP COMMAND...: this process joins GROUP, then becomes COMMAND
    local group=$1
    shift
    if [ -n "$group" ]; then
        echo $$ > "$group/cgroup.procs" 2>/dev/null || true
    fi
    # The session's share, where sessions are grouped so: only a session this process leads
    # (setsid made it), never its caller's. /proc's stat after the name: state ppid pgrp session.
    local stat session=
    if stat=$(cat "/proc/$$/stat" 2>/dev/null); then
        read -r _ _ _ session _ <<< "${stat##*") "}"
    fi
    if [ "$session" = "$$" ]; then
        echo 19 > /proc/self/autogroup 2>/dev/null || true
    fi
    exec nice -n 19 "$@"
}

remove_group() {  # remove_group GROUP S: once its processes have ended (S s at most), GROUP goes
    local group=$1 tenths=$(($2 * 10)) waited=0 pid
    [ -n "$group" ] && [ -d "$group" ] || return 0
    while ! rmdir "$group" 2>/dev/null; do
        if [ "$waited" -ge "$tenths" ]; then
            # A process that outlived its session's end (it would outlive it anywhere): it
            # leaves the group, which goes, and keeps running where the group's parent is.
            while read -r pid; do
                echo "$pid" > "$(dirname "$group")/cgroup.procs" 2>/dev/null || true
            done < "$group/cgroup.procs"
            rmdir "$group" 2>/dev/null || echo "corral: could not remove $group" >&2
            return 0
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

raise_group() {  # raise_group GROUP: no longer idle, the default weight
    local group=$1
    [ -n "$group" ] && [ -d "$group" ] || return 0
    echo 0 > "$group/cpu.idle" 2>/dev/null
    echo 1024 > "$group/cpu.shares" 2>/dev/null || true
}

case "${1:-}" in
    make) make_group ;;
    raise) raise_group "${2:-}" ;;
    run) shift; run_lowest "$@" ;;
    remove) remove_group "${2:-}" "${3:-10}" ;;
    *) echo "usage: scripts/lowest.sh make | run GROUP COMMAND... | remove GROUP [S] | raise GROUP" >&2; exit 2 ;;
esac
