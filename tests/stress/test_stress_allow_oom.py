"""vm/run.py --allow-oom accepts an OOM-killer report and nothing else (runs anywhere).

The OOM report of the campaign's hog prints a stack dump ("Call Trace:"), which the
kernel-log check counts as a splat. `make stress` passes --allow-oom, which accepts the
one bare "Call Trace:" line of each complete report ("... invoked oom-killer: ..." up to
"Out of memory: Killed process N (...)"), and no other line.
"""

from __future__ import annotations

import pytest
from stress_support import load_run_py

RUN = load_run_py()

OOM_REPORT = """\
[  101.000001] tamalloc-hog invoked oom-killer: gfp_mask=0x1100dca(GFP_HIGHUSER_MOVABLE|__GFP_ZERO), order=0, oom_score_adj=1000
[  101.000002] CPU: 1 PID: 812 Comm: tamalloc-hog Not tainted 6.1.158 #1
[  101.000003] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
[  101.000004] Call Trace:
[  101.000005]  <TASK>
[  101.000006]  dump_stack_lvl+0x45/0x5e
[  101.000007]  dump_header+0x4a/0x220
[  101.000008]  oom_kill_process.cold+0xb/0x10
[  101.000009]  out_of_memory+0x1f3/0x550
[  101.000010]  __alloc_pages_slowpath.constprop.0+0xd2e/0x1120
[  101.000011]  </TASK>
[  101.000012] Mem-Info:
[  101.000013] active_anon:456789 inactive_anon:12 isolated_anon:0
[  101.000014] oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=tamalloc-hog,pid=812,uid=0
[  101.000015] Out of memory: Killed process 812 (tamalloc-hog) total-vm:4194304kB, anon-rss:1800000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:3600kB oom_score_adj:1000
[  101.000016] oom_reaper: reaped process 812 (tamalloc-hog), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB
"""  # noqa: E501

WARNING = """\
[  102.000001] WARNING: CPU: 0 PID: 1 at mm/tamalloc_stats.c:120 tamalloc_fill_record+0x10/0x20
[  102.000002] Call Trace:
[  102.000003]  <TASK>
[  102.000004]  </TASK>
"""


def test_an_oom_report_is_a_splat_without_the_option() -> None:
    assert RUN.splats(OOM_REPORT) == ["[  101.000004] Call Trace:"]


def test_allow_oom_accepts_the_complete_report() -> None:
    assert RUN.splats(OOM_REPORT, allow_oom=True) == []
    assert RUN.splats(OOM_REPORT * 3, allow_oom=True) == []


def test_allow_oom_still_flags_everything_else() -> None:
    assert RUN.splats(OOM_REPORT + WARNING, allow_oom=True) == WARNING.splitlines()[:2]
    assert RUN.splats(WARNING + OOM_REPORT, allow_oom=True) == WARNING.splitlines()[:2]


def test_a_splat_inside_the_report_is_still_flagged() -> None:
    lines = OOM_REPORT.splitlines()
    inner = "[  101.000010] BUG: KASAN: use-after-free in out_of_memory+0x1f3/0x550"
    lines.insert(9, inner)
    assert RUN.splats("\n".join(lines), allow_oom=True) == [inner]


def test_only_one_call_trace_per_report() -> None:
    lines = OOM_REPORT.splitlines()
    lines.insert(11, "[  101.000011] Call Trace:")
    assert RUN.splats("\n".join(lines), allow_oom=True) == ["[  101.000011] Call Trace:"]


def test_an_incomplete_report_is_not_accepted() -> None:
    cut = "\n".join(line for line in OOM_REPORT.splitlines() if "Killed process" not in line)
    assert RUN.splats(cut, allow_oom=True) == ["[  101.000004] Call Trace:"]
    # "Out of memory and no killable processes" ends in a panic: not a kill.
    assert RUN.splats(OOM_REPORT.replace("Killed process 812", "no killable"), allow_oom=True)


def test_a_page_allocation_failure_is_not_an_oom_report() -> None:
    report = (
        "[  103.1] kworker/0:1: page allocation failure: order:0, mode:0x820(GFP_ATOMIC)\n"
        "[  103.2] Call Trace:\n"
    )
    assert RUN.splats(report, allow_oom=True) == ["[  103.2] Call Trace:"]


# A memory cgroup's OOM (what tests/oom forces, in `make vm-oom-test`): the same stack
# dump, the cgroup's figures instead of the system's, and another last line; with
# memory.oom.group one report ends in several kills.
MEMCG_OOM_REPORT = """\
[  201.000001] python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=-1000
[  201.000002] CPU: 0 PID: 930 Comm: python3 Not tainted 6.1.158 #1
[  201.000003] Call Trace:
[  201.000004]  <TASK>
[  201.000005]  dump_stack_lvl+0x45/0x5e
[  201.000006]  mem_cgroup_out_of_memory+0x1a4/0x1f0
[  201.000007]  try_charge_memcg+0x8d1/0xa20
[  201.000008]  </TASK>
[  201.000009] memory: usage 131072kB, limit 131072kB, failcnt 57
[  201.000010] swap: usage 0kB, limit 0kB, failcnt 0
[  201.000011] Memory cgroup stats for /tamalloc-oom-6:
[  201.000012] Tasks state (memory values in pages):
[  201.000013] [  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name
[  201.000014] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/tamalloc-oom-6,task_memcg=/tamalloc-oom-6,task=python3,pid=925,uid=0
[  201.000015] Memory cgroup out of memory: Killed process 925 (python3) total-vm:71000kB, anon-rss:45000kB, file-rss:9000kB, shmem-rss:0kB, UID:0 pgtables:180kB oom_score_adj:0
[  201.000016] Tasks in /tamalloc-oom-6 are going to be killed due to memory.oom.group set
[  201.000017] Memory cgroup out of memory: Killed process 921 (python3) total-vm:35000kB, anon-rss:12000kB, file-rss:9000kB, shmem-rss:0kB, UID:0 pgtables:100kB oom_score_adj:0
"""  # noqa: E501


def test_allow_oom_accepts_a_memory_cgroup_report() -> None:
    assert RUN.splats(MEMCG_OOM_REPORT) == ["[  201.000003] Call Trace:"]
    assert RUN.splats(MEMCG_OOM_REPORT, allow_oom=True) == []
    assert RUN.splats(MEMCG_OOM_REPORT + OOM_REPORT + MEMCG_OOM_REPORT, allow_oom=True) == []


def test_a_memory_cgroup_report_is_as_strict() -> None:
    lines = MEMCG_OOM_REPORT.splitlines()
    lines.insert(8, "[  201.000008] Call Trace:")
    assert RUN.splats("\n".join(lines), allow_oom=True) == ["[  201.000008] Call Trace:"]
    cut = "\n".join(line for line in MEMCG_OOM_REPORT.splitlines() if "Killed" not in line)
    assert RUN.splats(cut, allow_oom=True) == ["[  201.000003] Call Trace:"]
    # a Call Trace after the last kill belongs to no report
    tail = MEMCG_OOM_REPORT + WARNING.splitlines()[1] + "\n"
    assert RUN.splats(tail, allow_oom=True) == [WARNING.splitlines()[1]]


# Every way 6.1's mm/oom_kill.c ends a report it began with dump_header() (issue 18
# item 7): the victim killed, the victim found already exiting (its mm gone, as after a
# shared-mm kill), or nobody to kill (a memcg OOM; system-wide that is followed by a
# panic). MESSAGE is out_of_memory()'s: "Out of memory", "Memory cgroup out of memory",
# or "Out of memory (oom_kill_allocating_task)".
KILLED_LINE = OOM_REPORT.splitlines()[14]
EXITING = "[  101.000015] Out of memory: OOM victim 812 (tamalloc-hog) is already exiting. Skip killing the task"  # noqa: E501
ENDINGS = {
    "killed": KILLED_LINE,
    "killed, allocating task": KILLED_LINE.replace(
        "Out of memory:", "Out of memory (oom_kill_allocating_task):"
    ),
    "killed, memcg": KILLED_LINE.replace("Out of memory:", "Memory cgroup out of memory:"),
    "killed, a comm with parentheses": KILLED_LINE.replace("(tamalloc-hog)", "(a) (b) c)"),
    "killed, negative adj": KILLED_LINE.replace("oom_score_adj:1000", "oom_score_adj:-999"),
    "exiting": EXITING,
    "exiting, memcg": EXITING.replace("Out of memory:", "Memory cgroup out of memory:"),
    "exiting, allocating task": EXITING.replace(
        "Out of memory:", "Out of memory (oom_kill_allocating_task):"
    ),
    "nobody killable": "[  101.000015] Out of memory and no killable processes...",
    "without a timestamp": KILLED_LINE.split("] ", 1)[1],
}


def report_ending(last: str) -> str:
    """OOM_REPORT up to its summary line, then LAST instead of the kill."""
    lines = OOM_REPORT.splitlines()[:14]
    return "\n".join([*lines, last]) + "\n"


@pytest.mark.parametrize("name", ENDINGS)
def test_allow_oom_accepts_every_ending_6_1_prints(name: str) -> None:
    report = report_ending(ENDINGS[name])
    assert RUN.splats(report) == ["[  101.000004] Call Trace:"]
    assert RUN.splats(report, allow_oom=True) == []
    # and it ends the report: a Call Trace after it is another splat
    assert RUN.splats(report + WARNING, allow_oom=True) == WARNING.splitlines()[:2]


MALFORMED = {
    "a kill cut short": "[  101.000015] Out of memory: Killed process 812 (",
    "a kill without its figures": "[  101.000015] Out of memory: Killed process 812 (hog)",
    "a kill with text after it": KILLED_LINE + " and more",
    "another message": KILLED_LINE.replace("Out of memory:", "Out of mem:"),
    "a message inside another line": "[  101.000015] hog: " + KILLED_LINE.split("] ", 1)[1],
    "exiting, cut short": EXITING.replace(" Skip killing the task", ""),
    "exiting, not a pid": EXITING.replace("victim 812", "victim x"),
    "nobody killable, cut short": "[  101.000015] Out of memory and no killable processes",
    "the panic_on_oom panic": (
        "[  101.000015] Kernel panic - not syncing: Out of memory: system-wide"
        " panic_on_oom is enabled"
    ),
    "the reaper's line": OOM_REPORT.splitlines()[15],
}


@pytest.mark.parametrize("name", MALFORMED)
def test_allow_oom_rejects_what_6_1_does_not_print_as_an_ending(name: str) -> None:
    report = report_ending(MALFORMED[name])
    flagged = RUN.splats(report, allow_oom=True)
    assert "[  101.000004] Call Trace:" in flagged


def test_a_panic_after_nobody_killable_is_still_flagged() -> None:
    panic = "[  101.000016] Kernel panic - not syncing: System is deadlocked on memory"
    report = report_ending(ENDINGS["nobody killable"]) + panic + "\n"
    assert RUN.splats(report, allow_oom=True) == [panic]
