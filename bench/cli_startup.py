"""How long ``modelbroker --help`` takes, wall clock, and what it imports.

Runs each command N times (after one warm-up run, so the files are in the page cache) and
prints the median, min and max, with the cost of a bare interpreter beside them for scale, and
the heaviest imports of one ``--help`` (``python -X importtime``).

    python -m bench.cli_startup            # modelbroker --help, -n 15
    python -m bench.cli_startup -n 30 -- serve --help
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOAL_S = 0.25


def timed(command: list[str], runs: int) -> list[float]:
    subprocess.run(command, capture_output=True, check=False)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return times


def heaviest_imports(arguments: list[str], count: int = 8) -> list[tuple[int, str]]:
    """The modules with the largest cumulative import time (microseconds), outermost ones only."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "modelbroker", *arguments],
                          capture_output=True, text=True, check=False)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
        if not name.startswith(" "):  # imported by the program itself, not by another module
            rows.append((int(cumulative), name))
    return sorted(rows, reverse=True)[:count]


def imported(arguments: list[str], modules: list[str]) -> dict[str, bool]:
    code = ("import sys; from modelbroker._cli.main import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            f"print(*[m in sys.modules for m in {modules!r}])")
    done = subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True, check=False)
    return dict(zip(modules, (word == "True" for word in done.stdout.split()[-len(modules):])))


def report(label: str, times: list[float]) -> str:
    median = statistics.median(times)
    return (f"{label:<56} median {median * 1000:6.0f} ms  min {min(times) * 1000:6.0f}  max {max(times) * 1000:6.0f}"
            + ("" if label.startswith("python") else f"  {'within' if median < GOAL_S else 'OVER'} the "
               f"{GOAL_S * 1000:.0f} ms goal"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=15, help="runs of each command (default 15)")
    parser.add_argument("arguments", nargs="*", default=["--help"], help="modelbroker's arguments (default --help)")
    args = parser.parse_args()
    script = Path(sys.executable).with_name("modelbroker")
    on_path = shutil.which("modelbroker")
    commands = {"python -c pass": [sys.executable, "-c", "pass"],
                f"{script} {' '.join(args.arguments)}": [str(script), *args.arguments]}
    if on_path and Path(on_path) != script:  # a pyenv shim, say, which costs a shell and a lookup
        commands[f"{on_path} {' '.join(args.arguments)}"] = [on_path, *args.arguments]
    print(f"{args.n} runs each, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    for label, command in commands.items():
        print(report(label, timed(command, args.n)))
    print("imported:", ", ".join(f"{name} {'yes' if seen else 'no'}"
                                 for name, seen in imported(args.arguments, ["fastapi", "pydantic"]).items()))
    print("heaviest imports (cumulative ms):")
    for micros, name in heaviest_imports(args.arguments):
        print(f"  {micros / 1000:7.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
