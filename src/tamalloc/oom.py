"""Which process the OOM killer would kill: Linux 6.1's choice, recomputed.

The model is pure: :func:`predict` takes an :class:`OomInputs` (what the kernel
weighs: every task's rss, swap, page tables and ``oom_score_adj``, the memory and swap
of the machine, the cgroup v2 limits) and returns one :class:`OomDomain` per place an
OOM can happen: the whole system, and each cgroup whose ``memory.max`` is finite.
Reading the inputs from a live system is :mod:`tamalloc.oom_inputs`.

It follows mm/oom_kill.c (``oom_badness``, ``oom_evaluate_task``,
``select_bad_process``, ``oom_kill_process``), mm/memcontrol.c
(``mem_cgroup_get_max``, ``mem_cgroup_get_oom_group``) and fs/proc/base.c
(``proc_oom_score``), with C's integer arithmetic: division truncates toward zero,
which matters because a negative ``oom_score_adj`` makes the badness negative.
What the kernel decides from facts the inputs lack (the allocating task, cpusets, a
victim still exiting) becomes a note on the domain rather than a guess.
"""

from __future__ import annotations

import dataclasses
import functools
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .cgroupfs import ROOT, normalize_cgroup
from .errors import NoSuchCgroup
from .models import OomTask

# The inputs' records and their reading, and the kernel's arithmetic, sit below the
# model (docs/architecture.md); their names stay importable from here.
from .oom_inputs import OomCgroup as OomCgroup
from .oom_inputs import OomInputs as OomInputs
from .oom_inputs import collect_inputs as collect_inputs
from .oom_inputs import find_shared_mm, plain_dict, read_start_times
from .oom_score import OOM_SCORE_ADJ_MIN as OOM_SCORE_ADJ_MIN
from .oom_score import badness as badness
from .oom_score import c_div as c_div
from .oom_score import proc_score as proc_score


def is_within(path: str, ancestor: str) -> bool:
    """Whether cgroup ``path`` is ``ancestor`` or below it."""
    return ancestor == ROOT or path == ancestor or path.startswith(ancestor + "/")


def _parent(path: str) -> str | None:
    return None if path == ROOT else posixpath.dirname(path)


@dataclass(frozen=True, slots=True)
class OomCandidate:
    pid: int
    name: str
    cgroup: str | None
    points: int | None  # oom_badness() in pages against this domain; None = unkillable
    rss_pages: int
    swap_pages: int
    pgtables_pages: int
    oom_score_adj: int
    adj_pages: int  # adj * (total_pages // 1000), C semantics
    score: int  # 0..2000 like /proc/PID/oom_score but against this domain
    unkillable: str | None  # reason, None if killable

    def to_dict(self) -> dict[str, Any]:
        return plain_dict(self)


@dataclass(frozen=True, slots=True)
class OomSharedKill:
    """A process that dies with a killed one because it uses the same memory (mm)."""

    pid: int
    name: str
    shares_mm_with: int  # the killed process whose mm it uses
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return plain_dict(self)


@dataclass(frozen=True, slots=True)
class OomDomain:
    kind: Literal["system", "cgroup"]
    cgroup: str | None  # None for system
    total_pages: int
    limit_kb: int
    usage_kb: int
    # What the domain can still take before an OOM: the least, over itself and every
    # limited ancestor, of (limit - usage), 0 at the limit. A charge walks up the
    # hierarchy (try_charge() -> page_counter_try_charge()) and fails at the first
    # counter over its limit, so a smaller ancestor's OOM comes first.
    headroom_kb: int
    # The cgroup whose limit leaves that least headroom, where the OOM happens first:
    # the domain itself, or an ancestor (the lowest one on a tie, as the walk goes up).
    # None for the system.
    bound_by: str | None
    candidates: tuple[OomCandidate, ...]  # ranked, victim first, unkillable last
    victim: OomCandidate | None
    kill_group: str | None  # memory.oom.group cgroup whose tasks all die
    killed_pids: tuple[int, ...]  # everyone who dies, shared_mm_kills included
    notes: tuple[str, ...] = field(default=())
    # The killable candidates with the victim's points, when more than one: in the
    # order of the kernel's walk when tie_order_known (the victim is the last), else
    # by pid (and the victim is a guess: the highest pid).
    tied_pids: tuple[int, ...] = ()
    tie_order_known: bool = False
    # Processes sharing the mm of a killed one (not themselves chosen nor group
    # members): __oom_kill_process() SIGKILLs them too.
    shared_mm_kills: tuple[OomSharedKill, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return plain_dict(self)


def _unkillable_reason(task: OomTask) -> str | None:
    if task.oom_score_adj == OOM_SCORE_ADJ_MIN:
        return "oom_score_adj -1000"
    if not task.unkillable:
        return None
    if task.pid == 1:
        return "global init"
    # The flag without either visible cause: the OOM reaper's MMF_OOM_SKIP, or a
    # parent waiting in vfork().
    return "OOM-reaped or in vfork (MMF_OOM_SKIP)"


def _is_global_init(task: OomTask) -> bool:
    # A container's pid 1 is killable; the backends set the flag only for the real one.
    return task.pid == 1 and task.unkillable


def _aborts_selection(task: OomTask) -> bool:
    """A victim still exiting stops oom_evaluate_task() unless the OOM reaper is done
    with it (MMF_OOM_SKIP). The flag says unkillable then; with adj -1000 as well the
    flag cannot tell, and the victim is taken to be unreaped."""
    if not task.oom_victim or _is_global_init(task):
        return False
    return not task.unkillable or task.oom_score_adj == OOM_SCORE_ADJ_MIN


def _origin_first(
    tasks: list[OomTask], ranked: list[OomCandidate]
) -> tuple[list[OomCandidate], OomCandidate | None, list[str]]:
    """oom_evaluate_task() takes a task marked oom_origin (running swapoff or a KSM
    unmerge) with LONG_MAX points before it weighs badness: oom_score_adj -1000,
    MMF_OOM_SKIP or a vfork do not spare it; only oom_unkillable_task() (the global
    init) does. Returns the ranking with it first, it, and the notes. Of several, the
    kernel keeps the last of its walk, taken here to be the highest pid."""
    marked = {t.pid for t in tasks if t.oom_origin and not _is_global_init(t)}
    origins = [c for c in ranked if c.pid in marked]
    notes = []
    for t in tasks:
        if t.oom_origin is None and t.name == "swapoff":
            # Only a hint: the name is the process's own choice, and this backend
            # cannot see the flag that decides.
            notes.append(
                f"a process named swapoff runs as pid {t.pid}: a task in swapoff (or in a"
                " KSM unmerge) is marked oom_origin and killed first, whatever its"
                " points, but this backend cannot see the mark"
            )
    if not origins:
        return ranked, None, notes
    chosen = max(origins, key=lambda c: c.pid)
    notes.append(
        f"pid {chosen.pid} ({chosen.name}) is marked oom_origin (it runs swapoff or a KSM"
        " unmerge): the kernel takes it before weighing anyone's points"
    )
    if len(origins) > 1:
        pids = ", ".join(str(c.pid) for c in sorted(origins, key=lambda c: c.pid))
        notes.append(
            f"tie: pids {pids} are all marked oom_origin; the kernel kills the last of"
            f" them in its task walk, taken here to be the highest pid ({chosen.pid})"
        )
    return [chosen, *(c for c in ranked if c is not chosen)], chosen, notes


def _already_exiting(
    victim: OomCandidate | None, tasks: list[OomTask], where: str
) -> tuple[bool, list[str]]:
    """Whether oom_kill_process() finds the chosen victim already exiting
    (task_will_free_mem()): it marks it and kills nobody new. And the notes on tasks
    exiting in the domain: an OOM that one of them triggers kills nobody
    (out_of_memory()'s task_will_free_mem(current), memcg's task_is_dying())."""
    exiting = [t for t in tasks if t.exiting]
    notes = []
    if exiting:
        names = ", ".join(f"{t.pid} ({t.name})" for t in exiting)
        notes.append(
            f"exiting: {names}; an OOM in {where} that such a task triggers lets it exit"
            " and kills nobody"
        )
    if victim is None or not any(t.pid == victim.pid for t in exiting):
        return False, notes
    notes.insert(
        0,
        f"the chosen victim {victim.pid} ({victim.name}) is already exiting: an OOM in"
        f" {where} now would let it finish and kill nobody new",
    )
    return True, notes


def candidate(task: OomTask, total_pages: int, page_kb: int) -> OomCandidate:
    """One task weighed against a domain of ``total_pages``."""
    rss, swap = task.rss_kb // page_kb, task.swap_kb // page_kb
    pgtables = task.pgtables_kb // page_kb
    adj_pages = task.oom_score_adj * (total_pages // 1000)
    reason = _unkillable_reason(task)
    points = None if reason else badness(rss, swap, pgtables, task.oom_score_adj, total_pages)
    return OomCandidate(
        pid=task.pid,
        name=task.name,
        cgroup=task.cgroup,
        points=points,
        rss_pages=rss,
        swap_pages=swap,
        pgtables_pages=pgtables,
        oom_score_adj=task.oom_score_adj,
        adj_pages=adj_pages,
        score=proc_score(points, total_pages),
        unkillable=reason,
    )


def _rank_key(c: OomCandidate) -> tuple[int, int, int]:
    # The kernel keeps the last of equal badnesses in its walk: _domain() reorders a
    # tie by the walk where the inputs tell it; else the higher pid stands for "last".
    if c.points is None:
        return (1, 0, -c.rss_pages)
    return (0, -c.points, -c.pid)


def memcg_of(path: str, cgroups: Mapping[str, OomCgroup]) -> str:
    """The cgroup whose memcg ``path``'s tasks are charged to: itself, or the nearest
    ancestor with the memory controller (the root in the end)."""
    here: str | None = path
    while here is not None and here != ROOT:
        info = cgroups.get(here)
        if info is not None and info.has_memory_controller:
            return here
        here = _parent(here)
    return ROOT


def _oom_group(
    victim_cgroup: str | None, domain: str, cgroups: Mapping[str, OomCgroup]
) -> str | None:
    """mem_cgroup_get_oom_group(): the highest memcg with memory.oom.group set between
    the victim's memcg and the OOM domain (both included)."""
    if victim_cgroup is None:
        return None
    memcg = memcg_of(victim_cgroup, cgroups)
    if memcg == ROOT or not is_within(memcg, domain):
        return None
    found = None
    here: str | None = memcg
    while here is not None:
        info = cgroups.get(here)
        if info is not None and info.has_memory_controller and info.oom_group:
            found = here
        if here == domain:
            break
        here = _parent(here)
    return found


def _cgroup_total_pages(info: OomCgroup, inputs: OomInputs) -> int:
    """mem_cgroup_get_max() on cgroup v2, or 1 as constrained_alloc() when it is 0."""
    assert info.memory_max_kb is not None
    page_kb = inputs.page_kb
    total = info.memory_max_kb // page_kb
    if inputs.swappiness:
        swap_total = inputs.swap_total_kb // page_kb
        swap_max = swap_total if info.swap_max_kb is None else info.swap_max_kb // page_kb
        total += min(swap_max, swap_total)
    return total or 1


def _budget(info: OomCgroup, inputs: OomInputs) -> tuple[int, int, int]:
    """A limited cgroup's (total pages, limit kB, usage kB), swap included when the
    limit counts it."""
    total = _cgroup_total_pages(info, inputs)
    swap = info.swap_current_kb if inputs.swappiness else 0
    return total, total * inputs.page_kb, info.current_kb + swap


def _is_limited(path: str, info: OomCgroup) -> bool:
    return info.memory_max_kb is not None and info.has_memory_controller and path != ROOT


def _binding(path: str, inputs: OomInputs) -> tuple[str, int]:
    """The cgroup among ``path`` and its limited ancestors with the least headroom (the
    lowest on a tie: page_counter_try_charge() fails at the first counter over its
    limit on the way up), and that headroom in kB."""
    best: tuple[str, int] | None = None
    here: str | None = path
    while here is not None:
        info = inputs.cgroups.get(here)
        if info is not None and _is_limited(here, info):
            _, limit_kb, usage_kb = _budget(info, inputs)
            room = max(limit_kb - usage_kb, 0)
            if best is None or room < best[1]:
                best = (here, room)
        here = _parent(here)
    assert best is not None, path  # path itself is limited
    return best


def _memcg_order(a: str, b: str, cgroups: Mapping[str, OomCgroup]) -> tuple[bool | None, str]:
    """Whether mem_cgroup_scan_tasks() walks memcg ``a`` before memcg ``b`` (a != b):
    css pre-order, a parent before its children and siblings in the order their css
    was created (css_create() appends), which for cgroup v2 is the cgroups' creation
    order and so their ids' (kernfs hands ids out increasing)."""
    if is_within(b, a):
        return True, ""
    if is_within(a, b):
        return False, ""
    pa, pb = a.split("/"), b.split("/")
    k = 0
    while pa[k] == pb[k]:
        k += 1
    sa, sb = "/".join(pa[: k + 1]), "/".join(pb[: k + 1])
    ia = cgroups[sa].cgroup_id if sa in cgroups else None
    ib = cgroups[sb].cgroup_id if sb in cgroups else None
    if ia is None or ib is None:
        return None, f"the cgroup ids of {sa} and {sb} are unknown"
    return ia < ib, ""


def _walk_before(
    a: OomCandidate, b: OomCandidate, system: bool, inputs: OomInputs
) -> tuple[bool | None, str]:
    """Whether the OOM's task walk meets ``a`` before ``b``; None (and why) when the
    inputs do not tell."""
    if system:
        # for_each_process(): the order processes were created in (copy_process()
        # appends to init_task.tasks), which start times give to a clock tick; within
        # one tick pids, handed out increasing, tell (unless they wrapped then).
        ta, tb = inputs.start_times.get(a.pid), inputs.start_times.get(b.pid)
        if ta is None or tb is None:
            missing = a.pid if ta is None else b.pid
            return None, f"the start time of pid {missing} is unknown"
        return (ta < tb if ta != tb else a.pid < b.pid), ""
    if a.cgroup is None or b.cgroup is None:
        return None, "a cgroup is unknown"
    ma, mb = memcg_of(a.cgroup, inputs.cgroups), memcg_of(b.cgroup, inputs.cgroups)
    if ma != mb:
        return _memcg_order(ma, mb, inputs.cgroups)
    if a.cgroup != b.cgroup:
        # One memcg's walk takes its css_sets in the order they were created, and
        # /proc shows no css_set.
        return None, (
            f"{a.cgroup} and {b.cgroup} share the memcg of {ma}: its walk takes their"
            " processes in css_set creation order, which no file shows"
        )
    info = inputs.cgroups.get(a.cgroup)
    procs = info.procs if info is not None else None
    if procs is None or a.pid not in procs or b.pid not in procs:
        return None, f"{a.cgroup}'s cgroup.procs does not list both {a.pid} and {b.pid}"
    # cgroup.procs reads with the walk's own iterator (css_task_iter, PROCS): the
    # same order, each process where its leader joined (css_set_move_task() appends).
    return procs.index(a.pid) < procs.index(b.pid), ""


def _tie_order(
    tied: Sequence[OomCandidate], system: bool, inputs: OomInputs
) -> tuple[list[OomCandidate] | None, str]:
    """The tied candidates in walk order when the last of them is known (the rest in
    walk order as far as known, else by pid), or None and why not."""
    why = ""
    last = None
    for x in tied:
        befores = [_walk_before(y, x, system, inputs) for y in tied if y is not x]
        if all(known is True for known, _ in befores):
            last = x
            break
        why = why or next((r for known, r in befores if known is None), "")
    if last is None:
        return None, why or "the walk's order is not known"
    rest = [c for c in tied if c is not last]

    def compare(x: OomCandidate, y: OomCandidate) -> int:
        known, _ = _walk_before(x, y, system, inputs)
        if known is None:
            return x.pid - y.pid
        return -1 if known else 1

    return [*sorted(rest, key=functools.cmp_to_key(compare)), last], ""


def _shared_kills(
    killed: Sequence[int], inputs: OomInputs, notes: list[str]
) -> list[OomSharedKill]:
    """__oom_kill_process(): every other process using a killed one's mm dies with it
    (SIGKILL, no "Killed process" line of its own), whatever its oom_score_adj; only
    the global init is spared (the kernel then leaves the mm unreaped)."""
    by_pid = {t.pid: t for t in inputs.tasks}
    seen = set(killed)
    found = []
    for pid in killed:
        for group in inputs.shared_mm:
            if pid not in group:
                continue
            for other in group:
                if other in seen:
                    continue
                task = by_pid.get(other)
                if task is not None and _is_global_init(task):
                    notes.append(
                        f"the global init shares the memory of {pid}: it lives, and the"
                        " OOM reaper leaves that memory alone (MMF_OOM_SKIP)"
                    )
                    continue
                seen.add(other)
                found.append(
                    OomSharedKill(
                        pid=other,
                        name=task.name if task is not None else "?",
                        shares_mm_with=pid,
                        reason=(
                            f"shares the memory (mm) of {pid} (a clone(CLONE_VM) without"
                            " CLONE_THREAD, or a vfork child before its exec): the kernel"
                            " SIGKILLs it too, without a Killed process line of its own"
                        ),
                    )
                )
    return found


def _domain(
    inputs: OomInputs,
    kind: Literal["system", "cgroup"],
    path: str | None,
    tasks: Iterable[OomTask],
    total_pages: int,
    limit_kb: int,
    usage_kb: int,
    notes: list[str],
    bound: tuple[str, int] | None = None,
) -> OomDomain:
    tasks = list(tasks)
    ranked = sorted((candidate(t, total_pages, inputs.page_kb) for t in tasks), key=_rank_key)
    ranked, origin, origin_notes = _origin_first(tasks, ranked)
    notes.extend(origin_notes)
    killable = [c for c in ranked if c.points is not None]
    victim = origin or (killable[0] if killable else None)
    where = "the system" if path is None else path
    # oom_evaluate_task() aborts the whole selection on meeting a victim that has not
    # been reaped yet: the kernel waits for it to exit and kills nobody new.
    exiting = [t for t in tasks if _aborts_selection(t)]
    if exiting:
        names = ", ".join(f"{t.pid} ({t.name})" for t in exiting)
        notes.insert(
            0,
            f"OOM victim {names} is still exiting: an OOM in {where} now would"
            " wait for it and kill nobody new",
        )
        victim = None
    tied_pids: tuple[int, ...] = ()
    tie_known = False
    if victim is not None and origin is None:
        tied = [c for c in killable if c.points == victim.points]
        if len(tied) > 1:
            # oom_evaluate_task() takes a task whose points are not below the chosen
            # one's: of equal points, the last of the walk wins.
            order, why = _tie_order(tied, path is None, inputs)
            if order is not None:
                tie_known = True
                victim = order[-1]
                # The next OOM (the victim gone) takes the last of the rest, and so on.
                rest = [c for c in ranked if c not in tied]
                ranked = [*reversed(order), *rest]
                tied_pids = tuple(c.pid for c in order)
                walk = (
                    "for_each_process(), creation order: by start time"
                    if path is None
                    else "the memcg walk: cgroups parent first, siblings in creation"
                    " order, each cgroup's processes in cgroup.procs order"
                )
                notes.append(
                    f"tie: pids {', '.join(map(str, tied_pids))} have {victim.points}"
                    f" points each, in that order in the kernel's walk ({walk}); the"
                    f" kernel keeps the last: {victim.pid}"
                )
            else:
                tied_pids = tuple(sorted(c.pid for c in tied))
                notes.append(
                    f"tie: pids {', '.join(map(str, tied_pids))} have {victim.points}"
                    f" points each; the kernel kills the last of them in its walk, whose"
                    f" order is not known here ({why}): taken to be the highest pid"
                    f" ({victim.pid})"
                )
    skipped = False
    if not exiting:
        skipped, exiting_notes = _already_exiting(victim, tasks, where)
        notes.extend(exiting_notes)
        if skipped:
            victim = None
    kill_group = None
    killed: tuple[int, ...] = ()
    if victim is not None:
        kill_group = _oom_group(victim.cgroup, path or ROOT, inputs.cgroups)
        if kill_group is None:
            killed = (victim.pid,)
        else:
            # oom_kill_memcg_member() spares only -1000 and init, not MMF_OOM_SKIP;
            # the victim itself is killed first whatever its adj (an oom_origin one).
            killed = tuple(
                sorted(
                    {victim.pid}
                    | {
                        t.pid
                        for t in inputs.tasks
                        if t.cgroup is not None
                        and is_within(t.cgroup, kill_group)
                        and t.oom_score_adj != OOM_SCORE_ADJ_MIN
                        and not _is_global_init(t)
                    }
                )
            )
    elif not exiting and not skipped:
        notes.append(f"no killable task in {where}")
    shared = _shared_kills(killed, inputs, notes)
    if shared:
        killed = tuple(sorted({*killed, *(k.pid for k in shared)}))
    unchecked = sorted(set(killed).union(tied_pids).intersection(inputs.shared_mm_unknown))
    if unchecked:
        notes.append(
            f"whether other processes share the memory of {', '.join(map(str, unchecked))}"
            " could not be checked (kcmp needs ptrace access: root): any that do die"
            " with them"
        )
    headroom = max(limit_kb - usage_kb, 0)
    bound_by = path
    if bound is not None:
        bound_by, headroom = bound
        if bound_by != path:
            notes.insert(
                0,
                f"{bound_by} has less room left than {path}'s own limit: an OOM in"
                f" {bound_by} comes first, weighing every task of {bound_by}",
            )
    return OomDomain(
        kind=kind,
        cgroup=path,
        total_pages=total_pages,
        limit_kb=limit_kb,
        usage_kb=usage_kb,
        headroom_kb=headroom,
        bound_by=bound_by,
        candidates=tuple(ranked),
        victim=victim,
        kill_group=kill_group,
        killed_pids=killed,
        notes=tuple(notes),
        tied_pids=tied_pids,
        tie_order_known=tie_known,
        shared_mm_kills=tuple(shared),
    )


def _system_notes(inputs: OomInputs) -> list[str]:
    notes = []
    if inputs.panic_on_oom:
        notes.append(
            f"vm.panic_on_oom={inputs.panic_on_oom}: a system-wide OOM panics the"
            " kernel instead of killing"
        )
    if inputs.oom_kill_allocating_task:
        notes.append(
            "vm.oom_kill_allocating_task=1: a system-wide OOM kills the task whose"
            " allocation failed (when killable), not the victim shown"
        )
    if inputs.numa_nodes > 1:
        notes.append(
            f"{inputs.numa_nodes} NUMA nodes: an OOM confined by a cpuset or a"
            " mempolicy weighs only the tasks allowed on those nodes, against their"
            " memory; not modelled"
        )
    if inputs.cgroup_v1_memory:
        notes.append(
            "a cgroup v1 memory hierarchy is in use: its limits and their OOMs are"
            " not modelled (only cgroup v2)"
        )
    return notes


def _cgroup_notes(inputs: OomInputs) -> list[str]:
    if inputs.panic_on_oom == 2:
        return ["vm.panic_on_oom=2: an OOM in this cgroup panics the kernel instead of killing"]
    return []


def predict(inputs: OomInputs, *, cgroup: str | None = None) -> list[OomDomain]:
    """The OOM domains and who each would kill: the system first, then every cgroup
    with a finite memory.max, by path. ``cgroup`` keeps only the domains that are or
    contain it (NoSuchCgroup when the inputs do not know it)."""
    wanted = None
    _check_str("cgroup", cgroup)
    if cgroup is not None:
        wanted = normalize_cgroup(cgroup)
        if not inputs.cgroups:
            raise NoSuchCgroup(f"no such cgroup: {wanted} (no cgroup v2 hierarchy is mounted)")
        if wanted not in inputs.cgroups:
            raise NoSuchCgroup(f"no such cgroup: {wanted} (not in the cgroup v2 hierarchy)")
    page_kb = inputs.page_kb
    system_pages = (inputs.mem_total_kb + inputs.swap_total_kb) // page_kb
    used = inputs.mem_total_kb - inputs.mem_available_kb
    swap_used = inputs.swap_total_kb - inputs.swap_free_kb
    domains = [
        _domain(
            inputs,
            "system",
            None,
            inputs.tasks,
            system_pages,
            limit_kb=system_pages * page_kb,
            usage_kb=used + swap_used,
            notes=_system_notes(inputs),
        )
    ]
    for path in sorted(inputs.cgroups):
        info = inputs.cgroups[path]
        if not _is_limited(path, info):
            continue
        if wanted is not None and not is_within(wanted, path):
            continue
        total, limit_kb, usage_kb = _budget(info, inputs)
        members = [t for t in inputs.tasks if t.cgroup is not None and is_within(t.cgroup, path)]
        domains.append(
            _domain(
                inputs,
                "cgroup",
                path,
                members,
                total,
                limit_kb=limit_kb,
                usage_kb=usage_kb,
                notes=_cgroup_notes(inputs),
                bound=_binding(path, inputs),
            )
        )
    return domains


def predict_oom(*, cgroup: str | None = None, backend: str | None = None) -> list[OomDomain]:
    """Who the OOM killer would kill now, in the system and in each limited cgroup.

    TypeError for a ``cgroup`` or ``backend`` that is not a str (or None), before any
    process is read; NoSuchCgroup for a cgroup that does not exist.
    """
    _check_str("cgroup", cgroup)
    _check_str("backend", backend)
    inputs = collect_inputs(backend)
    domains = predict(inputs, cgroup=cgroup)
    # What only matters for a few processes is read for those alone, then the model
    # runs again: the start times of a system-wide tie (its walk's order), and which
    # processes share the mm of one that would die or could be chosen. A new victim
    # (a tie resolved) can bring new pids to look at: hence the loop, which ends as
    # the pids only grow.
    looked: set[int] = set()
    timed: set[int] = set()
    groups: list[set[int]] = []
    unknown: set[int] = set()
    for _ in range(4):
        wanted = {p for d in domains for p in (*d.killed_pids, *d.tied_pids)} - looked
        system_tie = {p for d in domains if d.kind == "system" for p in d.tied_pids} - timed
        if not wanted and not system_tie:
            break
        looked |= wanted
        timed |= system_tie
        found, refused = find_shared_mm(inputs.tasks, sorted(wanted))
        unknown.update(refused)
        for group in found:
            overlapping = [g for g in groups if not g.isdisjoint(group)]
            merged = set(group).union(*overlapping)
            groups = [g for g in groups if g not in overlapping] + [merged]
        inputs = dataclasses.replace(
            inputs,
            start_times={**inputs.start_times, **read_start_times(sorted(system_tie))},
            shared_mm=tuple(tuple(sorted(g)) for g in groups),
            shared_mm_unknown=tuple(sorted(unknown)),
        )
        domains = predict(inputs, cgroup=cgroup)
    return domains


def _check_str(what: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} must be a str or None, not {type(value).__name__}")
