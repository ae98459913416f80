"""The kernel's OOM arithmetic: ``oom_badness()`` and ``proc_oom_score()`` with C's
integer division. Below both the backends (the procfs backend infers unkillable tasks
from it) and the OOM model (:mod:`tamalloc.oom`), which both compute a score."""

from __future__ import annotations

OOM_SCORE_ADJ_MIN = -1000


def c_div(a: int, b: int) -> int:
    """``a / b`` as C computes it for integers: truncated toward zero (Python's ``//``
    floors, so -7 // 2 is -4 where C gives -3)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def badness(
    rss_pages: int, swap_pages: int, pgtables_pages: int, adj: int, total_pages: int
) -> int:
    """``oom_badness()`` of a killable task, in pages."""
    return rss_pages + swap_pages + pgtables_pages + adj * (total_pages // 1000)


def proc_score(points: int | None, total_pages: int) -> int:
    """``proc_oom_score()``'s scaling of a badness into 0..2000; 0 for unkillable."""
    if points is None:
        return 0
    return c_div((1000 + c_div(points * 1000, max(total_pages, 1))) * 2, 3)
