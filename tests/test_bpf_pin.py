"""`tamalloc bpf pin|unpin|status` and the default backend's choice of bpf: a pinned
iterator is used by whoever may open it (root), a loaded one by the long-running
exporter only, and a pin that is not exactly what `pin` leaves is never opened.

Host, as root, where the bpf backend runs and bpffs is mounted at /sys/fs/bpf. Each test
starts and ends with nothing pinned; a machine with a pin of its own is left alone
(the tests skip).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from _support import SRC, assert_clean_error, run_cli, subprocess_env
from tamalloc.backends import bpf_unavailable_reason


def _bpffs_mounted() -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            return any(
                line.split(" - ")[1].startswith("bpf ") and line.split()[4] == "/sys/fs/bpf"
                for line in f
                if " - " in line
            )
    except OSError:
        return False


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "pinning needs root"
    reason = bpf_unavailable_reason()
    if reason is not None:
        return f"the bpf backend cannot run here: {reason}"
    if not _bpffs_mounted():
        return "no bpffs mounted at /sys/fs/bpf"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))

from tamalloc.backends import bpf  # noqa: E402  (after the skip)

PIN = f"{bpf.PIN_DIR}/{bpf.pin_name()}" if _skip_reason() is None else ""
_AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]

# What a fresh process chose and how: the default backend's name, whether it loaded the
# program, whether it can read passes (a pinned iterator counts).
PROBE = (
    "import sys\n"
    "from tamalloc.backends import default_backend_name\n"
    "name = default_backend_name(long_running=sys.argv[1:] == ['long'])\n"
    "from tamalloc.backends import _bpfiter\n"
    "print(name, _bpfiter.loaded(), _bpfiter.ready())\n"
)


def probe(*args: str, prefix: list[str] | None = None) -> str:
    result = subprocess.run(
        [*(prefix or []), sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(autouse=True)
def nothing_pinned() -> Iterator[None]:
    if os.path.lexists(bpf.PIN_DIR):
        pytest.skip(f"{bpf.PIN_DIR} exists already: this machine's pin is left alone")
    try:
        yield
    finally:
        if os.path.islink(bpf.PIN_DIR) or os.path.isfile(bpf.PIN_DIR):
            os.unlink(bpf.PIN_DIR)
        elif os.path.isdir(bpf.PIN_DIR):
            os.chown(bpf.PIN_DIR, 0, 0)
            os.chmod(bpf.PIN_DIR, 0o700)
            for name in os.listdir(bpf.PIN_DIR):
                path = f"{bpf.PIN_DIR}/{name}"
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)
                else:
                    os.unlink(path)
            os.rmdir(bpf.PIN_DIR)


def pin() -> None:
    result = run_cli("bpf", "pin")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"pinned the task iterator at {PIN} ")


def pin_raw(path: str) -> None:
    """Our loaded iterator pinned at ``path`` by hand (not through `bpf pin`)."""
    script = (
        "import sys\nfrom tamalloc.backends import _bpfiter, bpf\n"
        "_bpfiter.load(str(bpf.OBJECT)); _bpfiter.pin(sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", script, path], check=True, env=subprocess_env())


def test_without_a_pin_one_shot_uses_procfs_and_the_exporter_loads() -> None:
    assert probe() == "procfs False False"
    assert probe("long") == "bpf True True"


def test_pin_makes_every_root_command_open_it_without_loading() -> None:
    pin()
    info = os.stat(bpf.PIN_DIR)
    assert (info.st_uid, info.st_mode & 0o7777) == (0, 0o700)
    info = os.stat(PIN)
    assert (info.st_uid, info.st_mode & 0o7777) == (0, 0o600)
    assert probe() == "bpf False True"
    assert probe("long") == "bpf False True"  # the exporter opens the pin too
    version = run_cli("--version").stdout
    assert "backend: bpf;" in version and f"bpf: in use, pinned in {bpf.PIN_DIR}" in version
    status = run_cli("bpf", "status")
    assert status.returncode == 0 and status.stdout.startswith(f"pinned: {PIN}")
    result = run_cli("stats", "--json")
    assert result.returncode == 0, result.stderr
    assert f'"pid": {os.getpid()},' in result.stdout
    # Forced elsewhere, the pin is still reported.
    version = run_cli("--version", TAMALLOC_BACKEND="procfs").stdout
    assert "backend: procfs;" in version and "bpf: pinned in" in version


def test_unpin_goes_back_to_procfs() -> None:
    pin()
    result = run_cli("bpf", "unpin")
    assert (result.returncode, result.stdout.strip()) == (0, f"unpinned {PIN}")
    assert not os.path.lexists(bpf.PIN_DIR)
    assert probe() == "procfs False False"
    assert run_cli("bpf", "unpin").stdout.strip() == "nothing was pinned"
    status = run_cli("bpf", "status")
    assert status.returncode == 1 and "No such file" in status.stdout


def test_pin_again_replaces_the_pin_of_another_build() -> None:
    """A pin left by another build (another record layout) is under another name: never
    opened, and `bpf pin` removes it."""
    os.mkdir(bpf.PIN_DIR, 0o700)
    stale = f"{bpf.PIN_DIR}/{bpf.PIN_PREFIX}80-1-00000000"
    pin_raw(stale)
    assert probe() == "procfs False False"
    status = run_cli("bpf", "status")
    assert status.returncode == 1 and "only another tamalloc build's" in status.stdout
    assert "bpf: available, not pinned" in run_cli("--version").stdout
    pin()
    assert os.listdir(bpf.PIN_DIR) == [bpf.pin_name()]
    assert probe() == "bpf False True"


def _symlink() -> str:
    os.mkdir(bpf.PIN_DIR, 0o700)
    pin_raw(f"{bpf.PIN_DIR}/elsewhere")
    os.symlink(f"{bpf.PIN_DIR}/elsewhere", PIN)
    return "a symlink or a directory"


def _directory() -> str:
    os.makedirs(PIN, 0o700)
    return "a symlink or a directory"


def _map() -> str:
    tool = shutil.which("bpftool")
    if tool is None:
        pytest.skip("needs bpftool to pin a map")
    os.mkdir(bpf.PIN_DIR, 0o700)
    subprocess.run(
        [
            tool,
            "map",
            "create",
            PIN,
            "type",
            "array",
            "key",
            "4",
            "value",
            "4",
            "entries",
            "1",
            "name",
            "tam_not_iter",
        ],
        check=True,
    )
    return "not a BPF iterator link"


def _open_to_others() -> str:
    pin()
    os.chmod(PIN, 0o644)
    return "not root's alone (mode 0600)"


def _directory_open_to_others() -> str:
    pin()
    os.chmod(bpf.PIN_DIR, 0o777)
    return "pin directory is not root's alone"


def _directory_of_nobody() -> str:
    pin()
    os.chown(bpf.PIN_DIR, 65534, 65534)
    return "pin directory is not root's alone"


def _directory_is_a_symlink() -> str:
    os.mkdir(f"{bpf.PIN_DIR}-real", 0o700)
    pin_raw(f"{bpf.PIN_DIR}-real/{bpf.pin_name()}")
    os.symlink(f"{bpf.PIN_DIR}-real", bpf.PIN_DIR)
    return "the pin directory: Not a directory"  # O_NOFOLLOW | O_DIRECTORY


@pytest.mark.parametrize(
    "make",
    [
        _symlink,
        _directory,
        _map,
        _open_to_others,
        _directory_open_to_others,
        _directory_of_nobody,
        _directory_is_a_symlink,
    ],
)
def test_a_pin_that_is_not_what_pin_leaves_is_never_opened(make: object) -> None:
    try:
        why = make()  # type: ignore[operator]
        assert probe() == "procfs False False"
        status = run_cli("bpf", "status")
        assert status.returncode == 1 and why in status.stdout, status.stdout
        # Forced, the backend loads its own program instead.
        assert probe_forced() == "bpf True True"
    finally:
        real = f"{bpf.PIN_DIR}-real"
        if os.path.isdir(real):
            for name in os.listdir(real):
                os.unlink(f"{real}/{name}")
            os.rmdir(real)


def probe_forced() -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(TAMALLOC_BACKEND="bpf"),
    )
    assert result.returncode == 0, result.stderr
    # The default is the forced bpf; ready() after the backend made itself available.
    script = (
        "from tamalloc.backends import get_backend, _bpfiter\n"
        "get_backend().all_mem_stats()\n"
        "print(get_backend().name, _bpfiter.loaded(), _bpfiter.ready())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(TAMALLOC_BACKEND="bpf"),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_pin_directory_not_on_bpffs_is_refused(tmp_path: Path) -> None:
    from tamalloc.backends import _bpfiter

    tmp_path.chmod(0o700)
    (tmp_path / "pin").write_bytes(b"")
    (tmp_path / "pin").chmod(0o600)
    with pytest.raises(OSError, match="not on bpffs") as err:
        _bpfiter.check_pinned(str(tmp_path), "pin")
    assert err.value.errno == errno.ENOTSUP
    for name in ("", ".", "..", "a/b", "../tamalloc"):
        with pytest.raises(OSError, match="one path component"):
            _bpfiter.check_pinned(bpf.PIN_DIR, name)


def test_nobody_neither_uses_nor_makes_the_pin() -> None:
    """The pin shows every process: root's alone, hidepid or not."""
    pin()
    env = subprocess_env(PYTHONPATH=str(SRC))
    result = subprocess.run(
        [*_AS_NOBODY, sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    if "Permission denied" in result.stderr and "Traceback" not in result.stderr:
        pytest.skip(f"nobody cannot run this checkout: {result.stderr.strip()[:200]}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "procfs False False"
    result = subprocess.run(
        [*_AS_NOBODY, sys.executable, "-m", "tamalloc", "bpf", "pin"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert "pinning needs root" in assert_clean_error(result, 1)


def test_the_exporter_loads_bpf_unasked(tmp_path: Path) -> None:
    """No pin: the exporter, long-running, loads the program; a one-shot does not."""
    out = tmp_path / "m.prom"
    result = run_cli("exporter", "--textfile", str(out))
    assert result.returncode == 0, result.stderr
    assert 'tamalloc_exporter_info{backend="bpf"' in out.read_text()
    assert "backend: procfs;" in run_cli("--version").stdout


def test_the_exporter_leaves_the_process_default_alone(tmp_path: Path) -> None:
    """The exporter's choice is its own: a library caller or a test that runs it
    in-process keeps the one-shot default (procfs where nothing is pinned)."""
    out = tmp_path / "m.prom"
    script = (
        "import io, sys\n"
        "from tamalloc.cli.env import Environment\n"
        "from tamalloc.cli.main import main\n"
        "from tamalloc.backends import default_backend_name, get_backend\n"
        "env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), stdout_isatty=False)\n"
        "assert main(['exporter', '--textfile', sys.argv[1]], env) == 0\n"
        "print(default_backend_name(), get_backend().name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["procfs", "procfs"]
    assert 'tamalloc_exporter_info{backend="bpf"' in out.read_text()


def test_pin_where_no_bpffs_is_mounted_is_one_clean_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a machine whose /sys/fs/bpf is not mounted: the pin directory is then on
    another filesystem, where nothing can be pinned."""
    monkeypatch.setattr(bpf, "PIN_DIR", str(tmp_path / "tamalloc"))
    with pytest.raises(bpf.PinError, match=r"cannot pin at .*not on BPF FS|bpffs"):
        bpf.pin()
    # A directory that is there but open to others is refused before anything is done.
    monkeypatch.setattr(bpf, "PIN_DIR", str(tmp_path / "open"))
    (tmp_path / "open").mkdir(mode=0o777)
    (tmp_path / "open").chmod(0o777)
    with pytest.raises(bpf.PinError, match=r"refusing to pin: .* is not root's alone"):
        bpf.pin()
    with pytest.raises(bpf.PinError, match="refusing to unpin"):
        bpf.unpin()
    assert os.listdir(tmp_path / "open") == []
