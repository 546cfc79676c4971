"""How many recorded 1:1 consultations ``telemed serve --workers 1`` and ``--workers 2``
carry, each worker held to the same share of a core.

    .venv/bin/python bench/scale.py [--share 0.3] [--start 4] [--step 2] [--max 40]
                                    [--seconds 15] [--settle 5]

Both runs use a PostgreSQL and a Redis started for the bench, and the synthetic clients
of ``bench/media.py`` (``bench/media_peer.py``: pre-encoded VP8 640x480@30 and Opus both
ways, frames matched one by one). Both participants consent and the doctor starts the
recording. With two workers, each doctor's socket is put on another process than its
patient's (``media_peer.py --spread``): signalling crosses processes through Redis, as
it does between machines.

A worker is a node; on a machine of two cores the load generator needs about as much
CPU as the server, so letting the workers use whole cores would measure the generator,
not the server. Instead each worker is held to ``--share`` of a core (a CPU cgroup:
``cpu.cfs_quota_us`` or ``cpu.max``), like a node of a fixed size, and the clients get
the rest of the machine. For each number of workers, K goes up by ``--step`` from
``--start`` (two workers start where one stopped) while every client comes up, 99 % or
more of each kind of frame arrives (within 2 s after the window) and the 99th percentile
of frame delays stays within ``--max-delay`` (a call half a second behind is not
carried); the last such K is what it carries. The bench
says when the machine was saturated in a window (then the generator may have been the
limit) and how often the workers were throttled at their share (then they were).

Target (issue 13): two workers carry at least 1.8 times what one carries.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import book_consultations, create_database, process_tree, server_env
from bench.media import KINDS, TARGET_DELIVERED, Measurement, encode_media, measure
from telemed.settings import Settings
from tests.servers import PostgresServer, RedisServer, free_port

TARGET_RATIO = 1.8
SATURATED = 0.95
"""Share of the machine's cores busy in a window above which the machine was the limit."""


class CpuCap:
    """Each of a server's workers in a CPU cgroup of its own, held to ``share`` of a
    core (cgroup v1 ``cpu`` or v2 ``cpu.max``); ``None`` share: no cap."""

    def __init__(self, share: float | None, tag: str) -> None:
        self.share = share
        self.tag = tag
        self.groups: list[Path] = []
        self.root = self._root()

    @staticmethod
    def _root() -> Path | None:
        v1 = Path("/sys/fs/cgroup/cpu")
        if (v1 / "cpu.cfs_quota_us").exists() and os.access(v1, os.W_OK):
            return v1
        v2 = Path("/sys/fs/cgroup")
        controllers = v2 / "cgroup.subtree_control"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            return v2 if os.access(v2, os.W_OK) else None
        return None

    @property
    def available(self) -> bool:
        return self.root is not None

    def hold(self, pids: list[int]) -> None:
        if self.share is None or self.root is None:
            return
        for n, pid in enumerate(pids):
            group = self.root / f"telemed-bench-{self.tag}-{n}"
            group.mkdir(exist_ok=True)
            if (group / "cpu.cfs_quota_us").exists():
                period = int((group / "cpu.cfs_period_us").read_text())
                (group / "cpu.cfs_quota_us").write_text(str(int(self.share * period)))
            else:
                (group / "cpu.max").write_text(f"{int(self.share * 100_000)} 100000")
            (group / "cgroup.procs").write_text(str(pid))
            self.groups.append(group)

    def throttled(self) -> tuple[int, int]:
        """Periods the groups ran in and were throttled in, all groups."""
        periods = throttled = 0
        for group in self.groups:
            stat = dict(
                line.split() for line in (group / "cpu.stat").read_text().splitlines() if line
            )
            periods += int(stat.get("nr_periods", 0))
            throttled += int(stat.get("nr_throttled", 0))
        return periods, throttled

    def release(self) -> None:
        for group in self.groups:
            with contextlib.suppress(OSError):
                group.rmdir()  # empty once the workers exited
        self.groups.clear()


@dataclass
class Step:
    consultations: int
    result: Measurement
    throttled: float
    """Share of the workers' CPU periods in the window in which they hit their share."""
    machine_cores: float

    max_delay: float = 0.25

    def p99(self, kind: str) -> float:
        delays = sorted(self.result.latencies[kind])
        return delays[int(0.99 * (len(delays) - 1))] if delays else float("nan")

    @property
    def carried(self) -> bool:
        return self.result.ready == self.result.clients and all(
            self.result.delivered(kind) >= TARGET_DELIVERED and self.p99(kind) <= self.max_delay
            for kind in KINDS
        )

    @property
    def saturated(self) -> bool:
        return self.machine_cores >= SATURATED * (os.cpu_count() or 1)


@dataclass
class Run:
    workers: int
    steps: list[Step] = field(default_factory=list)

    @property
    def carried(self) -> Step | None:
        passed = [s for s in self.steps if s.carried]
        return passed[-1] if passed else None


def wait_for_workers(pid: int, workers: int, redis_url: str, seconds: float = 60) -> list[int]:
    """The server's worker processes, once each has registered as a node."""
    store = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            tree = process_tree(pid)
            pids = tree[1:] if workers > 1 else tree
            if len(pids) == workers and store.scard("telemed:nodes") >= workers:
                return pids
            time.sleep(0.1)
    finally:
        store.close()
    raise TimeoutError(f"{workers} workers did not register in {seconds} s")


def prepare(work: Path, redis_url: str) -> None:
    """A step's own directory, and Redis without the last step's pins and states."""
    work.mkdir(parents=True, exist_ok=True)
    store = redis.Redis.from_url(redis_url)
    try:
        store.flushdb()
    finally:
        store.close()


async def run_step(
    args: argparse.Namespace,
    *,
    workers: int,
    count: int,
    booked_specs: list[dict[str, str]],
    env: dict[str, str],
    redis_url: str,
    media: Path,
    work: Path,
    cap: CpuCap,
) -> Step:
    prepare(work, redis_url)
    port = free_port()
    pids: list[int] = []

    def ready(pid: int) -> None:
        pids.extend(wait_for_workers(pid, workers, redis_url))
        cap.hold(pids)

    marks: dict[str, tuple[int, int]] = {}

    def window(moment: str) -> None:
        marks[moment] = cap.throttled()

    step_args = argparse.Namespace(
        client_processes=0,
        ready_seconds=args.ready_seconds,
        unrecorded=False,
        settle=args.settle,
        seconds=args.seconds,
        dump=args.dump and f"{args.dump}-w{workers}-k{count}",
    )
    try:
        result = await measure(
            design="telemed",
            server_cmd=[
                sys.executable, "-m", "telemed", "serve",
                "--port", str(port), "--workers", str(workers),
            ],
            env=env,
            port=port,
            health="/readyz",
            specs=booked_specs[: 2 * count],
            consultations=count,
            args=step_args,
            media=media,
            work=work,
            spread=redis_url if workers > 1 else None,
            on_ready=ready,
            on_window=window,
        )  # fmt: skip
        (periods0, throttled0), (periods1, throttled1) = marks["began"], marks["ended"]
        periods, throttled = periods1 - periods0, throttled1 - throttled0
    finally:
        cap.release()
    machine = (result.server_cpu + result.clients_cpu + result.other_cpu) / result.seconds
    return Step(count, result, throttled / periods if periods else 0.0, machine, args.max_delay)


def describe(workers: int, step: Step) -> str:
    r = step.result
    notes = []
    if step.saturated:
        notes.append("machine saturated: the generator may be the limit")
    if r.unmatched:
        notes.append(f"{r.unmatched} streams counted, not matched")
    if r.ready < r.clients:
        notes.append(f"{r.clients - r.ready} clients did not come up")
    return (
        f"  workers={workers} K={step.consultations:3d}  "
        f"delivered video {r.delivered('video'):7.2%} audio {r.delivered('audio'):7.2%}  "
        f"p99 {step.p99('video') * 1000:4.0f}/{step.p99('audio') * 1000:4.0f} ms  "
        f"server {r.server_cores:4.2f} cores ({r.cpu_per_consultation:.4f} per consultation)  "
        f"clients {r.clients_cpu / r.seconds:4.2f}  machine {step.machine_cores:4.2f}  "
        f"throttled {step.throttled:5.1%}  {'carried' if step.carried else 'NOT carried'}"
        + (f"  ({'; '.join(notes)})" if notes else "")
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--share", type=float, default=0.3, help="of a core, per worker")
    parser.add_argument("--no-cap", action="store_true", help="let workers use whole cores")
    parser.add_argument("--start", type=int, default=4, help="first K (one worker)")
    parser.add_argument("--step", type=int, default=2, help="K goes up by this much")
    parser.add_argument("--max", type=int, default=40, help="K never goes above this")
    parser.add_argument("--seconds", type=float, default=15, help="the measured window")
    parser.add_argument(
        "--settle", type=float, default=10, help="seconds before the window (joins' checks)"
    )
    parser.add_argument(
        "--max-delay", type=float, default=0.25, help="p99 frame delay of a carried step (s)"
    )
    parser.add_argument("--ready-seconds", type=float, default=60)
    parser.add_argument("--dump", help="write each step's frame logs to DUMP-wW-kK-telemed.json")
    args = parser.parse_args()
    cap_share = None if args.no_cap else args.share

    postgres = PostgresServer.start()
    redis_server = RedisServer.start_new()
    runs: list[Run] = []
    try:
        await create_database(postgres, "bench")
        database_url = f"{postgres.url}/bench"
        with tempfile.TemporaryDirectory(prefix="telemed-scale-bench-") as tmp:
            work = Path(tmp)
            media = work / "media.pickle"
            encode_media(media)
            data_dir = work / "telemed"
            booked = await book_consultations(
                Settings(data_dir=data_dir, database_url=database_url),
                args.max,
                starts_in=timedelta(minutes=5),
                minutes=30,
                doctor_each=True,
            )
            specs = [
                {"name": f"{role[0]}{n}", "role": role, "room": b.consultation_id, "token": token}
                for n, b in enumerate(booked)
                for role, token in (("patient", b.patient_token), ("doctor", b.doctor_token))
            ]
            env = server_env(data_dir) | {
                "TELEMED_DATABASE_URL": database_url,
                "TELEMED_REDIS_URL": redis_server.url,
                "TELEMED_NODE_MAX_ROOMS": "1000",
                "TELEMED_NODE_MAX_STREAMS": "10000",
            }
            start = args.start
            for workers in (1, 2):
                cap = CpuCap(cap_share, f"w{workers}")
                if cap_share is not None and not cap.available:
                    print("no writable CPU cgroup here: workers run uncapped", flush=True)
                    cap = CpuCap(None, "none")
                run = Run(workers)
                runs.append(run)
                count = start
                while count <= args.max:
                    step = await run_step(
                        args,
                        workers=workers,
                        count=count,
                        booked_specs=specs,
                        env=env,
                        redis_url=redis_server.url,
                        media=media,
                        work=work / f"w{workers}-k{count}",
                        cap=cap,
                    )
                    run.steps.append(step)
                    print(describe(workers, step), flush=True)
                    if not step.carried:
                        break
                    count += args.step
                carried = run.carried
                start = carried.consultations if carried else args.start
    finally:
        postgres.stop()
        redis_server.close()
    report(args, cap_share, runs)


def report(args: argparse.Namespace, share: float | None, runs: list[Run]) -> None:
    held = f"each worker held to {share:g} of a core" if share else "workers uncapped"
    print(
        f"\nscale bench: recorded 1:1 consultations, {held}, PostgreSQL and Redis; "
        f"{args.seconds:g} s windows after {args.settle:g} s; cores={os.cpu_count()}"
    )
    carried: dict[int, int] = {}
    for run in runs:
        best = run.carried
        carried[run.workers] = best.consultations if best else 0
        if best is None:
            print(f"  workers={run.workers}: carried nothing at {TARGET_DELIVERED:.0%}")
            continue
        r = best.result
        print(
            f"  workers={run.workers}: carried {best.consultations} consultations at "
            f"{min(r.delivered(k) for k in KINDS):.2%} of frames or more, "
            f"{r.cpu_per_consultation:.4f} CPU-s per consultation-second "
            f"({r.server_cores:.2f} cores), workers throttled in {best.throttled:.0%} of periods"
            + ("; the machine was saturated (generator-bound)" if best.saturated else "")
        )
        last = run.steps[-1]
        if last.carried:
            print(f"    stopped at --max {args.max} before the limit")
    if carried.get(1):
        ratio = carried.get(2, 0) / carried[1]
        verdict = "PASS" if ratio >= TARGET_RATIO else "MISS"
        print(f"\ntarget: 2 workers carry >= {TARGET_RATIO}x one: {ratio:.2f}x  {verdict}")
    bound = [
        f"workers={run.workers} K={step.consultations}"
        for run in runs
        for step in run.steps
        if step.saturated
    ]
    if bound:
        print("the machine, not the workers, may have been the limit in: " + ", ".join(bound))


if __name__ == "__main__":
    asyncio.run(main())
