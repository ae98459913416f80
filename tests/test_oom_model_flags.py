"""The OOM model on what only the kernel and bpf backends see: a task marked oom_origin
(swapoff, a KSM unmerge) and a task already exiting (task_will_free_mem())."""

from __future__ import annotations

from tamalloc.models import OomTask
from tamalloc.oom import OomDomain, OomInputs, predict
from test_oom_model import cg, inputs, system, task, victim_pid


def notes(domain: OomDomain, word: str) -> list[str]:
    return [n for n in domain.notes if word in n]


def origin(t: OomTask) -> OomTask:
    return t._replace(oom_origin=True)


def seen(t: OomTask) -> OomTask:
    """As the kernel backend reports a task: both flags known, neither set."""
    return t._replace(oom_origin=False, exiting=False)


def test_oom_origin_is_chosen_before_any_badness() -> None:
    # A 1 MiB swapoff at adj -1000 against a 400 MiB hog: oom_evaluate_task() takes the
    # marked task with LONG_MAX points before oom_badness() (which would rule it out).
    hog = seen(task(10, 400, cgroup="/a"))
    swapoff = origin(task(11, 1, cgroup="/a", adj=-1000, name="swapoff"))
    for d in predict(inputs([hog, swapoff], {"/a": cg(128)})):
        assert victim_pid(d) == 11 and d.killed_pids == (11,)
        assert d.candidates[0].pid == 11 and d.candidates[1].pid == 10
        assert notes(d, "pid 11 (swapoff) is marked oom_origin")
        assert not notes(d, "cannot see")


def test_oom_origin_spares_only_the_global_init() -> None:
    init = origin(task(1, 1, unkillable=True, name="init"))
    d = system(inputs([init, seen(task(10, 40))]))
    assert victim_pid(d) == 10 and not notes(d, "marked oom_origin")


def test_an_unreaped_victim_still_aborts_before_oom_origin() -> None:
    # The walk aborts on meeting the earlier victim, whatever it selected before.
    tasks = [origin(task(10, 1)), seen(task(11, 5, oom_victim=True))]
    d = system(inputs(tasks))
    assert d.victim is None and d.killed_pids == ()
    assert notes(d, "still exiting")


def test_several_oom_origins_are_a_tie() -> None:
    d = system(inputs([origin(task(10, 1)), origin(task(12, 1)), seen(task(11, 90))]))
    assert victim_pid(d) == 12
    assert notes(d, "tie: pids 10, 12 are all marked oom_origin")


def test_an_oom_origin_victim_at_adj_minus_1000_dies_with_its_group() -> None:
    # __oom_kill_process() kills the victim whatever its adj; the group members at
    # -1000 (the hog here) are spared.
    tasks = [
        origin(task(10, 1, cgroup="/a", adj=-1000)),
        seen(task(11, 50, cgroup="/a", adj=-1000)),
        seen(task(12, 20, cgroup="/a")),
    ]
    d = predict(inputs(tasks, {"/a": cg(128, oom_group=True)}))[1]
    assert d.kill_group == "/a" and d.killed_pids == (10, 12)


def test_the_name_swapoff_is_only_a_hint_where_the_mark_cannot_be_seen() -> None:
    hog = task(10, 400)
    named = task(11, 1, name="swapoff")  # procfs: oom_origin None
    d = system(inputs([hog, named]))
    assert victim_pid(d) == 10  # a name is the process's own choice: no override
    assert notes(d, "named swapoff runs as pid 11") and notes(d, "cannot see the mark")
    # The kernel backend says it is not marked: no hint.
    d = system(inputs([seen(hog), seen(named)]))
    assert victim_pid(d) == 10 and not notes(d, "swapoff")


def test_a_chosen_victim_already_exiting_kills_nobody_new() -> None:
    dying = task(10, 400, cgroup="/a")._replace(oom_origin=False, exiting=True)
    other = seen(task(11, 40, cgroup="/a"))
    for d in predict(inputs([dying, other], {"/a": cg(512)})):
        assert d.victim is None and d.killed_pids == () and d.kill_group is None
        assert notes(d, "the chosen victim 10 (p10) is already exiting")
        assert not notes(d, "no killable task")
        assert d.candidates[0].pid == 10  # still ranked first, as the kernel chose it


def test_an_exiting_task_that_is_not_the_victim_is_named() -> None:
    # It would not stop the kill, but an OOM it triggers itself kills nobody.
    exiting = task(11, 4)._replace(oom_origin=False, exiting=True)
    d = system(inputs([seen(task(10, 400)), exiting]))
    assert victim_pid(d) == 10 and d.killed_pids == (10,)
    assert notes(d, "exiting: 11 (p11)") and not notes(d, "already exiting")


def test_unknown_flags_change_nothing_and_round_trip() -> None:
    data = inputs([task(10, 40), origin(task(11, 1))])
    assert system(data).victim is not None
    again = OomInputs.from_dict(data.to_dict())
    assert again.tasks == data.tasks
    assert [t.oom_origin for t in again.tasks] == [None, True]
    # A recording from before the fields: unknown, as procfs says.
    old = data.to_dict()
    for t in old["tasks"]:
        del t["oom_origin"], t["exiting"]
    assert [(t.oom_origin, t.exiting) for t in OomInputs.from_dict(old).tasks] == [
        (None, None),
        (None, None),
    ]
