"""Print the commands of the first code block under README.md's "## Quickstart", one per line."""

from __future__ import annotations

import re
import sys
from pathlib import Path


def quickstart_commands(readme: str) -> list[str]:
    section = readme.split("## Quickstart", 1)
    if len(section) != 2:
        raise SystemExit("ci: README.md has no '## Quickstart' section")
    block = re.search(r"```[a-z]*\n(.*?)```", section[1], re.S)
    if block is None:
        raise SystemExit("ci: the Quickstart section has no code block")
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


if __name__ == "__main__":
    print("\n".join(quickstart_commands(Path(sys.argv[1]).read_text())))
