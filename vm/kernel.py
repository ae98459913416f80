"""Build the patched guest kernel: unpack, apply the series, configure, build.

Every step is skipped when its inputs have not changed since the last run,
and applying a changed series keeps the timestamps of the files whose content
it did not change, so `make` recompiles only what the change touches.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

from layout import (
    BUILD_DIR,
    CONFIG_FRAGMENT,
    HEADERS_DIR,
    OBJ_DIR,
    PATCHES_DIR,
    SRC_DIR,
    VmError,
    log,
    run,
)

DEBIAN_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
BASE_TAG = "tamalloc-base"
GIT_ID = ["-c", "user.name=tamalloc pipeline", "-c", "user.email=tamalloc@example.org"]


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def stamp_matches(name: str, value: str) -> bool:
    path = BUILD_DIR / f"{name}.stamp"
    return path.exists() and path.read_text() == value


def write_stamp(name: str, value: str) -> None:
    (BUILD_DIR / f"{name}.stamp").write_text(value)


def git(*args: str, capture: bool = False) -> str:
    return run(["git", *GIT_ID, "-C", str(SRC_DIR), *args], capture=capture)


def source_origin() -> Path:
    origin = Path(os.environ.get("KERNEL_SRC") or DEBIAN_TARBALL).resolve()
    if not origin.exists():
        raise VmError(
            f"kernel source {origin} not found: install linux-source-6.1 "
            "(make deps) or set KERNEL_SRC to a 6.1.y tree or tarball"
        )
    return origin


def unpack_source(origin: Path) -> None:
    """Put a pristine copy of the source in SRC_DIR as a git repository."""
    if stamp_matches("source", str(origin)):
        return
    log(f"unpacking {origin} into {SRC_DIR}")
    for stale in (SRC_DIR, OBJ_DIR):
        shutil.rmtree(stale, ignore_errors=True)
    for name in ("series", "config"):
        (BUILD_DIR / f"{name}.stamp").unlink(missing_ok=True)
    staging = BUILD_DIR / "unpack"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if origin.is_dir():
        shutil.copytree(
            origin, staging / "linux", symlinks=True, ignore=shutil.ignore_patterns(".git")
        )
    else:
        run(["tar", "xf", str(origin), "-C", str(staging)])
    (top,) = staging.iterdir()
    top.rename(SRC_DIR)
    staging.rmdir()
    run(["git", "init", "-q", str(SRC_DIR)])
    # Debian's tree ignores its own top level, hence -f.
    git("add", "-f", ".")
    git("commit", "-q", "-m", f"pristine {origin.name}")
    git("tag", BASE_TAG)
    write_stamp("source", str(origin))


def series() -> list[Path]:
    patches = sorted(PATCHES_DIR.glob("*.patch"))
    if not patches:
        raise VmError(f"no patches in {PATCHES_DIR}")
    return patches


def touched_files() -> dict[str, tuple[str, float]]:
    """Blob hash and mtime of every file the applied series changed."""
    names = git("diff", "--name-only", BASE_TAG, "HEAD", capture=True).split()
    result = {}
    for name in names:
        path = SRC_DIR / name
        if path.exists():
            blob = run(["git", "hash-object", str(path)], capture=True).strip()
            result[name] = (blob, path.stat().st_mtime)
    return result


def apply_series() -> None:
    patches = series()
    value = digest(*(p.read_bytes() for p in patches))
    if stamp_matches("series", value):
        return
    log(f"applying {len(patches)} patches")
    before = touched_files()
    if (SRC_DIR / ".git/rebase-apply").exists():
        git("am", "--abort", capture=True)
    git("reset", "-q", "--hard", BASE_TAG)
    git("clean", "-q", "-fdx")
    try:
        git("am", "-q", "--whitespace=error-all", *map(str, patches))
    except VmError:
        git("am", "--abort", capture=True)
        raise VmError("the series does not apply with git am: see above") from None
    # Give unchanged files their old timestamps back so make skips them.
    for name, (blob, mtime) in before.items():
        path = SRC_DIR / name
        if path.exists() and run(["git", "hash-object", str(path)], capture=True).strip() == blob:
            os.utime(path, (mtime, mtime))
    write_stamp("series", value)


def configure() -> None:
    fragment = CONFIG_FRAGMENT.read_bytes()
    value = digest(fragment, (SRC_DIR / "Makefile").read_bytes())
    if stamp_matches("config", value) and (OBJ_DIR / ".config").exists():
        return
    log("configuring: allnoconfig + " + CONFIG_FRAGMENT.name)
    OBJ_DIR.mkdir(parents=True, exist_ok=True)
    kmake("allnoconfig")
    run(
        [
            str(SRC_DIR / "scripts/kconfig/merge_config.sh"),
            "-m",
            "-O",
            str(OBJ_DIR),
            str(OBJ_DIR / ".config"),
            str(CONFIG_FRAGMENT),
        ],
        capture=True,
    )
    kmake("olddefconfig")
    final = set((OBJ_DIR / ".config").read_text().splitlines())
    wanted = [line for line in fragment.decode().splitlines() if line.endswith("=y")]
    missing = [line for line in wanted if line not in final]
    if missing:
        raise VmError("options lost by olddefconfig: " + ", ".join(missing))
    write_stamp("config", value)


def kmake(*targets: str) -> None:
    jobs = (os.cpu_count() or 1) + 1
    run(["make", "-s", "-C", str(SRC_DIR), f"O={OBJ_DIR}", f"-j{jobs}", *targets])


def build() -> None:
    start = time.monotonic()
    kmake("bzImage", "modules")
    kmake("headers_install", f"INSTALL_HDR_PATH={HEADERS_DIR}")
    log(f"kernel up to date ({time.monotonic() - start:.0f} s in make)")


def build_module(module_dir: Path) -> None:
    run(["make", "-s", "-C", str(OBJ_DIR), f"M={module_dir}", "modules"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--module", type=Path, help="also build this out-of-tree module")
    parser.add_argument(
        "--apply-only", action="store_true", help="unpack and apply the series, build nothing"
    )
    args = parser.parse_args()
    try:
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        unpack_source(source_origin())
        apply_series()
        if args.apply_only:
            return 0
        configure()
        build()
        if args.module:
            build_module(args.module.resolve())
    except VmError as err:
        print(f"vm/kernel.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
