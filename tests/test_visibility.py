"""Never a silently short list: which processes the caller cannot see, and the CLI's
line about them (procfs hidepid parsing and the kernel's hidden count, faked here; the
real kernel restriction is tested in tests/test_visibility_kernel.py, in the guest)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

import tamalloc
import tamalloc.process_visibility as pv
import tamalloc.stats
from tamalloc import Visibility
from tamalloc.cli.main import Environment, main

PROC_LINE = "22 27 0:21 / /proc rw,relatime shared:12 - proc proc {opts}\n"
OTHER = "27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"


def _mountinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *lines: str) -> None:
    path = tmp_path / "mountinfo"
    path.write_text("".join(lines))
    monkeypatch.setattr(pv, "_MOUNTINFO_PATH", str(path))


def test_mount_options_of_the_last_proc_mount_on_slash_proc() -> None:
    text = (
        OTHER
        + PROC_LINE.format(opts="rw")
        + "40 22 0:50 / /proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw\n"
        + "41 27 0:51 / /srv/proc rw - proc proc rw,hidepid=2\n"  # another mount point
        + "42 27 0:52 / /proc rw - tmpfs tmpfs rw,hidepid=2\n"  # not a procfs
        + PROC_LINE.format(opts="rw,hidepid=invisible,gid=27")  # mounted over the first
    )
    assert pv.proc_mount_options(text) == {"rw": "", "hidepid": "invisible", "gid": "27"}
    assert pv.proc_mount_options(OTHER) == {}


@pytest.mark.parametrize("hidepid", ["1", "2", "4", "noaccess", "invisible", "ptraceable"])
def test_hidepid_makes_hiding_unknown_for_a_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hidepid: str
) -> None:
    _mountinfo(tmp_path, monkeypatch, OTHER, PROC_LINE.format(opts=f"rw,hidepid={hidepid}"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    vis = tamalloc.visibility(backend="procfs")
    assert vis.some_hidden is None
    assert not vis.complete
    line = vis.describe(3)
    assert line is not None
    assert f"/proc is mounted hidepid={hidepid}, which hides other users' processes" in line
    assert tamalloc.total_mem_stats(backend="procfs").some_hidden is None


@pytest.mark.parametrize("opts", ["rw", "rw,hidepid=0", "rw,hidepid=off", "rw,subset=pid"])
def test_no_hiding_mount_hides_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opts: str
) -> None:
    _mountinfo(tmp_path, monkeypatch, PROC_LINE.format(opts=opts))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    vis = tamalloc.visibility(backend="procfs")
    assert (vis.some_hidden, vis.reason, vis.describe(3)) == (False, None, None)
    assert tamalloc.total_mem_stats(backend="procfs").some_hidden is False


def test_root_and_the_gid_group_see_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _mountinfo(tmp_path, monkeypatch, PROC_LINE.format(opts="rw,hidepid=2,gid=4242"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert tamalloc.visibility(backend="procfs").complete
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getgroups", lambda: [4242])
    assert tamalloc.visibility(backend="procfs").complete
    monkeypatch.setattr(os, "getgroups", lambda: [100])
    monkeypatch.setattr(os, "getegid", lambda: 100)
    assert not tamalloc.visibility(backend="procfs").complete


def test_describe() -> None:
    assert Visibility(False, None).describe(5) is None
    # Never an "N of M": nothing gives the number of hidden processes.
    some = Visibility(True, "why")
    assert some.describe(12) == "12 processes shown; others are hidden from you: why"
    assert some.describe(1) == "1 process shown; others are hidden from you: why"
    assert Visibility(None, None).describe(12) is None  # a kernel without the flag


# --- the CLI's line on stderr --------------------------------------------------------------

HIDDEN = Visibility(
    True,
    "vm.tamalloc_stats_restrict=1; run as root or use --backend procfs to see what /proc shows",
)


def _env() -> Environment:
    return Environment(
        stdout=io.StringIO(), stderr=io.StringIO(), stdin=io.StringIO(), stdout_isatty=False
    )


def _streams(env: Environment) -> tuple[str, str]:
    assert isinstance(env.stdout, io.StringIO) and isinstance(env.stderr, io.StringIO)
    return env.stdout.getvalue(), env.stderr.getvalue()


@pytest.fixture
def hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tamalloc.stats, "visibility", lambda backend=None: HIDDEN)


@pytest.mark.usefixtures("hidden")
@pytest.mark.parametrize("fmt", [[], ["--json"], ["--csv"]])
def test_stats_list_says_some_are_hidden(fmt: list[str]) -> None:
    env = _env()
    assert main(["stats", "--backend", "procfs", *fmt], env) == 0
    out, err = _streams(env)
    shown = len(tamalloc.all_mem_stats(backend="procfs"))
    [line] = err.splitlines()
    assert line.startswith("tamalloc: ")
    assert " shown; others are hidden from you: vm.tamalloc_stats_restrict=1; run as root" in line
    visible = int(line.split()[1])  # "tamalloc: 12 processes shown; ..."
    assert abs(visible - shown) <= 5  # processes come and go between the two scans
    if fmt == ["--json"]:
        json.loads(out)  # stdout stays machine-readable


@pytest.mark.usefixtures("hidden")
def test_stats_of_given_pids_says_nothing() -> None:
    env = _env()
    assert main(["stats", str(os.getpid()), "--backend", "procfs"], env) == 0
    assert _streams(env)[1] == ""


@pytest.mark.usefixtures("hidden")
def test_total_says_some_are_hidden() -> None:
    env = _env()
    assert main(["total", "--backend", "procfs"], env) == 0
    err = _streams(env)[1]
    assert " shown; others are hidden from you: vm.tamalloc_stats_restrict=1" in err
    assert err.count("\n") == 1


@pytest.mark.usefixtures("hidden")
@pytest.mark.parametrize("fmt", [[], ["--json"]])
def test_oom_says_some_are_hidden(fmt: list[str]) -> None:
    # The real victim may be hidden: a prediction from a partial list must say so.
    env = _env()
    assert main(["oom", "--backend", "procfs", *fmt], env) == 0
    out, err = _streams(env)
    [line] = err.splitlines()
    assert " shown; others are hidden from you: vm.tamalloc_stats_restrict=1" in line
    assert int(line.split()[1]) >= 0
    if fmt:
        json.loads(out)


def test_nothing_said_when_everything_is_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tamalloc.stats, "visibility", lambda backend=None: Visibility(False, None))
    for args in (["stats"], ["total"], ["oom"]):
        env = _env()
        assert main([*args, "--backend", "procfs"], env) == 0
        assert _streams(env)[1] == ""


def test_not_knowing_is_said_and_the_list_still_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(backend: str | None = None) -> Visibility:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(tamalloc.stats, "visibility", broken)
    env = _env()
    assert main(["stats", "--backend", "procfs", "--csv"], env) == 0
    out, err = _streams(env)
    assert out.startswith("pid,name,")
    assert err.startswith("tamalloc: cannot tell whether processes are hidden from you")


def test_kernel_hint_for_a_pid_proc_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sysctl = tmp_path / "restrict"
    monkeypatch.setattr(pv, "_RESTRICT_PATH", str(sysctl))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    sysctl.write_text("1\n")
    hint = pv.kernel_hidden_pid_hint(1)  # init: in /proc, hidden from users by the rule
    assert hint is not None and "vm.tamalloc_stats_restrict=1" in hint
    assert pv.kernel_hidden_pid_hint(read_pid_max() + 1) is None  # absent from /proc too
    sysctl.write_text("0\n")
    assert pv.kernel_hidden_pid_hint(1) is None  # nothing restricted
    sysctl.write_text("1\n")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert pv.kernel_hidden_pid_hint(1) is None  # root sees everything


def read_pid_max() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read())
