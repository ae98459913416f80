"""`tamalloc exporter --oom`'s forecast across scrapes (tamalloc_oom_domain_seconds_to_oom,
the victim at the OOM), and the exported cgroups' memory.events and PSI counters, on
recorded inputs and fake cgroup trees (this host's cgroup v2 has no memory controller).
The scrapes' clock is the test's: a scrape "15 s later" costs no waiting."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import tamalloc.oom
from _support import assert_clean_error, subprocess_env
from tamalloc.cgroupfs import COUNTER_MAX
from tamalloc.exporter.collector import MemoryCollector, make_registry, render
from tamalloc.oom import OomInputs
from test_exporter import (
    GIB_KB,
    MIB_KB,
    RECORDED,
    WAIT,
    FakeBackend,
    bounded_inputs,
    by_domain,
    fake_stats,
    one,
    oom_cgroup,
    oom_inputs,
    oom_task,
    scrape,
    with_backend,
)

MIB = 1 << 20
SCRAPE = 15.0  # Prometheus's usual scrape interval in the examples
# A window that spans the half it needs (60 s) by the sixth sample the forecast needs.
SHORT = 120.0
# A name of the process's own choosing: quote, backslash, newline, a brace.
HOSTILE = 'le"ak\\\n{x="1"}'


class Scenario:
    """Makes predict_oom() read ``make(t)`` at the test's clock ``t``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, make: Callable[[float], OomInputs]):
        self.t = 0.0
        self.make = make
        self.reads = 0

        def collect_inputs(backend: str | None = None) -> OomInputs:
            self.reads += 1
            return self.make(self.t)

        monkeypatch.setattr(tamalloc.oom, "collect_inputs", collect_inputs)

    def clock(self) -> float:
        return self.t

    def collector(self, **kwargs: object) -> MemoryCollector:
        return with_backend(FakeBackend(fake_stats(3)), oom=True, clock=self.clock, **kwargs)

    def scrapes(
        self, collector: MemoryCollector, until: float, every: float = SCRAPE
    ) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Scrapes every ``every`` seconds up to ``until``; the last scrape's samples."""
        metrics = scrape(collector)
        while self.t + every <= until + 1e-9:
            self.t += every
            metrics = scrape(collector)
        return metrics


def leak(t: float, *, stop: float = math.inf, name: str = "leak") -> OomInputs:
    """/web, 1 GiB: "big" holds 480 MiB and stays; ``name`` starts at 200 MiB and
    grows 2 MiB/s until ``stop``; 24 MiB besides. Usage 704 MiB + 2 MiB/s: the OOM at
    t = 160 s, when the leaker holds 520 MiB and has overtaken big (at 140 s)."""
    grown = 2 * min(t, stop)
    rss = 200 + grown
    return oom_inputs(
        [oom_task(10, "big", "/web", 480), oom_task(11, name, "/web", int(rss))],
        {"/web": oom_cgroup(GIB_KB, int((704 + grown) * MIB_KB))},
    )


def sawtooth(t: float) -> OomInputs:
    """/gc, 1 GiB: a garbage-collected heap from 500 MiB up 5 MiB/s for 100 s, then
    collected back: peaks at 995 MiB, never the limit."""
    rss = 500 + 5 * (t % 100.0)
    return oom_inputs(
        [oom_task(20, "java", "/gc", int(rss))],
        {"/gc": oom_cgroup(GIB_KB, int(rss * MIB_KB))},
    )


def test_a_steady_leak_is_forecast_with_the_victim_at_the_oom(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scenario = Scenario(monkeypatch, lambda t: leak(t, name=HOSTILE))
    collector = scenario.collector(oom_window=SHORT)
    # Five scrapes are too few (the forecast needs 6): no forecast yet, and said so.
    metrics = scenario.scrapes(collector, 4 * SCRAPE)
    assert one(metrics, "tamalloc_oom_forecast_samples") == 5
    assert "tamalloc_oom_domain_seconds_to_oom" not in metrics
    assert "tamalloc_oom_domain_forecast_victim_info" not in metrics
    # The sixth, at 75 s: 170 MiB left, 2 MiB/s: 85 s to the OOM.
    scenario.t += SCRAPE
    metrics = scrape(collector)
    assert one(metrics, "tamalloc_oom_forecast_samples") == 6
    assert by_domain(metrics, "tamalloc_oom_domain_seconds_to_oom") == pytest.approx({"/web": 85.0})
    assert by_domain(metrics, "tamalloc_oom_domain_growth_bytes_per_second") == pytest.approx(
        {"/web": 2.0 * MIB}
    )
    # Today big (480 MiB) would die; at the OOM the leaker (520 MiB) will.
    victims = {lab["domain"]: lab["name"] for lab, _ in metrics["tamalloc_oom_victim"]}
    assert victims["/web"] == "big"
    future = metrics["tamalloc_oom_domain_forecast_victim_info"]
    assert future == [({"domain": "/web", "pid": "11", "name": HOSTILE}, 1.0)]  # read back
    assert scenario.reads == 6  # one reading of the inputs a scrape, not two
    # 30 s later, 55 s are left.
    metrics = scenario.scrapes(collector, 105.0)
    assert by_domain(metrics, "tamalloc_oom_domain_seconds_to_oom") == pytest.approx({"/web": 55.0})
    assert one(metrics, "tamalloc_scrape_success") == 1


def test_a_sawtooth_is_no_forecast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never a forecast, from the exporter's start on: the first tooth, a leak for all
    a window of one ramp can tell, is over before the window spans half its length."""
    scenario = Scenario(monkeypatch, sawtooth)
    collector = scenario.collector()
    seen = []
    metrics = scrape(collector)
    for _ in range(80):  # 20 minutes: two windows, every phase of the tooth
        scenario.t += SCRAPE
        metrics = scrape(collector)
        if metrics.get("tamalloc_oom_domain_seconds_to_oom"):
            seen.append(scenario.t)
    assert seen == []
    assert one(metrics, "tamalloc_oom_forecast_samples") == 40  # the window is full
    assert "/gc" in by_domain(metrics, "tamalloc_oom_domain_headroom_bytes")


def test_a_leak_that_stops_is_no_longer_forecast(monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = Scenario(monkeypatch, lambda t: leak(t, stop=90.0))
    collector = scenario.collector(oom_window=SHORT)
    metrics = scenario.scrapes(collector, 90.0)
    assert "/web" in by_domain(metrics, "tamalloc_oom_domain_seconds_to_oom")
    # The leak stopped at 90 s; within the window the forecast says so.
    metrics = scenario.scrapes(collector, 90.0 + SHORT)
    assert "tamalloc_oom_domain_seconds_to_oom" not in metrics
    assert "tamalloc_oom_domain_forecast_victim_info" not in metrics


def test_no_forecast_before_the_window_spans_half_its_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the default 600 s window, a leak running when the exporter starts is
    forecast from 300 s on, not at the sixth scrape (75 s)."""
    scenario = Scenario(monkeypatch, lambda t: leak(t / 10))  # 0.2 MiB/s: OOM at 1600 s
    collector = scenario.collector()
    metrics = scenario.scrapes(collector, 285.0)
    assert one(metrics, "tamalloc_oom_forecast_samples") == 20
    assert "tamalloc_oom_domain_seconds_to_oom" not in metrics
    metrics = scenario.scrapes(collector, 300.0)
    assert by_domain(metrics, "tamalloc_oom_domain_seconds_to_oom") == pytest.approx(
        {"/web": 1300.0}
    )


def test_fast_scrapes_do_not_shorten_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scrape every second adds a sample every window / 40 s (13.5 s with the 0.9
    slack): the window still spans its 600 s with at most 40 samples."""
    scenario = Scenario(monkeypatch, leak)
    collector = scenario.collector()
    metrics = scenario.scrapes(collector, 60.0, every=1.0)
    assert one(metrics, "tamalloc_oom_forecast_samples") == 5  # at 0, 14, 28, 42, 56 s
    metrics = scenario.scrapes(collector, 1000.0, every=5.0)
    assert one(metrics, "tamalloc_oom_forecast_samples") == 40


def test_a_clock_that_goes_back_starts_the_window_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scenario = Scenario(monkeypatch, leak)
    collector = scenario.collector()
    scenario.scrapes(collector, 90.0)
    scenario.t = 10.0
    metrics = scrape(collector)
    assert one(metrics, "tamalloc_oom_forecast_samples") == 1
    assert one(metrics, "tamalloc_scrape_success") == 1


def test_a_failed_forecast_keeps_the_prediction_and_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scenario = Scenario(monkeypatch, leak)
    errors: list[str] = []
    collector = scenario.collector(on_error=errors.append)

    def fail(now: float | None = None) -> list[object]:
        raise RuntimeError("broken")

    monkeypatch.setattr(collector.window, "forecast", fail)
    metrics = scrape(collector)
    assert one(metrics, "tamalloc_scrape_success") == 0
    assert errors == ["scrape: cannot read the OOM forecast: RuntimeError: broken"]
    assert set(by_domain(metrics, "tamalloc_oom_domain_headroom_bytes")) == {"system", "/web"}


def test_the_soonest_oom_is_exported_beyond_the_least_headroom(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """30 static cgroups nearly full, and /fast half full and filling at 4 MiB/s: with
    --oom-domains 2, /fast's forecast is exported as soon as it exists."""
    static = bounded_inputs(30)

    def make(t: float) -> OomInputs:
        used = int((512 + 4 * t) * MIB_KB)
        return oom_inputs(
            [oom_task(50, "fill", "/fast", used // MIB_KB)],
            {**static.cgroups, "/fast": oom_cgroup(GIB_KB, used)},
        )

    scenario = Scenario(monkeypatch, make)
    collector = scenario.collector(oom_domains=2, oom_window=SHORT)
    metrics = scenario.scrapes(collector, 4 * SCRAPE)
    assert set(by_domain(metrics, "tamalloc_oom_domain_headroom_bytes")) == {
        "system",
        "/c00",
        "/c13",
    }
    metrics = scenario.scrapes(collector, 5 * SCRAPE)
    # 512 - 300 MiB left at 75 s, 4 MiB/s: 53 s.
    assert by_domain(metrics, "tamalloc_oom_domain_seconds_to_oom") == pytest.approx(
        {"/fast": 53.0}
    )
    for name in ("tamalloc_oom_domain_headroom_bytes", "tamalloc_oom_domain_limit_bytes"):
        assert set(by_domain(metrics, name)) == {"system", "/c00", "/c13", "/fast"}


# --- memory.events and memory.pressure of the exported cgroups -------------------------

EVENTS = "low 1\nhigh 12\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n"
PSI = (
    "some avg10=0.00 avg60=0.12 avg300=0.40 total=1234567\n"
    "full avg10=0.00 avg60=0.00 avg300=0.10 total=89\n"
)


def cgroup_tree(root: Path, files: dict[str, dict[str, str]]) -> None:
    for path, texts in files.items():
        directory = root / path.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            (directory / name).write_text(text)


def counters(
    metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, key: str
) -> dict[tuple[str, str], float]:
    return {(lab.get("cgroup", ""), lab[key]): v for lab, v in metrics.get(name, [])}


def test_memory_events_and_pressure_of_the_exported_cgroups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RECORDED exports /web and /db; /user (no memory.max) is no domain: not read.
    root = tmp_path / "cg"
    cgroup_tree(
        root,
        {
            "/web": {"memory.events": EVENTS, "memory.pressure": PSI},
            "/db": {"memory.events": "oom_kill 7\n"},  # PSI off: no memory.pressure
            "/user": {"memory.events": "oom_kill 99\n", "memory.pressure": PSI},
        },
    )
    (tmp_path / "psi").write_text(PSI)
    Scenario(monkeypatch, lambda t: RECORDED)
    collector = with_backend(
        FakeBackend(fake_stats(3)),
        oom=True,
        cgroup_mount=("/", str(root)),
        pressure_path=str(tmp_path / "psi"),
    )
    metrics = scrape(collector)
    assert counters(metrics, "tamalloc_cgroup_memory_events_total", "event") == {
        ("/web", "high"): 12,
        ("/web", "max"): 3,
        ("/web", "oom"): 2,
        ("/web", "oom_kill"): 1,
        ("/web", "oom_group_kill"): 0,
        ("/db", "oom_kill"): 7,
    }
    assert counters(metrics, "tamalloc_cgroup_memory_pressure_seconds_total", "kind") == {
        ("/web", "some"): pytest.approx(1.234567),
        ("/web", "full"): pytest.approx(0.000089),
    }
    assert counters(metrics, "tamalloc_system_memory_pressure_seconds_total", "kind") == {
        ("", "some"): pytest.approx(1.234567),
        ("", "full"): pytest.approx(0.000089),
    }
    assert one(metrics, "tamalloc_scrape_success") == 1


def test_lying_or_vanished_cgroup_files_skip_or_saturate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cg"
    cgroup_tree(
        root,
        {
            "/web": {
                "memory.events": "high -5\nmax 1e9\noom_kill 99999999999999999999999\n"
                "oom x y\n\0\0\n" + "junk " * 5000,
                "memory.pressure": "some total=-1\nfull avg10=x total=18446744073709551616\n",
            },
            # /db was removed between the walk and this read: no directory.
        },
    )
    (tmp_path / "psi").write_bytes(b"\xff\xfe garbage\nsome total=5\n")
    Scenario(monkeypatch, lambda t: RECORDED)
    collector = with_backend(
        FakeBackend(fake_stats(3)),
        oom=True,
        cgroup_mount=("/", str(root)),
        pressure_path=str(tmp_path / "psi"),
    )
    text = render(make_registry(collector)).decode()
    metrics = scrape(collector)
    assert counters(metrics, "tamalloc_cgroup_memory_events_total", "event") == {
        ("/web", "oom_kill"): float(COUNTER_MAX),
    }
    assert counters(metrics, "tamalloc_cgroup_memory_pressure_seconds_total", "kind") == {
        ("/web", "full"): COUNTER_MAX / 1_000_000,
    }
    assert counters(metrics, "tamalloc_system_memory_pressure_seconds_total", "kind") == {
        ("", "some"): 5e-6,
    }
    assert one(metrics, "tamalloc_scrape_success") == 1
    assert all(
        s.value >= 0 for family in text_string_to_metric_families(text) for s in family.samples
    )
    # Without a cgroup v2 mount there is nothing to read, and nothing fails.
    collector = with_backend(
        FakeBackend(fake_stats(3)), oom=True, cgroup_mount=("/", str(tmp_path / "none"))
    )
    metrics = scrape(collector)
    assert "tamalloc_cgroup_memory_events_total" not in metrics
    assert one(metrics, "tamalloc_scrape_success") == 1


def test_every_new_series_passes_promtool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    promtool = shutil.which("promtool") or shutil.which("promtool", path="/usr/bin")
    if promtool is None:
        pytest.fail(
            "promtool is not installed: `make deps` installs it (Debian package"
            " prometheus, vm/install-deps.sh)"
        )
    root = tmp_path / "cg"
    cgroup_tree(root, {"/web": {"memory.events": EVENTS, "memory.pressure": PSI}})
    (tmp_path / "psi").write_text(PSI)
    scenario = Scenario(monkeypatch, lambda t: leak(t, name=HOSTILE))
    collector = scenario.collector(
        oom_window=SHORT, cgroup_mount=("/", str(root)), pressure_path=str(tmp_path / "psi")
    )
    scenario.scrapes(collector, 5 * SCRAPE)
    text = render(make_registry(collector))
    for name in (
        b"tamalloc_oom_domain_seconds_to_oom{",
        b"tamalloc_oom_domain_growth_bytes_per_second{",
        b"tamalloc_oom_domain_forecast_victim_info{",
        b"tamalloc_cgroup_memory_events_total{",
        b"tamalloc_cgroup_memory_pressure_seconds_total{",
        b"tamalloc_system_memory_pressure_seconds_total{",
        b"\ntamalloc_oom_forecast_samples ",
    ):
        assert name in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=WAIT
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, b"")


# --- the command line -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--oom-window", "600"], "--oom-window needs --oom"),
        (["--oom", "--oom-window", "5"], "--oom-window: must be 10-86400 seconds"),
        (["--oom", "--oom-window", "nan"], "--oom-window: not a number"),
        (["--oom", "--oom-window", "1e9"], "--oom-window: must be 10-86400 seconds"),
        (["--oom", "--oom-window", "x"], "--oom-window: not a number"),
        # One write has one sample: no window to keep.
        (["--oom", "--oom-window", "600"], "--oom-window needs scrapes"),
    ],
)
def test_bad_oom_window_options_are_usage_errors(
    args: list[str], says: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tamalloc", "exporter", "--textfile", "x.prom", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=tmp_path,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
    )
    line = assert_clean_error(result, 2)
    assert says in line
    assert not (tmp_path / "x.prom").exists()


def test_a_textfile_written_once_has_one_sample_and_no_forecast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tamalloc.cli.main import main

    Scenario(monkeypatch, leak)
    path = tmp_path / "tamalloc.prom"
    assert main(["--backend", "procfs", "exporter", "--textfile", str(path), "--oom"]) == 0
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    assert [s.value for s in families["tamalloc_oom_forecast_samples"].samples] == [1]
    assert families["tamalloc_oom_domain_seconds_to_oom"].samples == []


def test_cli_passes_the_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--oom-window reaches the collector (the textfile's --interval writes are
    stopped after the first by a fake sleep)."""
    from tamalloc.cli.main import main
    from tamalloc.exporter import textfile

    class Stop(BaseException):
        pass

    windows: list[float] = []
    real = MemoryCollector.__init__

    def init(self: MemoryCollector, **kwargs: object) -> None:
        real(self, **kwargs)  # type: ignore[arg-type]
        windows.append(self.window.window)

    def sleep(seconds: float) -> None:
        raise Stop

    monkeypatch.setattr(MemoryCollector, "__init__", init)
    monkeypatch.setattr(textfile.time, "sleep", sleep)
    Scenario(monkeypatch, leak)
    path = str(tmp_path / "t.prom")
    for extra, window in (([], 600.0), (["--oom-window", "120"], 120.0)):
        with pytest.raises(Stop):
            main(
                [
                    "--backend",
                    "procfs",
                    "exporter",
                    "--textfile",
                    path,
                    "--interval",
                    "15",
                    "--oom",
                    *extra,
                ]
            )
        assert windows[-1] == window


def test_a_window_too_short_for_the_interval_is_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tamalloc.cli.main import main
    from tamalloc.exporter import textfile

    class Stop(BaseException):
        pass

    def sleep(seconds: float) -> None:
        raise Stop

    monkeypatch.setattr(textfile.time, "sleep", sleep)
    Scenario(monkeypatch, leak)
    with pytest.raises(Stop):
        main(
            [
                "--backend",
                "procfs",
                "exporter",
                "--textfile",
                str(tmp_path / "t.prom"),
                "--interval",
                "60",
                "--oom",
                "--oom-window",
                "120",
            ]
        )
    err = capsys.readouterr().err
    assert "holds 3 writes every 60 s; the forecast needs 6" in err


def test_a_cgroup_named_by_its_owner_is_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delegated subtree's owner names its cgroups: quotes, backslashes and newlines
    in the cgroup label are escaped, and read back as they are."""
    name = '/we"b\\\n}'
    root = tmp_path / "cg"
    cgroup_tree(root, {name: {"memory.events": "oom_kill 4\n", "memory.pressure": PSI}})
    inputs = oom_inputs([oom_task(10, HOSTILE, name, 100)], {name: oom_cgroup(GIB_KB, 0)})
    Scenario(monkeypatch, lambda t: inputs)
    collector = with_backend(
        FakeBackend(fake_stats(3)),
        oom=True,
        cgroup_mount=("/", str(root)),
        pressure_path=str(tmp_path / "none"),
    )
    metrics = scrape(collector)
    assert counters(metrics, "tamalloc_cgroup_memory_events_total", "event") == {
        (name, "oom_kill"): 4
    }
    assert set(by_domain(metrics, "tamalloc_oom_domain_headroom_bytes")) == {"system", name}
    assert "tamalloc_system_memory_pressure_seconds_total" not in metrics  # no such file


def test_the_counters_of_a_real_cgroup(tmp_path: Path) -> None:
    """The real cgroup v2 tree (the guest's; this host's has no memory controller): a
    cgroup whose memory.high a child passes has "high" events, exported as the file
    says, with its memory.pressure when the kernel has PSI, through the real inputs."""
    import os
    import time

    from tamalloc.cgroupfs import cgroup2_mount, read_memory_events, read_pressure

    mount = cgroup2_mount()
    if mount is None or mount[0] != "/" or os.geteuid() != 0:
        pytest.skip("needs root and the whole cgroup v2 hierarchy mounted (the guest)")
    root = Path(mount[1])
    if "memory" not in (root / "cgroup.controllers").read_text().split():
        pytest.skip("needs the cgroup v2 memory controller (the guest: make vm-run)")
    (root / "cgroup.subtree_control").write_text("+memory")
    path = root / f"tamalloc-exporter-test-{os.getpid()}"
    path.mkdir()
    try:
        (path / "memory.max").write_text(str(256 * MIB))
        (path / "memory.high").write_text(str(8 * MIB))
        # Joins the cgroup, then touches 12 MiB: past memory.high, so "high" events; not
        # far past it, as the kernel throttles the task in proportion (32 MiB took 3
        # minutes in the emulated guest).
        script = (
            "import sys\n"
            "open(sys.argv[1] + '/cgroup.procs', 'w').write('0')\n"
            "b = bytearray(12 << 20)\n"
            "for i in range(0, len(b), 4096): b[i] = 1\n"
        )
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=WAIT)
        events = read_memory_events(str(path))
        assert events is not None and events["high"] > 0
        collector = MemoryCollector(oom=True, oom_domains=10_000)  # however many exist
        metrics = scrape(collector)
        name = "/" + path.name
        assert one(metrics, "tamalloc_scrape_success") == 1
        exported = counters(metrics, "tamalloc_cgroup_memory_events_total", "event")
        # Nothing runs in it any more: the counters hold still between the two reads.
        assert exported[(name, "high")] == read_memory_events(str(path))["high"]  # type: ignore[index]
        assert {e for c, e in exported if c == name} >= {"high", "max", "oom", "oom_kill"}
        psi = read_pressure(str(path / "memory.pressure"))
        pressure = counters(metrics, "tamalloc_cgroup_memory_pressure_seconds_total", "kind")
        if psi is None:  # a kernel without CONFIG_PSI, or booted with psi=0
            assert not [k for k in pressure if k[0] == name]
        else:
            assert pressure[(name, "some")] == psi["some"] / 1_000_000
    finally:
        for _ in range(200):  # a cgroup stays busy until its exited tasks are released
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.05)
