"""The OOM-victim model (tamalloc.oom) on recorded inputs, the procfs data source, and
the model's system scores against this host's real /proc/PID/oom_score."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from _support import MiB, meminfo_kb, proc_status, read_int, status_kb
from tamalloc import oom_inputs
from tamalloc.backends import procfs
from tamalloc.models import OomTask
from tamalloc.oom import (
    NoSuchCgroup,
    OomCgroup,
    OomDomain,
    OomInputs,
    c_div,
    collect_inputs,
    memcg_of,
    predict,
    predict_oom,
    proc_score,
)
from tamalloc.stats import oom_tasks
from test_procfs_scan import (  # noqa: F401  (fixtures)
    ZOMBIE_LEADER_NAME,
    live_thread_status_kb,
    zombie_leader,
    zombie_leader_exe,
)

DATA = Path(__file__).parent / "data"
GIB_KB = 1 << 20  # 1 GiB in kB
PAGES_PER_GIB = 262144  # 4 KiB pages


def task(
    pid: int,
    rss_mib: int = 0,
    *,
    cgroup: str | None = "/",
    swap_kb: int = 0,
    pgtables_kb: int = 0,
    adj: int = 0,
    unkillable: bool | None = None,
    oom_victim: bool = False,
    name: str | None = None,
    rss_kb: int | None = None,
) -> OomTask:
    return OomTask(
        pid=pid,
        name=name or f"p{pid}",
        cgroup=cgroup,
        rss_kb=rss_kb if rss_kb is not None else rss_mib * 1024,
        swap_kb=swap_kb,
        pgtables_kb=pgtables_kb,
        oom_score=0,  # the model recomputes it; only the backends compare
        oom_score_adj=adj,
        unkillable=adj == -1000 if unkillable is None else unkillable,
        oom_victim=oom_victim,
    )


def cg(
    max_mib: int | None = None,
    *,
    swap_max_kb: int | None = None,
    current_kb: int = 0,
    swap_current_kb: int = 0,
    oom_group: bool = False,
    memory: bool = True,
    cgroup_id: int | None = None,
    procs: tuple[int, ...] | None = None,
) -> OomCgroup:
    return OomCgroup(
        memory_max_kb=None if max_mib is None else max_mib * 1024,
        swap_max_kb=swap_max_kb,
        current_kb=current_kb,
        swap_current_kb=swap_current_kb,
        oom_group=oom_group,
        has_memory_controller=memory,
        oom_kill=0,
        cgroup_id=cgroup_id,
        procs=procs,
    )


def inputs(
    tasks: list[OomTask],
    cgroups: dict[str, OomCgroup] | None = None,
    *,
    mem_total_kb: int = 4 * GIB_KB,
    mem_available_kb: int = 3 * GIB_KB,
    swap_total_kb: int = 0,
    swap_free_kb: int = 0,
    swappiness: int = 60,
    oom_kill_allocating_task: int = 0,
    panic_on_oom: int = 0,
    cgroup_v1_memory: bool = False,
    numa_nodes: int = 1,
    start_times: dict[int, int] | None = None,
    shared_mm: tuple[tuple[int, ...], ...] = (),
    shared_mm_unknown: tuple[int, ...] = (),
) -> OomInputs:
    return OomInputs(
        tasks=tuple(tasks),
        cgroups={"/": cg(), **(cgroups or {})},
        mem_total_kb=mem_total_kb,
        mem_available_kb=mem_available_kb,
        swap_total_kb=swap_total_kb,
        swap_free_kb=swap_free_kb,
        page_size=4096,
        swappiness=swappiness,
        oom_kill_allocating_task=oom_kill_allocating_task,
        panic_on_oom=panic_on_oom,
        cgroup_v1_memory=cgroup_v1_memory,
        backend="procfs",
        numa_nodes=numa_nodes,
        start_times=start_times or {},
        shared_mm=shared_mm,
        shared_mm_unknown=shared_mm_unknown,
    )


def system(data: OomInputs) -> OomDomain:
    domain = predict(data)[0]
    assert domain.kind == "system" and domain.cgroup is None
    return domain


def domain_of(domains: list[OomDomain], path: str) -> OomDomain:
    (found,) = [d for d in domains if d.cgroup == path]
    return found


def victim_pid(domain: OomDomain) -> int | None:
    return domain.victim.pid if domain.victim else None


# --- the badness and the score ------------------------------------------------------


def test_c_division_truncates_toward_zero() -> None:
    assert c_div(-7, 2) == -3 and -7 // 2 == -4
    assert c_div(7, 2) == 3 and c_div(-6, 3) == -2 and c_div(7, -2) == -3


def test_biggest_process_wins() -> None:
    d = system(inputs([task(10, 100), task(11, 300), task(12, 200)]))
    assert victim_pid(d) == 11
    assert [c.pid for c in d.candidates] == [11, 12, 10]
    assert d.killed_pids == (11,)
    assert d.kill_group is None
    big = d.candidates[0]
    assert big.points == big.rss_pages == 300 * 256
    # (1000 + 76800 * 1000 / 1048576) * 2 / 3 = (1000 + 73) * 2 / 3
    assert big.score == 715
    assert d.total_pages == PAGES_PER_GIB * 4


def test_negative_adj_protects_the_biggest() -> None:
    # 1 GiB at adj -500 loses 500 * (1048576 // 1000) = 524000 pages: below 600 MiB's.
    d = system(inputs([task(10, 1024, adj=-500), task(11, 600)]))
    assert victim_pid(d) == 11
    protected = next(c for c in d.candidates if c.pid == 10)
    assert protected.adj_pages == -500 * 1048
    assert protected.points == 262144 - 524000
    assert protected.score == (1000 + c_div(protected.points * 1000, 1048576)) * 2 // 3 == 500


def test_adj_minus_1000_is_never_chosen() -> None:
    d = system(inputs([task(10, 3000, adj=-1000), task(11, 1)]))
    assert victim_pid(d) == 11
    last = d.candidates[-1]
    assert last.pid == 10 and last.points is None and last.score == 0
    assert last.unkillable == "oom_score_adj -1000"
    alone = system(inputs([task(10, 3000, adj=-1000)]))
    assert alone.victim is None and alone.killed_pids == ()
    assert any("no killable task" in n for n in alone.notes)


def test_positive_adj_marks_a_small_process_first() -> None:
    d = system(inputs([task(10, 1000), task(11, 10, adj=500)]))
    assert victim_pid(d) == 11
    assert d.candidates[0].adj_pages == 500 * 1048
    assert d.candidates[0].points == 2560 + 524000


def test_swap_and_page_tables_count() -> None:
    d = system(
        inputs(
            [task(10, 100), task(11, 90, swap_kb=20 * 1024)],
            swap_total_kb=GIB_KB,
            swap_free_kb=GIB_KB,
        )
    )
    assert victim_pid(d) == 11
    assert d.candidates[0].swap_pages == 5120
    d = system(inputs([task(10, 100), task(11, 99, pgtables_kb=8 * 1024)]))
    assert victim_pid(d) == 11
    assert d.candidates[0].pgtables_pages == 2048
    assert d.candidates[0].points == 99 * 256 + 2048
    # RAM + swap is the system's total.
    d = system(inputs([task(10, 1)], swap_total_kb=GIB_KB))
    assert d.total_pages == 5 * PAGES_PER_GIB


def test_score_truncates_a_negative_badness_toward_zero() -> None:
    # 2000 pages: adj -2 is -4 pages, 1 page resident: badness -3, and -3 * 1000 / 2000
    # is -1 in C (Python's floor gives -2, and the score would be 665).
    d = system(inputs([task(10, rss_kb=4, adj=-2)], mem_total_kb=8000, mem_available_kb=4000))
    (c,) = d.candidates
    assert (c.adj_pages, c.points) == (-4, -3)
    assert c.score == 666
    assert (1000 + (-3 * 1000) // 2000) * 2 // 3 == 665
    assert proc_score(-3, 2000) == 666
    assert proc_score(None, 2000) == 0


def test_a_tie_of_unknown_order_takes_the_higher_pid_and_says_why() -> None:
    d = system(inputs([task(30, 100), task(20, 100), task(5, 50)]))
    assert victim_pid(d) == 30
    (note,) = [n for n in d.notes if n.startswith("tie")]
    assert "20, 30" in note and "25600 points" in note
    assert "start time" in note and "not known" in note
    assert (d.tied_pids, d.tie_order_known) == ((20, 30), False)
    alone = system(inputs([task(1, 2), task(3, 1)]))
    assert not any(n.startswith("tie") for n in alone.notes)
    assert (alone.tied_pids, alone.tie_order_known) == ((), False)


def test_a_system_tie_goes_to_the_last_created() -> None:
    # for_each_process() walks in creation order: pid 20 started after pid 30 (the
    # pids wrapped between), so the kernel keeps 20, the last of the walk.
    tasks = [task(30, 100), task(20, 100), task(40, 100), task(5, 50)]
    d = system(inputs(tasks, start_times={30: 100, 20: 250, 40: 250}))
    assert victim_pid(d) == 40  # 20 and 40 share a tick: pid order within it
    assert (d.tied_pids, d.tie_order_known) == ((30, 20, 40), True)
    # after the victim, the next OOM takes the last of the rest of the walk
    assert [c.pid for c in d.candidates] == [40, 20, 30, 5]
    (note,) = [n for n in d.notes if n.startswith("tie")]
    assert "30, 20, 40" in note and "40" in note
    d = system(inputs(tasks[:2], start_times={30: 300, 20: 250}))
    assert victim_pid(d) == 30


def test_a_memcg_tie_follows_cgroup_procs_order() -> None:
    tasks = [task(30, 4, cgroup="/a"), task(10, 4, cgroup="/a"), task(20, 4, cgroup="/a")]
    tasks.append(task(40, 1, cgroup="/a", adj=-1000))
    cgroups = {"/a": cg(6, cgroup_id=7, procs=(30, 10, 20, 40))}
    d = domain_of(predict(inputs(tasks, cgroups)), "/a")
    assert victim_pid(d) == 20 and d.killed_pids == (20,)
    assert (d.tied_pids, d.tie_order_known) == ((30, 10, 20), True)
    assert [c.pid for c in d.candidates] == [20, 10, 30, 40]
    (note,) = [n for n in d.notes if n.startswith("tie")]
    assert "30, 10, 20" in note and "cgroup.procs" in note
    # the order is the file's, whatever the pids: the old guess (30) was wrong
    again = {"/a": cg(6, cgroup_id=7, procs=(20, 30, 10, 40))}
    assert victim_pid(domain_of(predict(inputs(tasks, again)), "/a")) == 10
    # a process the file does not list (gone, or come since): the order is unknown
    missing = {"/a": cg(6, cgroup_id=7, procs=(30, 10))}
    d = domain_of(predict(inputs(tasks, missing)), "/a")
    assert victim_pid(d) == 30 and not d.tie_order_known
    assert any("cgroup.procs does not list" in n for n in d.notes)


def test_a_memcg_tie_across_child_cgroups_follows_their_creation() -> None:
    # /p/b was created before /p/a (lower id): the walk takes /p, then /p/b, then /p/a
    tasks = [task(10, 4, cgroup="/p/a"), task(11, 4, cgroup="/p/a"), task(12, 4, cgroup="/p/b")]
    cgroups = {
        "/p": cg(6, cgroup_id=3, procs=()),
        "/p/b": cg(cgroup_id=5, procs=(12,)),
        "/p/a": cg(cgroup_id=9, procs=(11, 10)),
    }
    d = domain_of(predict(inputs(tasks, cgroups)), "/p")
    assert victim_pid(d) == 10
    assert d.tied_pids == (12, 11, 10)
    # created the other way round, /p/b's process is the last of the walk
    swapped = {**cgroups, "/p/b": cg(cgroup_id=11, procs=(12,))}
    assert victim_pid(domain_of(predict(inputs(tasks, swapped)), "/p")) == 12
    # a parent's own processes come before its children's (pre-order); deeper too
    tasks2 = [task(10, 4, cgroup="/p/a/x"), task(11, 4, cgroup="/p/a"), task(12, 4, cgroup="/p/b")]
    deeper = {
        **cgroups,
        "/p/a/x": cg(cgroup_id=20, procs=(10,)),
        "/p/a": cg(cgroup_id=9, procs=(11,)),
    }
    d = domain_of(predict(inputs(tasks2, deeper)), "/p")
    assert d.tied_pids == (12, 11, 10) and victim_pid(d) == 10
    # without the ids the siblings' order is unknown: named, and the old guess kept
    unknown = {**cgroups, "/p/b": cg(procs=(12,))}
    d = domain_of(predict(inputs(tasks, unknown)), "/p")
    assert victim_pid(d) == 12 and not d.tie_order_known
    assert any("cgroup ids" in n for n in d.notes if n.startswith("tie"))


def test_a_tie_inside_one_memcg_over_two_cgroups_is_unknown() -> None:
    # /p/x has no memcg of its own: the walk of /p's memcg takes the css_sets of /p and
    # /p/x in the order they were created, which nothing shows
    tasks = [task(10, 4, cgroup="/p"), task(11, 4, cgroup="/p/x")]
    cgroups = {"/p": cg(6, cgroup_id=3, procs=(10,)), "/p/x": cg(memory=False, procs=(11,))}
    d = domain_of(predict(inputs(tasks, cgroups)), "/p")
    assert not d.tie_order_known and d.tied_pids == (10, 11)
    (note,) = [n for n in d.notes if n.startswith("tie")]
    assert "css_set" in note and "highest pid (11)" in note
    # but the last one is known when the others' order alone is not: /p/y (a memcg,
    # created after /p) comes after both
    tasks.append(task(12, 4, cgroup="/p/y"))
    cgroups["/p/y"] = cg(cgroup_id=8, procs=(12,))
    d = domain_of(predict(inputs(tasks, cgroups)), "/p")
    assert d.tie_order_known and victim_pid(d) == 12 and d.tied_pids[-1] == 12


def test_processes_sharing_the_victims_mm_die_with_it() -> None:
    # 11 is 10's clone(CLONE_VM) child (the same figures: one mm), 12 a vfork child of
    # 10 (unkillable itself) at adj -1000: the kernel's loop spares neither
    tasks = [
        task(10, 300, cgroup="/a"),
        task(11, 300, cgroup="/b", adj=-1000, unkillable=True),
        task(12, 100, cgroup="/a"),
    ]
    d = system(inputs(tasks, shared_mm=((10, 11),), start_times={10: 1, 11: 2}))
    assert victim_pid(d) == 10
    assert d.killed_pids == (10, 11)
    (k,) = d.shared_mm_kills
    assert (k.pid, k.name, k.shares_mm_with) == (11, "p11", 10)
    assert "CLONE_VM" in k.reason
    assert d.to_dict()["shared_mm_kills"][0]["shares_mm_with"] == 10
    # the global init is spared (and the mm left unreaped), and said so
    init = [task(10, 300), task(1, 300, unkillable=True)]
    d = system(inputs(init, shared_mm=((1, 10),)))
    assert d.killed_pids == (10,) and not d.shared_mm_kills
    assert any("global init shares the memory of 10" in n for n in d.notes)
    # nothing found, nothing added; what kcmp could not check is named
    d = system(inputs(tasks, shared_mm_unknown=(10,)))
    assert d.killed_pids == (10,) and not d.shared_mm_kills
    assert any("could not be checked" in n and "10" in n for n in d.notes)


def test_a_group_kill_takes_each_members_sharers_too() -> None:
    tasks = [
        task(10, 40, cgroup="/a"),
        task(11, 20, cgroup="/a"),
        task(12, 20, cgroup="/elsewhere"),  # shares 11's mm, outside the group
        task(13, 5, cgroup="/a"),
    ]
    cgroups = {"/a": cg(128, oom_group=True), "/elsewhere": cg()}
    d = domain_of(predict(inputs(tasks, cgroups, shared_mm=((11, 12),))), "/a")
    assert victim_pid(d) == 10 and d.kill_group == "/a"
    assert d.killed_pids == (10, 11, 12, 13)
    assert [(k.pid, k.shares_mm_with) for k in d.shared_mm_kills] == [(12, 11)]


def test_ranking_puts_the_victim_first_and_the_unkillable_last() -> None:
    tasks = [
        task(10, 500, adj=-1000),
        task(11, 5),
        task(12, 50),
        task(1, 900, unkillable=True),
        task(13, 400, unkillable=True),
    ]
    d = system(inputs(tasks))
    assert [c.pid for c in d.candidates] == [12, 11, 1, 10, 13]
    reasons = {c.pid: c.unkillable for c in d.candidates}
    assert reasons[1] == "global init"
    assert reasons[13] is not None and "MMF_OOM_SKIP" in reasons[13]
    assert reasons[11] is None


# --- cgroups -------------------------------------------------------------------------


def test_a_memcg_limit_is_the_total_of_its_domain() -> None:
    data = inputs(
        [task(10, 256, cgroup="/lim"), task(11, 1024)], {"/lim": cg(512, current_kb=300 * 1024)}
    )
    domains = predict(data)
    assert [d.cgroup for d in domains] == [None, "/lim"]
    sys_d, lim = domains
    assert victim_pid(sys_d) == 11
    assert lim.kind == "cgroup" and lim.total_pages == 131072
    assert [c.pid for c in lim.candidates] == [10]  # only its own tasks
    assert victim_pid(lim) == 10 and lim.killed_pids == (10,)
    in_lim = lim.candidates[0]
    in_sys = next(c for c in sys_d.candidates if c.pid == 10)
    assert in_lim.score == (1000 + 500) * 2 // 3 == 1000  # half of its limit
    assert in_sys.score == (1000 + 62) * 2 // 3  # 1/16 of RAM
    assert (lim.limit_kb, lim.usage_kb, lim.headroom_kb) == (512 * 1024, 300 * 1024, 212 * 1024)


def test_memcg_total_adds_swap_unless_swappiness_is_0() -> None:
    limits = {"/a": cg(512), "/b": cg(512, swap_max_kb=64 * 1024)}
    tasks = [task(10, 1, cgroup="/a"), task(11, 1, cgroup="/b")]
    data = inputs(tasks, limits, swap_total_kb=256 * 1024, swap_free_kb=256 * 1024)
    a, b = predict(data)[1:]
    assert a.total_pages == 131072 + 65536  # swap.max "max": capped at the swap there is
    assert b.total_pages == 131072 + 16384
    a0, b0 = predict(inputs(tasks, limits, swap_total_kb=256 * 1024, swappiness=0))[1:]
    assert a0.total_pages == b0.total_pages == 131072
    # The adj share follows the domain's total.
    t = task(12, 1, cgroup="/a", adj=100)
    a, a0 = (
        predict(inputs([t], limits, swap_total_kb=256 * 1024, swappiness=s))[1] for s in (60, 0)
    )
    assert (a.candidates[0].adj_pages, a0.candidates[0].adj_pages) == (100 * 196, 100 * 131)


def test_swap_usage_counts_with_the_limit() -> None:
    limits = {"/a": cg(512, current_kb=100 * 1024, swap_current_kb=50 * 1024)}
    data = inputs([task(10, 1, cgroup="/a")], limits, swap_total_kb=GIB_KB)
    assert predict(data)[1].usage_kb == 150 * 1024
    assert predict(inputs([task(10, 1, cgroup="/a")], limits, swappiness=0))[1].usage_kb == (
        100 * 1024
    )


def test_a_zero_memory_max_is_one_page() -> None:
    (lim,) = predict(inputs([task(10, 1, cgroup="/z")], {"/z": cg(0)}))[1:]
    assert lim.total_pages == 1  # constrained_alloc(): mem_cgroup_get_max() ?: 1


def test_nested_limits_each_weigh_their_subtree() -> None:
    tasks = [
        task(10, 2000),
        task(11, 300, cgroup="/a"),
        task(12, 100, cgroup="/a/b"),
        task(13, 50, cgroup="/a/b/c"),
        task(14, 400, cgroup="/ab"),
    ]
    data = inputs(tasks, {"/a": cg(1024), "/a/b": cg(256), "/a/b/c": cg(), "/ab": cg()})
    domains = predict(data)
    assert [d.cgroup for d in domains] == [None, "/a", "/a/b"]  # unlimited: no domain
    sys_d, a, b = domains
    assert victim_pid(sys_d) == 10
    assert sorted(c.pid for c in a.candidates) == [11, 12, 13]  # "/ab" is not below "/a"
    assert victim_pid(a) == 11
    assert [c.pid for c in b.candidates] == [12, 13]
    assert victim_pid(b) == 12
    assert a.total_pages == PAGES_PER_GIB and b.total_pages == 65536
    # --cgroup keeps the domains that are or contain it.
    assert [d.cgroup for d in predict(data, cgroup="/a/b/c")] == [None, "/a", "/a/b"]
    assert [d.cgroup for d in predict(data, cgroup="/a/")] == [None, "/a"]
    assert [d.cgroup for d in predict(data, cgroup="/ab")] == [None]


def test_a_smaller_ancestor_bounds_the_headroom_and_says_so() -> None:
    # /a/b may take 512 MiB by its own limit, but /a (64 MiB) has 24 MiB left: a charge
    # in /a/b fails at /a's counter first (page_counter_try_charge walks up), so the
    # OOM that comes is /a's.
    tasks = [task(10, 30, cgroup="/a/b"), task(11, 8, cgroup="/a/b"), task(12, 2, cgroup="/a")]
    limits = {
        "/a": cg(64, current_kb=40 * 1024),
        "/a/b": cg(512, current_kb=38 * 1024),
        "/a/b/c": cg(1024, current_kb=0),
    }
    sys_d, a, b, c = predict(inputs(tasks, limits))
    assert sys_d.bound_by is None
    assert (a.headroom_kb, a.bound_by) == (24 * 1024, "/a")
    assert (b.limit_kb, b.usage_kb) == (512 * 1024, 38 * 1024)  # its own figures stay
    assert (b.headroom_kb, b.bound_by) == (24 * 1024, "/a")
    assert (c.headroom_kb, c.bound_by) == (24 * 1024, "/a")  # through any depth
    assert any("/a has less room left than /a/b's own limit" in n for n in b.notes)
    assert not any("less room" in n for n in a.notes)
    # Its own limit binds when it is the tighter one; on a tie too, since the walk up
    # meets the lower counter first.
    limits["/a/b"] = cg(50, current_kb=38 * 1024)
    b = domain_of(predict(inputs(tasks, limits)), "/a/b")
    assert (b.headroom_kb, b.bound_by) == (12 * 1024, "/a/b")
    limits["/a/b"] = cg(62, current_kb=38 * 1024)
    b = domain_of(predict(inputs(tasks, limits)), "/a/b")
    assert (b.headroom_kb, b.bound_by) == (24 * 1024, "/a/b")
    # An ancestor over its limit leaves none; an unlimited one does not count.
    limits["/a"] = cg(64, current_kb=70 * 1024)
    assert domain_of(predict(inputs(tasks, limits)), "/a/b/c").headroom_kb == 0
    limits["/a"] = cg(None, current_kb=70 * 1024)
    limits["/a/b"] = cg(2048, current_kb=38 * 1024)
    c = domain_of(predict(inputs(tasks, limits)), "/a/b/c")
    assert c.bound_by == "/a/b/c" and c.headroom_kb == 1024 * 1024


def test_an_ancestors_headroom_counts_its_swap_as_its_domain_does() -> None:
    limits = {
        "/a": cg(64, current_kb=40 * 1024, swap_current_kb=8 * 1024, swap_max_kb=0),
        "/a/b": cg(512, current_kb=40 * 1024, swap_max_kb=0),
    }
    data = inputs([task(10, 1, cgroup="/a/b")], limits, swap_total_kb=GIB_KB)
    a, b = predict(data)[1:]
    assert a.headroom_kb == b.headroom_kb == 16 * 1024 and b.bound_by == "/a"
    data = inputs([task(10, 1, cgroup="/a/b")], limits, swappiness=0)
    assert domain_of(predict(data), "/a/b").headroom_kb == 24 * 1024


def test_unknown_cgroup_is_an_error() -> None:
    data = inputs([task(10, 1)], {"/a": cg(1)})
    with pytest.raises(NoSuchCgroup, match="no such cgroup: /nope"):
        predict(data, cgroup="/nope")
    bare = OomInputs(**{**{f: getattr(data, f) for f in OomInputs.__slots__}, "cgroups": {}})
    with pytest.raises(NoSuchCgroup, match="no cgroup v2"):
        predict(bare, cgroup="/a")


@pytest.mark.parametrize("kwargs", [{"cgroup": 5}, {"cgroup": b"/a"}, {"backend": 5}])
def test_predict_oom_rejects_what_is_not_a_str(kwargs: dict[str, object]) -> None:
    # issue 16, item 11: cgroup=5 raised AttributeError from deep inside.
    import tamalloc

    with pytest.raises(TypeError, match="must be a str or None"):
        tamalloc.predict_oom(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cgroup must be a str"):
        predict(inputs([task(10, 1)], {"/a": cg(1)}), cgroup=5)  # type: ignore[arg-type]


def test_oom_group_kills_the_highest_group_and_spares_minus_1000() -> None:
    tasks = [
        task(10, 10, cgroup="/a"),
        task(11, 500, cgroup="/a/b"),
        task(12, 20, cgroup="/a/b/c"),
        task(13, 30, cgroup="/a", adj=-1000),
        task(14, 5, cgroup="/other"),
        task(15, 1, cgroup="/a", unkillable=True),
    ]
    limits = {
        "/a": cg(2048, oom_group=True),
        "/a/b": cg(1024, oom_group=True),
        "/a/b/c": cg(oom_group=True),
        "/other": cg(),
    }
    domains = predict(inputs(tasks, limits))
    sys_d, a, b = domains
    for d in (sys_d, a):  # the walk goes up to the domain: /a in both
        assert victim_pid(d) == 11
        assert d.kill_group == "/a"
        # -1000 spared; MMF_OOM_SKIP is still sent the SIGKILL (oom_kill_memcg_member).
        assert d.killed_pids == (10, 11, 12, 15)
    # An OOM inside /a/b stops the walk at /a/b: its own group, not its parent's.
    assert b.kill_group == "/a/b" and b.killed_pids == (11, 12)


def test_oom_group_below_the_victim_or_in_the_root_does_not_count() -> None:
    tasks = [task(10, 500, cgroup="/a"), task(11, 1, cgroup="/a/b")]
    d = system(inputs(tasks, {"/a": cg(), "/a/b": cg(oom_group=True)}))
    assert victim_pid(d) == 10 and d.kill_group is None and d.killed_pids == (10,)
    d = system(inputs([task(10, 500), task(11, 1, cgroup="/a")], {"/a": cg(oom_group=True)}))
    assert d.kill_group is None and d.killed_pids == (10,)  # the victim is in the root


def test_oom_group_spares_global_init() -> None:
    tasks = [task(1, 1, cgroup="/a", unkillable=True), task(20, 100, cgroup="/a")]
    d = system(inputs(tasks, {"/a": cg(oom_group=True)}))
    assert d.kill_group == "/a" and d.killed_pids == (20,)


def test_a_cgroup_without_the_memory_controller_belongs_to_its_parent() -> None:
    # "/a/x" is not a memcg ("memory" not in /a's subtree_control): charged to /a, and
    # its oom.group (which cannot exist there) is ignored.
    tasks = [task(10, 100, cgroup="/a/x"), task(11, 10, cgroup="/a")]
    limits = {"/a": cg(512, oom_group=True), "/a/x": cg(memory=False, oom_group=True)}
    data = inputs(tasks, limits)
    assert memcg_of("/a/x", data.cgroups) == "/a"
    assert memcg_of("/a/x/deeper", data.cgroups) == "/a"
    assert memcg_of("/unknown", data.cgroups) == "/"
    domains = predict(data)
    assert [d.cgroup for d in domains] == [None, "/a"]
    a = domains[1]
    assert victim_pid(a) == 10 and a.kill_group == "/a" and a.killed_pids == (10, 11)
    # A limit on a cgroup without a memcg limits nothing.
    limits = {"/a": cg(), "/a/x": cg(64, memory=False)}
    assert [d.cgroup for d in predict(inputs(tasks, limits))] == [None]


def test_system_usage_and_headroom() -> None:
    d = system(
        inputs(
            [task(10, 1)],
            mem_total_kb=4 * GIB_KB,
            mem_available_kb=GIB_KB,
            swap_total_kb=GIB_KB,
            swap_free_kb=GIB_KB // 2,
        )
    )
    assert d.limit_kb == 5 * GIB_KB
    assert d.usage_kb == 3 * GIB_KB + GIB_KB // 2
    assert d.headroom_kb == GIB_KB + GIB_KB // 2  # MemAvailable + SwapFree


# --- notes ---------------------------------------------------------------------------


def notes(domain: OomDomain, word: str) -> list[str]:
    return [n for n in domain.notes if word in n]


def test_notes_on_what_the_model_cannot_see() -> None:
    base = [task(10, 100, cgroup="/a")]
    limits = {"/a": cg(512)}
    plain = predict(inputs(base, limits))
    assert all(d.notes == () for d in plain)
    sys_d, a = predict(inputs(base, limits, panic_on_oom=1))
    assert notes(sys_d, "panic_on_oom=1") and not notes(a, "panic")
    sys_d, a = predict(inputs(base, limits, panic_on_oom=2))
    assert notes(sys_d, "panic_on_oom=2") and notes(a, "panic_on_oom=2")
    sys_d, a = predict(inputs(base, limits, oom_kill_allocating_task=1))
    assert notes(sys_d, "oom_kill_allocating_task") and not a.notes
    assert victim_pid(sys_d) == 10  # still the model's pick, with the caveat
    sys_d, a = predict(inputs(base, limits, numa_nodes=2))
    assert notes(sys_d, "cpuset") and not a.notes
    sys_d, a = predict(inputs(base, limits, cgroup_v1_memory=True))
    assert notes(sys_d, "cgroup v1") and not a.notes
    swapoff = predict(inputs([*base, task(11, 1, cgroup="/a", name="swapoff")], limits))
    assert all(notes(d, "oom_origin") for d in swapoff)


def test_an_exiting_oom_victim_stops_the_kill() -> None:
    tasks = [task(10, 100, cgroup="/a"), task(11, 5, cgroup="/a", oom_victim=True), task(12, 1000)]
    sys_d, a = predict(inputs(tasks, {"/a": cg(512)}))
    for d in (sys_d, a):
        assert d.victim is None and d.killed_pids == ()
        assert notes(d, "11 (p11) is still exiting")
    # Outside the cgroup's subtree, the victim does not stop the cgroup's OOM.
    sys_d, b = predict(inputs([*tasks, task(13, 1, cgroup="/b")], {"/b": cg(64)}))
    assert sys_d.victim is None and victim_pid(b) == 13
    # Once reaped (MMF_OOM_SKIP: unkillable) the kernel passes over it.
    reaped = [task(10, 100), task(11, 5, oom_victim=True, unkillable=True)]
    d = system(inputs(reaped))
    assert victim_pid(d) == 10 and not notes(d, "exiting")


# --- recording -----------------------------------------------------------------------


def test_inputs_round_trip_through_json() -> None:
    tasks = [
        task(10, 100, cgroup="/a", swap_kb=8, pgtables_kb=12, adj=-5),
        task(11, 2, cgroup=None, oom_victim=True, unkillable=True),
    ]
    data = inputs(
        tasks,
        {"/a": cg(512, swap_max_kb=1024, oom_group=True, cgroup_id=9, procs=(10,))},
        numa_nodes=2,
        start_times={10: 5, 11: 6},
        shared_mm=((10, 11),),
        shared_mm_unknown=(11,),
    )
    again = OomInputs.from_dict(json.loads(json.dumps(data.to_dict())))
    assert again == data
    assert predict(again) == predict(data)
    domains = json.loads(json.dumps([d.to_dict() for d in predict(data)]))
    assert domains[1]["victim"]["pid"] == 10
    assert domains[1]["candidates"][0]["points"] == domains[1]["victim"]["points"]


def test_recorded_fixture() -> None:
    """A recorded hierarchy: a service limited to 1 GiB whose worker cgroup has
    memory.oom.group, beside a bigger unlimited process and a protected daemon."""
    data = OomInputs.from_dict(json.loads((DATA / "oom_inputs.json").read_text()))
    sys_d, svc = predict(data)
    assert victim_pid(sys_d) == 300  # the browser, 3 GiB
    assert svc.cgroup == "/system.slice/app.service"
    assert svc.total_pages == PAGES_PER_GIB + 32768  # 1 GiB + swap.max 128 MiB
    assert victim_pid(svc) == 401
    assert svc.kill_group == "/system.slice/app.service/workers"
    assert svc.killed_pids == (401, 402)  # 403 has adj -1000
    assert next(c for c in svc.candidates if c.pid == 400).score < 1000


# --- the procfs data source, and the model against this host -------------------------


def test_procfs_oom_tasks_of_a_child(spawn_child: object) -> None:
    child = spawn_child(reserve=64 * MiB, touch=16 * MiB)  # type: ignore[operator]
    with open(f"/proc/{child.pid}/oom_score_adj", "w") as f:
        f.write("300")
    found = {t.pid: t for t in oom_tasks(backend="procfs")}
    me = found[child.pid]
    status = status_kb(child.pid)
    assert (me.rss_kb, me.swap_kb, me.pgtables_kb) == (
        status["VmRSS"],
        status["VmSwap"],
        status["VmPTE"],
    )
    assert me.rss_kb >= 16 * 1024
    assert me.oom_score == read_int(f"/proc/{child.pid}/oom_score")
    assert me.oom_score_adj == 300
    assert me.name == proc_status(child.pid)["Name"]
    with open(f"/proc/{child.pid}/cgroup") as f:
        lines = [line.rstrip("\n")[3:] for line in f if line.startswith("0::")]
    assert me.cgroup == (lines[0] if lines else None)
    assert not me.unkillable and not me.oom_victim
    assert 2 not in found or proc_status(2).get("VmSize")  # kernel threads are left out


def test_procfs_oom_tasks_mark_adj_minus_1000_unkillable(spawn_child: object) -> None:
    child = spawn_child(reserve=1 * MiB, touch=0)  # type: ignore[operator]
    try:
        with open(f"/proc/{child.pid}/oom_score_adj", "w") as f:
            f.write("-1000")
    except PermissionError:
        pytest.skip("lowering oom_score_adj needs CAP_SYS_RESOURCE")
    me = {t.pid: t for t in oom_tasks(backend="procfs")}[child.pid]
    assert me.unkillable and me.oom_score == 0 and me.oom_score_adj == -1000


def test_procfs_oom_tasks_read_a_zombie_leader_through_its_thread(zombie_leader: int) -> None:  # noqa: F811
    found = {t.pid: t for t in oom_tasks(backend="procfs")}
    me = found[zombie_leader]
    thread = live_thread_status_kb(zombie_leader)
    assert me.name == ZOMBIE_LEADER_NAME
    assert (me.rss_kb, me.swap_kb, me.pgtables_kb) == (
        thread["VmRSS"],
        thread["VmSwap"],
        thread["VmPTE"],
    )
    assert me.rss_kb >= 64 * 1024
    assert not me.unkillable


def test_procfs_oom_tasks_skip_processes_that_vanish(monkeypatch: pytest.MonkeyPatch) -> None:
    real = procfs.list_pids()
    monkeypatch.setattr(procfs, "list_pids", lambda: [*real, 2**22 + 1])
    assert {t.pid for t in procfs.ProcfsBackend().oom_tasks()} <= set(real)


def test_procfs_global_init_is_unkillable() -> None:
    found = {t.pid: t for t in oom_tasks(backend="procfs")}
    if 1 not in found:
        pytest.skip("pid 1 is hidden from us or has no memory")
    init = found[1]
    if procfs.proc_is_init_pid_ns():  # the kernel's own answer for the global init is 0
        assert init.unkillable and init.oom_score == 0
    else:  # a container's pid 1 is an ordinary candidate
        assert init.unkillable == (init.oom_score == 0)


def test_system_scores_match_the_kernels_oom_score(spawn_child: object) -> None:
    """Each task's model score against RAM + swap is its /proc/PID/oom_score, for every
    task whose figures were the same before and after (the others moved meanwhile)."""
    child = spawn_child(reserve=64 * MiB, touch=32 * MiB)  # type: ignore[operator]
    data = collect_inputs("procfs")
    assert data.backend == "procfs"
    sys_d = predict(data)[0]
    scores = {c.pid: c.score for c in sys_d.candidates}
    steady = []
    for t in data.tasks:
        try:
            status = status_kb(t.pid)
            now = read_int(f"/proc/{t.pid}/oom_score")
        except (OSError, KeyError):
            continue
        if (status.get("VmRSS"), status.get("VmSwap"), status.get("VmPTE"), now) == (
            t.rss_kb,
            t.swap_kb,
            t.pgtables_kb,
            t.oom_score,
        ):
            steady.append(t)
            assert scores[t.pid] == t.oom_score, t
    assert child.pid in {t.pid for t in steady}
    assert scores[child.pid] == read_int(f"/proc/{child.pid}/oom_score") > 0


# --- reading the cgroup v2 tree ------------------------------------------------------


MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 31 0:38 /sub /mnt/my\\040cg rw,relatime - cgroup2 cgroup2 rw
"""


def test_the_cgroup2_mount_and_v1_memory_are_found() -> None:
    assert oom_inputs.cgroup2_mount(MOUNTINFO) == ("/", "/sys/fs/cgroup/unified")
    assert oom_inputs.cgroup2_mount(MOUNTINFO.splitlines()[3]) == ("/sub", "/mnt/my cg")
    assert oom_inputs.cgroup2_mount("") is None
    assert oom_inputs.v1_memory_in_use(MOUNTINFO, "0::/\n")
    assert oom_inputs.v1_memory_in_use("", "4:memory:/x\n0::/\n")
    assert not oom_inputs.v1_memory_in_use(MOUNTINFO.splitlines()[2], "1:cpu:/\n0::/\n")


def test_the_cgroup_tree_is_read(tmp_path: Path) -> None:
    def write(path: Path, files: dict[str, str]) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (path / name).write_text(text + "\n")

    root = tmp_path / "cg"
    write(root, {"cgroup.controllers": "cpu memory io", "cgroup.subtree_control": "memory"})
    write(
        root / "a",
        {
            "cgroup.controllers": "memory",
            "cgroup.subtree_control": "",
            "memory.max": str(512 * MiB),
            "memory.swap.max": "max",
            "memory.current": str(100 * MiB),
            "memory.swap.current": "0",
            "memory.oom.group": "1",
            "memory.events": "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1",
            "cgroup.procs": "30\n10\n20",
        },
    )
    write(root / "a" / "x", {"cgroup.controllers": ""})
    found = oom_inputs.read_cgroups(("/", str(root)))
    assert sorted(found) == ["/", "/a", "/a/x"]
    assert found["/"].has_memory_controller and found["/"].memory_max_kb is None
    a = found["/a"]
    assert (a.memory_max_kb, a.swap_max_kb, a.current_kb, a.oom_group, a.oom_kill) == (
        512 * 1024,
        None,
        100 * 1024,
        True,
        1,
    )
    assert a.has_memory_controller
    assert a.procs == (30, 10, 20)  # in the file's order: the kernel's walk
    assert a.cgroup_id == (root / "a").stat().st_ino
    assert found["/a/x"].procs is None
    assert not found["/a/x"].has_memory_controller  # "memory" not in /a's subtree_control
    # A mount of a subtree names the cgroups by their full path.
    assert sorted(oom_inputs.read_cgroups(("/sub", str(root / "a")))) == ["/sub", "/sub/x"]


def test_collect_inputs_reads_this_host() -> None:
    data = collect_inputs("procfs")
    assert data.mem_total_kb == meminfo_kb()["MemTotal"]
    assert data.page_size == os.sysconf("SC_PAGE_SIZE")
    assert data.swappiness == read_int("/proc/sys/vm/swappiness")
    assert data.panic_on_oom == read_int("/proc/sys/vm/panic_on_oom")
    assert os.getpid() in {t.pid for t in data.tasks}
    mount = oom_inputs.cgroup2_mount()
    if mount is not None:
        mine = next(t for t in data.tasks if t.pid == os.getpid())
        assert mine.cgroup in data.cgroups
    json.dumps(data.to_dict())  # recordable


@pytest.fixture(scope="module")
def walk_member(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("needs a C compiler (gcc) to build tests/oom/walk_member.c")
    out = tmp_path_factory.mktemp("walk") / "walk_member"
    source = Path(__file__).parent / "oom" / "walk_member.c"
    subprocess.run([compiler, "-O2", "-o", str(out), str(source)], check=True)
    return out


def test_kcmp_finds_a_clone_vm_child_and_asks_only_about_equal_figures(
    walk_member: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = subprocess.Popen(
        [str(walk_member), str(MiB), "clone"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    child = 0
    try:
        assert proc.stdout.readline().split()[0] == b"started"
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        words = proc.stdout.readline().split()
        pid, child = int(words[1]), int(words[2])
        tasks = [t for t in procfs.ProcfsBackend().oom_tasks() if t.pid in (pid, child)]
        assert len(tasks) == 2
        asked: list[tuple[int, int]] = []
        kcmp = oom_inputs._kcmp_vm

        def counting(a: int, b: int) -> bool | None:
            asked.append((a, b))
            return kcmp(a, b)

        monkeypatch.setattr(oom_inputs, "_kcmp_vm", counting)
        # this process's figures differ: kcmp is not asked about it
        me = next(t for t in procfs.ProcfsBackend().oom_tasks() if t.pid == os.getpid())
        groups, unknown = oom_inputs.find_shared_mm([*tasks, me], [pid, os.getpid()])
        assert (groups, unknown) == (((pid, child),), ())
        assert asked == [(pid, child)]
        times = oom_inputs.read_start_times([pid, child, 0])
        assert set(times) == {pid, child} and times[pid] <= times[child]
        # predict_oom() end to end, on these two alone: a tie (one mm), walked in
        # creation order (the child last), both killed
        monkeypatch.setattr(oom_inputs, "_kcmp_vm", kcmp)
        only = inputs(tasks)
        monkeypatch.setattr("tamalloc.oom.collect_inputs", lambda backend: only)
        (d,) = predict_oom()
        assert (d.tied_pids, d.tie_order_known, victim_pid(d)) == ((pid, child), True, child)
        assert d.killed_pids == (pid, child)
        assert [(k.pid, k.shares_mm_with) for k in d.shared_mm_kills] == [(pid, child)]
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        if child:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
