"""Check the series as a reviewer would: it applies with `git am` to a pristine
tree, and the tree's own checkpatch.pl --strict finds nothing in any patch."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from layout import BUILD_DIR, SRC_DIR, VmError, log, run

from kernel import BASE_TAG, series, source_origin, unpack_source

CLEAN = re.compile(r"^total: 0 errors, 0 warnings, 0 checks,", re.MULTILINE)


def main() -> int:
    try:
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        unpack_source(source_origin())
        patches = series()
        tree = Path(tempfile.mkdtemp(prefix="series-", dir=BUILD_DIR)) / "linux"
        try:
            run(
                [
                    "git",
                    "-C",
                    str(SRC_DIR),
                    "worktree",
                    "add",
                    "-q",
                    "--detach",
                    str(tree),
                    BASE_TAG,
                ]
            )
            run(
                [
                    "git",
                    "-c",
                    "user.name=check",
                    "-c",
                    "user.email=check@example.org",
                    "-C",
                    str(tree),
                    "am",
                    "-q",
                    "--whitespace=error-all",
                    *map(str, patches),
                ]
            )
            log(f"git am: all {len(patches)} patches apply to {BASE_TAG}")
            failed = 0
            for patch in patches:
                result = subprocess.run(
                    [str(tree / "scripts/checkpatch.pl"), "--strict", str(patch)],
                    cwd=tree,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if result.returncode != 0 or not CLEAN.search(result.stdout):
                    failed += 1
                    print(result.stdout, file=sys.stderr)
                    log(f"checkpatch --strict: {patch.name} is not clean")
            if failed:
                return 1
            log(f"checkpatch --strict: 0 errors, 0 warnings, 0 checks in all {len(patches)}")
            return 0
        finally:
            shutil.rmtree(tree.parent, ignore_errors=True)
            run(["git", "-C", str(SRC_DIR), "worktree", "prune"])
    except VmError as err:
        print(f"vm/series_check.py: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
