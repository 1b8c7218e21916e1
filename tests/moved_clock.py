"""`make test-moved-clock`: the suite again with the clock moved ahead, so no test depends on its date.

faketime (Debian's package) moves the clock of Python and of DynamoDB Local's
Java alike. Each offset runs the whole suite but the tests marked real_clock
(a timed wait on a threading primitive, which faketime stretches by the whole
offset), all offsets at once, each with its own DynamoDB Local and moto on
loopback ports of its own. Each run's output goes to out/moved-clock<offset>.log;
a failed run's tail is printed.

    python -m tests.moved_clock +40d +400d [-- pytest arguments]
"""
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OFFSETS = ["+40d", "+400d"]
TAIL_LINES = 60


def main(argv: List[str]) -> int:
    offsets, pytest_args = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    faketime = shutil.which("faketime")
    if faketime is None:
        print("faketime is missing: install Debian's package faketime (make test does)", file=sys.stderr)
        return 2
    logs = ROOT / "out"
    logs.mkdir(exist_ok=True)
    runs = []
    for offset in offsets or DEFAULT_OFFSETS:
        log = logs / f"moved-clock{offset}.log"
        command = [faketime, "-f", offset, sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                   "-m", "not real_clock", *pytest_args]
        with open(log, "wb") as output:
            runs.append((offset, log, subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)))
    failed = 0
    for offset, log, process in runs:
        status = process.wait()
        lines = log.read_text(errors="replace").splitlines()
        print(f"clock {offset}: {lines[-1] if lines else 'no output'} ({log.relative_to(ROOT)})")
        if status != 0:
            failed += 1
            print("\n".join(lines[-TAIL_LINES:]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
