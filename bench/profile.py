"""python -m bench.profile: where one target spends its CPU under load.

Starts nginx (fixed JSON answer) and one target pinned as in ``python -m bench``,
warms it up, runs wrk for ``--seconds`` at ``--connections`` and prints the
throughput and CPU µs per request; with ``--py-spy`` (``pip install py-spy``) it
samples the target meanwhile and prints the functions with the most time, own
and cumulative, so a change can be judged by the profile before the full bench.

    python -m bench.profile --endpoint /v1/chat/completions -c 64 --py-spy
    python -m bench.profile --target reference
    python -m bench.profile -c 256 --delay-ms 50            # the c=256 cell of python -m bench
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import load, procs, targets, upstreams


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="modelbroker", choices=["modelbroker", "reference"])
    parser.add_argument("--endpoint", default="/v1/chat/completions", help="the target's endpoint to load")
    parser.add_argument("-c", "--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--stream", action="store_true", help="load the streamed answer")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the target (default: this one)")
    parser.add_argument("--delay-ms", type=float, default=None,
                        help="load bench/delay_upstream.py answering after this delay instead of nginx")
    parser.add_argument("--py-spy", action="store_true", help="sample the target with py-spy while loaded")
    parser.add_argument("--top", type=int, default=40, help="how many functions to list")
    parser.add_argument("--save", type=Path, help="keep py-spy's collapsed stacks in this file")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the target (repeatable)")
    return parser.parse_args(argv)


def summarize(collapsed: Path, top: int) -> str:
    """The functions with the most samples: own (leaf) and cumulative (anywhere on the stack)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [f.split(" (", 1)[0] + " " + f.rsplit("/", 1)[-1].split(":")[0] if " (" in f else f
                  for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    lines = [f"{samples} samples", "", "own %   function"]
    lines += [f"{100 * n / samples:5.1f}   {name}" for name, n in own.most_common(top)]
    lines += ["", "cum %   function"]
    lines += [f"{100 * n / samples:5.1f}   {name}" for name, n in total.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    targets.TARGET_PYTHON = args.python
    procs.install_cleanup()
    cpus = (0, 1) if (procs.pin_prefix(0) and procs.pin_prefix(1)) else (None, None)
    target_cpu, load_cpu = cpus
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp_name:
        tmp = Path(tmp_name)
        if args.delay_ms is None:
            upstream = upstreams.start_nginx(tmp, load_cpu)
        else:
            upstream = upstreams.start_delayed(tmp, load_cpu, args.delay_ms / 1000)
        extra = dict(item.split("=", 1) for item in args.env)
        target = targets.start_target(args.target, upstream, args.stream, tmp, target_cpu, extra_env=extra)
        try:
            endpoint = next((ep for ep in target.endpoints if ep.name == args.endpoint), target.endpoints[0])
            load.run_wrk(endpoint.url, endpoint.body, connections=args.connections, duration_s=2, cpu=load_cpu)
            procs.wait_idle(target.pid)
            spy = None
            if args.py_spy:
                if shutil.which("py-spy") is None:
                    sys.exit("py-spy is not installed: pip install py-spy")
                out = tmp / "profile.txt"
                spy = subprocess.Popen(["py-spy", "record", "--pid", str(target.pid), "--format", "raw",
                                        "--rate", "250", "--duration", str(int(args.seconds)),
                                        "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(0.5)
            cell = load.measure(endpoint.url, endpoint.body, pid=target.pid, connections=args.connections,
                                duration_s=args.seconds, cpu=load_cpu)
            print(f"{endpoint.label} c={args.connections}: {cell.wrk.rps:,.0f} rps, p50 {cell.wrk.p50_ms:.2f} ms, "
                  f"p99 {cell.wrk.p99_ms:.2f} ms, {cell.cpu_us_per_req or 0:,.0f} µs CPU/req, "
                  f"RSS {cell.rss_bytes / 2**20:.1f} MiB, errors {cell.wrk.errors or 0}")
            if spy is not None:
                _, err = spy.communicate(timeout=args.seconds + 30)
                if spy.returncode != 0 or not out.exists():
                    print(f"py-spy failed: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
                else:
                    print(summarize(out, args.top))
                    if args.save:
                        shutil.copy(out, args.save)
        finally:
            target.stop()
            upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
