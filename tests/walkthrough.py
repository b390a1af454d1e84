"""Turn docs/first-deploy.md into the shell script that follows it literally.

Every ```sh block is a step, run as written; every block whose info string names a file
(```yaml file=~/ops/inventory/hosts.yml) is written to that file. Blocks of other kinds
(```console, say) are prose. The steps run in one bash session, in order, with `set -euo pipefail`,
so a failing command fails the walkthrough.

    python tests/walkthrough.py docs/first-deploy.md > steps.sh
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```\s*$", re.M | re.S)


def blocks(markdown: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced block, in order."""
    return [(m.group("info").strip(), m.group("body")) for m in FENCE.finditer(markdown)]


def script(markdown: str) -> str:
    lines = []
    step = 0
    for info, body in blocks(markdown):
        words = info.split()
        target = next((w.split("=", 1)[1] for w in words[1:] if w.startswith("file=")), None)
        if target:
            path = target.replace("~/", "$HOME/", 1) if target.startswith("~/") else target
            marker = "QF_WALKTHROUGH_EOF"
            if marker in body:
                raise SystemExit(f"a file block holds {marker}")
            lines += [f'echo "[walkthrough] write {target}"', f'mkdir -p "$(dirname "{path}")"',
                      f"cat > \"{path}\" <<'{marker}'", body.rstrip("\n"), marker]
        elif words[:1] == ["sh"]:
            step += 1
            shown = "\n".join(f"[walkthrough] $ {command}" for command in body.rstrip("\n").splitlines())
            lines += [f"echo {shlex.quote(shown)}", body.rstrip("\n")]
    if not step:
        raise SystemExit("no ```sh block found")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(script(Path(sys.argv[1]).read_text()))
