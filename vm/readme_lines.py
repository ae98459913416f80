"""The README's two commands: the first runs the main job, the second every test.

They are the two lines of the README's first code block.  `.ci/run` and
`make fresh-test` run them from here, exactly as the README prints them, so
that neither can drift from what a newcomer reads.

    python3 vm/readme_lines.py test    # prints the second line
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
NAMES = ("main", "test")


def readme_lines(readme: Path = README) -> dict[str, str]:
    """{"main": first line, "test": second line} of the README's first code block."""
    text = readme.read_text(encoding="utf-8")
    block = re.search(r"^```[a-z]*\n(.*?)^```$", text, re.S | re.M)
    if block is None:
        raise ValueError(f"{readme}: no code block")
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    if len(lines) != len(NAMES):
        raise ValueError(f"{readme}: the first code block has {len(lines)} lines, not 2")
    return dict(zip(NAMES, lines, strict=True))


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in NAMES:
        print(f"usage: readme_lines.py {'|'.join(NAMES)}", file=sys.stderr)
        return 2
    print(readme_lines()[argv[0]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
