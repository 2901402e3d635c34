"""python -m bench.otel: what the ``otel`` plugin costs per request, tracing off and on.

Runs ``bench.inprocess`` twice, as it is and with ``OTEL_EXPORTER_OTLP_ENDPOINT`` aimed at
a local OTLP/HTTP sink (another process, so that its work is not counted), and prints
both figures and their difference. On, every request makes two spans (the request's and
its one attempt's), which the SDK's batch processor encodes and sends from its own
thread; ``bench.inprocess`` counts the CPU of every thread of its process. The sink
decodes what it gets and says how many spans came, so a figure from a run that dropped
spans (a full queue) shows itself.

    python -m bench.otel                  # CPU µs per request, off and on
    python -m bench.otel --instructions   # instructions per request (callgrind; ~6 min)
    python -m bench.otel --stream         # the same, streamed
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The batch processor's queue holds every span of a run: none is dropped, so all are paid for.
ON = {"OTEL_BSP_MAX_QUEUE_SIZE": "1000000", "OTEL_BSP_SCHEDULE_DELAY": "200"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.otel", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=12_800, help="requests measured")
    parser.add_argument("--instructions", action="store_true", help="count instructions with callgrind")
    parser.add_argument("--stream", action="store_true", help="streamed requests")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)  # run as the sink, on this port
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.sink is not None:
        serve_sink(args.sink)
        return
    sink = subprocess.Popen([sys.executable, "-m", "bench.otel", "--sink", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        port = int(sink.stdout.readline())
        off = run_inprocess(args, [])
        print(f"off: {off}")
        on = run_inprocess(args, [f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{port}",
                                  *(f"{name}={value}" for name, value in ON.items())])
        print(f"on:  {on}")
        time.sleep(1.0)  # the last batch
    finally:
        sink.terminate()
        spans = sink.communicate(timeout=10)[0].strip()
    print(f"the sink received {spans} spans")
    found_off, found_on = (float(re.match(r"[\d,.]+", text).group().replace(",", "")) for text in (off, on))
    unit = "instructions" if args.instructions else "µs CPU"
    print(f"tracing on costs {found_on - found_off:,.1f} {unit} per request more "
          f"({(found_on / found_off - 1) * 100:.0f} %)")


def run_inprocess(args: argparse.Namespace, env: list[str]) -> str:
    """``bench.inprocess``'s line of output for one run."""
    cmd = [sys.executable, "-m", "bench.inprocess", "-n", str(args.requests), *(f"--env={item}" for item in env),
           *(["--instructions"] if args.instructions else []), *(["--stream"] if args.stream else [])]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"bench.inprocess failed:\n{run.stdout}\n{run.stderr[-2000:]}")
    return run.stdout.strip().splitlines()[-1]


def serve_sink(port: int) -> None:
    """An OTLP/HTTP receiver that answers 200 to every export and, at SIGTERM, prints the spans it got."""
    import signal

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received = [0]

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            export = ExportTraceServiceRequest.FromString(body)
            received[0] += sum(len(s.spans) for r in export.resource_spans for s in r.scope_spans)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Sink)

    def stop(*_) -> None:
        print(received[0], flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
