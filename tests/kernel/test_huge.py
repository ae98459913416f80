"""tamalloc(size, TAMALLOC_HUGE) (issue 16, item 3; patched kernel only).

The old call mapped 2 MiB more than asked for and trimmed it with two munmaps after
dropping mmap_lock: under mlockall(MCL_FUTURE) the extra 2 MiB was populated and
charged to RLIMIT_MEMLOCK, and the range was populated before MADV_HUGEPAGE was set,
so it got small pages. The probe runs in C: a Python interpreter under
mlockall(MCL_FUTURE) would lock (and charge) every allocation of its own.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("require_kernel")

SIZE = 4 << 20
PROBE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SIZE (4UL << 20)

/* A field of /proc/self/status in kB, read without allocating (a grown heap
 * would be locked too). */
static long status_kb(const char *field)
{
    static char buf[8192];
    size_t got = 0, len = strlen(field);
    ssize_t n;
    char *line;
    int fd = open("/proc/self/status", O_RDONLY);

    if (fd < 0)
        return -1;
    while ((n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
        got += n;
    close(fd);
    buf[got] = 0;
    for (line = buf; line; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        if (!strncmp(line, field, len) && line[len] == ':')
            return strtol(line + len + 1, NULL, 10);
    }
    return -1;
}

int main(int argc, char **argv)
{
    long before, ret;

    if (!strcmp(argv[1], "memlock")) {
        /* As nobody, so that RLIMIT_MEMLOCK applies: 1 MiB above the size. */
        struct rlimit lim = { SIZE + (1 << 20), SIZE + (1 << 20) };

        if (setrlimit(RLIMIT_MEMLOCK, &lim) || setgid(65534) || setuid(65534))
            return 10;
        before = status_kb("VmLck");
        if (mlockall(MCL_FUTURE))
            return 11;
        ret = syscall(548, SIZE, 1);
        printf("ret=%ld errno=%d aligned=%d locked_kb=%ld\n", ret,
               ret == -1 ? errno : 0, ret != -1 && ret % (2 << 20) == 0,
               status_kb("VmLck") - before);
        return 0;
    }
    /* "thp": populated at once by MCL_FUTURE; the smaps entry of the mapping. */
    if (mlockall(MCL_FUTURE))
        return 11;
    ret = syscall(548, SIZE, 1);
    if (munlockall() || ret == -1)
        return 12;
    {
        char line[512];
        unsigned long start, end;
        int in = 0;
        FILE *f = fopen("/proc/self/smaps", "r");

        while (f && fgets(line, sizeof(line), f)) {
            if (sscanf(line, "%lx-%lx ", &start, &end) == 2) {
                in = start == (unsigned long)ret;
                if (in)
                    printf("size_kb=%lu\n", (end - start) >> 10);
            } else if (in) {
                fputs(line, stdout);
            }
        }
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody (runs in `make vm-test`)")
    where = tmp_path_factory.mktemp("huge")
    (where / "probe.c").write_text(PROBE)
    subprocess.run(
        ["gcc", "-Wall", "-Werror", "-O2", str(where / "probe.c"), "-o", str(where / "probe")],
        check=True,
    )
    os.chmod(where, 0o755)
    return where / "probe"


def _run(probe: Path, mode: str) -> str:
    run = subprocess.run([str(probe), mode], capture_output=True, text=True, check=False)
    assert run.returncode == 0, (run.returncode, run.stdout, run.stderr)
    return run.stdout


def test_under_mlockall_only_the_size_is_locked_and_charged(probe: Path) -> None:
    # RLIMIT_MEMLOCK is 1 MiB above the size: locking 2 MiB more, even for a moment,
    # fails with EAGAIN.
    fields = dict(item.split("=") for item in _run(probe, "memlock").split())
    assert fields["errno"] == "0", fields
    assert fields["aligned"] == "1", fields
    assert int(fields["locked_kb"]) == SIZE >> 10, fields


def test_the_hint_is_set_before_population(probe: Path) -> None:
    enabled = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    if "[never]" in enabled:
        pytest.skip(f"transparent huge pages disabled: {enabled.strip()}")
    smaps = _run(probe, "thp")
    fields = {
        line.split(":")[0]: line.split(":", 1)[1].split()
        for line in smaps.splitlines()
        if ":" in line
    }
    assert smaps.startswith(f"size_kb={SIZE >> 10}\n"), smaps
    assert "hg" in fields["VmFlags"], smaps
    assert "lo" not in fields["VmFlags"], smaps  # munlockall() undid the lock
    # Populated by mlockall(MCL_FUTURE) after MADV_HUGEPAGE: all of it huge pages.
    assert fields["AnonHugePages"] == [str(SIZE >> 10), "kB"], smaps
