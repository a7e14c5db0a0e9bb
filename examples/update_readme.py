"""Re-run every command quoted in examples/README.md and refresh its output.

    python3 examples/update_readme.py          # from the repository root

A quoted command is a line `<!-- run: costmodel ARGS -->` followed by a
```text block; the block is replaced by what `costmodel ARGS` prints now
(stdout, 200 columns wide). The prose answers quote the numbers of the run
recorded in the README: re-read them after refreshing.
"""
import os
import re
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
README = os.path.join(HERE, "README.md")
PAT = re.compile(r"(<!-- run: costmodel (?P<args>.*?) -->\n```text\n)(?P<out>.*?)(```)", re.S)


def run(args: str) -> str:
    env = dict(os.environ, COLUMNS="200", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "costmodel.cli"] + shlex.split(args), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"`costmodel {args}` failed ({r.returncode}): {r.stderr.strip()}")
    return "\n".join(line.rstrip() for line in r.stdout.rstrip().splitlines()) + "\n"


def main():
    text = open(README, encoding="utf-8").read()
    n = 0

    def sub(m):
        nonlocal n
        n += 1
        return m.group(1) + run(m.group("args")) + m.group(4)
    text = PAT.sub(sub, text)
    with open(README, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"refreshed {n} outputs in {README}")


if __name__ == "__main__":
    main()
