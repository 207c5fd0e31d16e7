"""A classroom's load on the real server: requests per second and latency percentiles.

    python benchmarks/load.py [--seconds 10] [--clients 1 10 50]

Starts `glassbox serve` on the shipped GPT-2 and ViT in its own process (loopback, a free port),
then, for each number of clients, hammers it with asyncio + httpx for the given time:
- cached:   POST /api/text/attention on one sentence (after one warm-up run, every answer is cached);
- uncached: POST /api/text/trace on a sentence no one sent before (each one runs GPT-2);
and prints requests/s, p50/p95/p99 latency of the answers, the share answered 503 (busy, with
Retry-After) and the server's peak RSS (VmHWM). tests/test_load.py drives the same code for 30 s
with 50 clients mixing pages, GPT-2 and ViT traces.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SENTENCE = "The animal didn't cross the street because it was too tired"
WORDS = "cat dog sun tree park ball red blue small big ran sat saw happy sad little girl boy home".split()


@dataclass
class Server:
    proc: subprocess.Popen
    base: str

    def rss_kib(self, peak: bool = False) -> int:
        """The server's resident memory (VmRSS), or its peak so far (VmHWM), from /proc."""
        key = "VmHWM:" if peak else "VmRSS:"
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
        raise RuntimeError(f"no {key} for pid {self.proc.pid}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_server(**settings: str) -> Server:
    """`glassbox serve` in its own process (its RSS is its own), GLASSBOX_* settings from kwargs."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GLASSBOX_PORT": str(port), "GLASSBOX_SD": "",
           **{f"GLASSBOX_{k.upper()}": str(v) for k, v in settings.items()}}
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return Server(proc, base)
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start within 120 s")


@dataclass
class Sample:
    kind: str
    status: int
    seconds: float
    retry_after: str | None = None


# A request: (kind, method, path, json body or None), drawn anew for every call.
Request = tuple[str, str, str, dict | None]


def fresh_sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 20))) + f" {rng.getrandbits(40):x}"


async def hammer(base: str, clients: int, seconds: float, draw: Callable[[random.Random], Request]) -> list[Sample]:
    """`clients` clients, each sending one request after another for `seconds` (none waits between)."""
    samples: list[Sample] = []
    end = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:

        async def client(i: int) -> None:
            rng = random.Random(i)
            while time.perf_counter() < end:
                kind, method, path, body = draw(rng)
                t0 = time.perf_counter()
                r = await http.request(method, path, json=body)
                await r.aread()
                samples.append(Sample(kind, r.status_code, time.perf_counter() - t0, r.headers.get("retry-after")))

        await asyncio.gather(*(client(i) for i in range(clients)))
    return samples


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


@dataclass
class Summary:
    n: int
    ok: int
    busy: int
    errors: dict[int, int] = field(default_factory=dict)  # other statuses
    rps: float = 0.0  # answers (of any status) per second
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0  # of the 200s, in seconds


def summarize(samples: list[Sample], seconds: float) -> Summary:
    ok = [s.seconds for s in samples if s.status == 200]
    s = Summary(n=len(samples), ok=len(ok), busy=sum(x.status == 503 for x in samples), rps=len(samples) / seconds)
    for x in samples:
        if x.status not in (200, 503):
            s.errors[x.status] = s.errors.get(x.status, 0) + 1
    if ok:
        s.p50, s.p95, s.p99 = (percentile(ok, q) for q in (50, 95, 99))
    return s


def cached(rng: random.Random) -> Request:
    return "cached", "POST", "/api/text/attention", {"text": SENTENCE, "layer": 0, "head": 0}


def uncached(rng: random.Random) -> Request:
    return "uncached", "POST", "/api/text/trace", {"text": fresh_sentence(rng)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50])
    args = ap.parse_args()

    server = start_server()
    try:
        httpx.post(server.base + "/api/text/attention", json=cached(random.Random())[3], timeout=120).raise_for_status()
        import torch
        import transformers

        print(f"# {time.strftime('%Y-%m-%d')} · {platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · "
              f"python {platform.python_version()} · torch {torch.__version__} · transformers {transformers.__version__}")
        print(f"# {args.seconds:g} s per row; latency of the 200 answers; busy = 503 with Retry-After")
        print(f"{'request':<9} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'busy':>6} {'other':>6}")
        rows = []
        for draw, clients in itertools.product((cached, uncached), args.clients):
            samples = asyncio.run(hammer(server.base, clients, args.seconds, draw))
            s = summarize(samples, args.seconds)
            rows.append({"request": draw.__name__, "clients": clients, **s.__dict__})
            print(f"{draw.__name__:<9} {clients:>7} {s.rps:>8.1f} {s.p50 * 1e3:>8.1f} {s.p95 * 1e3:>8.1f} "
                  f"{s.p99 * 1e3:>8.1f} {s.busy / max(s.n, 1):>6.0%} {sum(s.errors.values()):>6}")
        print(f"server peak RSS: {server.rss_kib(peak=True) / 1024:.0f} MiB")
        print(json.dumps(rows))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
