"""Media benchmark: K recorded 1:1 video consultations through Telemed's relay and through
the stock aiortc design (``MediaRelay`` + ``MediaRecorder``), same run, same clients.

    .venv/bin/python bench/media.py [--consultations 4] [--seconds 20] [--settle 5]
                                    [--design both|telemed|stock] [--unrecorded]

Each consultation has a patient and a doctor, synthetic aiortc clients
(``bench/media_peer.py``) spread over several processes. Each sends pre-encoded VP8
640x480 at 30 fps (about 1 Mbit/s, a keyframe every 2 s, encoded once at start) and Opus
(20 ms frames) and receives the other's; received frames are counted encoded (nothing is
decoded on the clients). For Telemed, both consent (``recording:consent``) and the
doctor sends ``recording:start``: every participant is recorded. The stock server
(``bench/stock_media_server.py``) decodes, relays, re-encodes, and records each
participant with a ``MediaRecorder``. With ``--unrecorded`` nobody is recorded, in either
design (what an unrecorded call costs).

Once every client sends and receives (and the recording is on) and ``--settle`` seconds
more have passed (Telemed's camera/microphone check decodes the first seconds), a
``--seconds`` window is measured:
- the server process's CPU (user + system, all threads, from /proc) per consultation-second;
- frames delivered: of the frames the publishers sent in the window, those their viewer
  received (within 2 s after it), per kind, and their delays. Each client notes the
  ``time.monotonic()`` (one clock for all the processes) of every frame it sends, and of
  every frame it receives with its RTP timestamp; a forwarding relay keeps the
  timestamps up to a constant, so each received frame is matched to the frame sent
  (``match_frames``).
  A re-encoding relay stamps frames anew: its frames are counted in the window instead,
  and it has no delays;
- the CPU that other processes of the machine used in the window: the bench shares the
  machine, and warns when it was not quiet.
At the end, Telemed's recordings (``.webm`` under its data dir) are counted and
demuxed, to show that recording happened. Targets (issues 5 and 13): at most 0.05 of a
core per recorded consultation (20 or more per core), at least 25 times less CPU than the
stock design, 99 % or more of frames delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import fractions
import json
import math
import os
import pickle
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import av

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Booked, book_consultations, cpu_seconds, server_env, tree_cpu_times
from telemed.settings import Settings
from tests.servers import free_port

KINDS = ("video", "audio")
STEP = {"video": 3000, "audio": 960}
"""One frame in RTP clock units (the clients' pts go up by this much a frame)."""
CLOCK = {"video": 90000, "audio": 48000}
OTHER_LOAD = 0.15
"""Cores that other processes may use in a window before the bench warns."""
STEADY = 0.05
"""Seconds around the median delay that most frames of a matched stream fall within."""
GRACE = 2.0
"""Seconds after the window that a frame sent in it has to arrive."""
TARGET_CORE_PER_CONSULTATION = 0.05
TARGET_CPU_RATIO = 25.0
TARGET_DELIVERED = 0.99


@dataclass
class Measurement:
    consultations: int
    seconds: float = 0.0
    server_cpu: float = 0.0
    server_system_cpu: float = 0.0
    clients_cpu: float = 0.0
    other_cpu: float = 0.0
    """CPU the rest of the machine used in the window (other processes than the bench's)."""
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    unmatched: int = 0
    """Streams whose frames could not be matched one by one (counted instead)."""
    keyframe_requests: int = 0
    clients: int = 0
    ready: int = 0
    log_errors: list[str] = field(default_factory=list)
    per_client: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Any] = field(default_factory=list)

    @property
    def cpu_per_consultation(self) -> float:
        return self.server_cpu / (self.consultations * self.seconds)

    @property
    def server_cores(self) -> float:
        return self.server_cpu / self.seconds

    @property
    def cpu_ms_per_delivered_frame(self) -> float:
        delivered = sum(self.received.values())
        return self.server_cpu * 1000 / delivered if delivered else float("nan")

    def delivered(self, kind: str | None = None) -> float:
        kinds = KINDS if kind is None else (kind,)
        sent = sum(self.sent[k] for k in kinds)
        return sum(self.received[k] for k in kinds) / sent if sent else float("nan")

    def latency_ms(self, kind: str, q: float) -> float:
        """A quantile of the delays; unknown unless every stream was matched."""
        values = sorted(self.latencies[kind])
        if not values or self.unmatched:
            return float("nan")
        return values[min(len(values) - 1, int(q * len(values)))] * 1000


@dataclass
class Delivery:
    """One publisher's frames of one kind against what its viewer received."""

    sent: int = 0
    """Frames sent in the window."""
    delivered: int = 0
    aligned: bool = False
    """Whether each received frame was matched to the frame sent (else counted)."""
    latencies: list[float] = field(default_factory=list)
    """Matched: each delivered frame's delay, send → first arrival."""


def match_frames(
    kind: str,
    sent: dict[str, Any],
    received: dict[str, Any],
    *,
    began: float,
    ended: float,
    keeps_timestamps: bool = False,
) -> Delivery:
    """Line up the frames a publisher sent in the window with those its viewer received.

    A publisher's frame n has pts ``n * STEP``. Through a relay that forwards frames as
    they are, the viewer sees it with the timestamp ``pts - C`` for a constant C (each
    RTP leg adds a constant). C is the offset for which the most received frames map to
    a frame sent just before they arrived, moved to the largest value for which no frame
    arrives before it was sent. A frame sent in the window is delivered if it arrived
    within ``GRACE`` seconds after the window; duplicates count once. A relay that
    re-encodes gives frames timestamps of its own: when no offset maps nearly every
    received frame, frames are counted instead (distinct timestamps that arrived in the
    window), and there are no delays. A relay known to keep timestamps
    (``keeps_timestamps``: Telemed) is matched whenever an offset maps nearly every frame,
    however much the delays vary (a backlog draining)."""
    step = STEP[kind]
    first: int = sent["first"]
    times: list[float] = sent["times"]
    result = Delivery()
    window = range(bisect.bisect_left(times, began), bisect.bisect_left(times, ended))
    result.sent = len(window)
    arrivals: dict[int, float] = {}
    for moment, timestamp in zip(received["times"], received["timestamps"], strict=True):
        arrivals.setdefault(timestamp, moment)
    if not times or not arrivals:
        return result

    def delays(offset: int) -> list[float]:
        found = []
        for timestamp, moment in arrivals.items():
            index, rest = divmod(timestamp + offset, step)
            if rest == 0 and 0 <= index - first < len(times):
                found.append(moment - times[index - first])
        return found

    guesses: dict[int, int] = {}
    for timestamp, moment in arrivals.items():
        index = bisect.bisect_right(times, moment) - 1
        if index >= 0:
            offset = (first + index) * step - timestamp
            guesses[offset] = guesses.get(offset, 0) + 1
    if keeps_timestamps and guesses:
        # Each guess is at least the true offset, and equal to it for a frame that
        # arrived before the next was sent: the smallest is the offset, however large
        # a backlog grew later (2 ms of slack: a send is noted just after it).
        offset = min(
            (first + bisect.bisect_right(times, moment + 0.002) - 1) * step - timestamp
            for timestamp, moment in arrivals.items()
            if bisect.bisect_right(times, moment + 0.002) > 0
        )
        found = delays(offset)
    else:
        likely = max(guesses, key=lambda o: guesses[o], default=0)
        offset, found = likely, []
        for shift in range(-10, 11):
            candidate = delays(likely + shift * step)
            if candidate and min(candidate) >= -0.002:
                # The largest offset that breaks no causality.
                offset, found = likely + shift * step, candidate
    logged = sum(1 for moment in arrivals.values() if moment >= times[0])
    typical = sorted(found)[len(found) // 2] if found else 0.0
    steady = sum(1 for delay in found if abs(delay - typical) < STEADY)
    # Most frames of a forwarding relay have about the same delay; the timestamps of a
    # re-encoding relay that drops frames drift away from the publisher's.
    # A relay that keeps timestamps is matched by construction (frames that arrive
    # after the log began but were sent before it cannot be, and need not be).
    result.aligned = (
        bool(found)
        if keeps_timestamps
        else (len(found) >= 0.95 * logged and steady >= 0.5 * len(found))
    )
    if result.aligned:
        for n in window:
            moment = arrivals.get((first + n) * step - offset)
            if moment is not None and moment < ended + GRACE:
                result.latencies.append(moment - times[n])
        result.delivered = len(result.latencies)
    else:
        result.delivered = sum(1 for moment in arrivals.values() if began <= moment < ended)
    return result


@dataclass
class RecordingFiles:
    files: int = 0
    size: int = 0
    packets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    unreadable: int = 0


# -- the media the clients send ------------------------------------------------------------


def encode_media(path: Path, *, seconds: int = 4, bitrate: int = 1_000_000) -> float:
    """Pre-encode the clients' media into ``path``; returns the video's bit rate."""
    video, keyframes = encode_video(seconds, bitrate)
    data = {"video": video, "video_keyframes": keyframes, "audio": encode_audio()}
    path.write_bytes(pickle.dumps(data))
    return sum(len(frame) for frame in video) * 8 / seconds


def encode_video(seconds: int, bitrate: int) -> tuple[list[bytes], list[int]]:
    """``seconds`` of 640x480@30 testsrc2 in VP8, a keyframe every 2 s (the first is one);
    returns the frames and the indices of the keyframes."""
    codec = av.CodecContext.create("libvpx", "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width, codec.height, codec.pix_fmt = 640, 480, "yuv420p"
    codec.time_base = fractions.Fraction(1, 30)
    codec.framerate = fractions.Fraction(30)
    codec.bit_rate = bitrate
    codec.gop_size = 60
    codec.options = {
        "deadline": "good",
        "cpu-used": "4",
        "lag-in-frames": "0",
        "end-usage": "cbr",
        "keyint_min": "60",  # else libvpx adds keyframes of its own
    }
    packets: list[av.Packet[Any]] = []
    with av.open("testsrc2=size=640x480:rate=30", format="lavfi") as source:
        for n, frame in enumerate(source.decode(video=0)):
            if n == 30 * seconds:
                break
            picture = frame.reformat(format="yuv420p")
            picture.pts, picture.time_base = n, codec.time_base
            picture.pict_type = (
                av.video.frame.PictureType.I if n % 60 == 0 else av.video.frame.PictureType.NONE
            )
            packets += codec.encode(picture)
    packets += codec.encode(None)
    frames = [bytes(p) for p in packets]
    # RFC 6386, 9.1: bit 0 of a VP8 frame tag is 0 for a keyframe.
    return frames, [n for n, frame in enumerate(frames) if frame[0] & 1 == 0]


def encode_audio() -> list[bytes]:
    """One second of a 440 Hz tone (whole periods: it loops cleanly), 48 kHz stereo, in
    fifty 20 ms Opus frames."""
    codec = av.CodecContext.create("libopus", "w")
    assert isinstance(codec, av.AudioCodecContext)
    codec.sample_rate, codec.layout, codec.format = 48000, "stereo", "s16"
    codec.bit_rate = 48000
    codec.time_base = fractions.Fraction(1, 48000)
    frames: list[bytes] = []
    for n in range(50):
        samples = (
            round(8000 * math.sin(2 * math.pi * 440 * (n * 960 + i) / 48000)) for i in range(960)
        )
        pcm = b"".join(struct.pack("<hh", value, value) for value in samples)
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        frame.planes[0].update(pcm)
        frame.pts, frame.sample_rate, frame.time_base = n * 960, 48000, codec.time_base
        frames += [bytes(p) for p in codec.encode(frame)]
    frames += [bytes(p) for p in codec.encode(None)]
    return frames[:50]


# -- Telemed's data ------------------------------------------------------------------------


async def prepare_telemed(data_dir: Path, count: int) -> list[Booked]:
    """Consultations starting in a few minutes (their rooms are open), each with its own
    duty doctor and patient, made through the services."""
    return await book_consultations(
        Settings(data_dir=data_dir),
        count,
        starts_in=timedelta(minutes=5),
        minutes=30,
        doctor_each=True,
    )


# -- processes -----------------------------------------------------------------------------


async def wait_ready(url: str, server: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            if server.returncode is not None:
                raise RuntimeError(f"the server exited ({server.returncode})")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as response:
                    if response.status < 500:
                        return
            await asyncio.sleep(0.1)
    raise TimeoutError(url)


async def stop_process(process: asyncio.subprocess.Process, *, seconds: float = 20) -> None:
    """SIGTERM (a graceful stop: recordings are closed), SIGKILL if it hangs."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), seconds)
    except TimeoutError:
        process.kill()
        await process.wait()


class ClientProcess:
    """A ``bench/media_peer.py`` process and its line protocol."""

    def __init__(self, process: asyncio.subprocess.Process, clients: int) -> None:
        self.process = process
        self.clients = clients

    @classmethod
    async def start(
        cls,
        *,
        design: str,
        url: str,
        media: Path,
        specs: list[dict[str, str]],
        spec_path: Path,
        log: Path,
        ready_seconds: float,
        record: bool,
        spread: str | None = None,
    ) -> ClientProcess:
        write_json(spec_path, specs)
        with log.open("wb") as handle:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(ROOT / "bench" / "media_peer.py"),
                "--design", design,
                "--url", url,
                "--media", str(media),
                "--clients", str(spec_path),
                "--ready-seconds", str(ready_seconds),
                *(() if record else ("--no-record",)),
                *(("--spread", spread) if spread else ()),
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=handle,
                limit=1 << 24,  # a frame log is one long line
            )  # fmt: skip
        return cls(process, len(specs))

    async def read(self, seconds: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), seconds)
        if not line:
            raise RuntimeError(f"client process {self.process.pid} exited")
        message: dict[str, Any] = json.loads(line)
        return message

    async def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)


async def frame_logs(
    processes: list[ClientProcess], began: float, ended: float
) -> list[dict[str, Any]]:
    """Each client's log of frames sent and received (``time.monotonic()``)."""
    for process in processes:
        await process.send(f"log {began!r} {ended!r}")
    logs = await asyncio.gather(*(p.read(60) for p in processes))
    return [client for log in logs for client in log["clients"]]


def machine_cpu() -> float:
    """CPU seconds that the machine's processes have used, all cores: user, nice and
    system time, not interrupts (which no process is charged for; /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:3]) / os.sysconf("SC_CLK_TCK")


async def measure(
    *,
    design: str,
    server_cmd: list[str],
    env: dict[str, str],
    port: int,
    health: str,
    specs: list[dict[str, str]],
    consultations: int,
    args: argparse.Namespace,
    media: Path,
    work: Path,
    spread: str | None = None,
    on_ready: Callable[[int], None] | None = None,
    on_window: Callable[[str], None] | None = None,
) -> Measurement:
    """Start the server and the clients, measure the steady window, stop everything.
    The server's CPU is its process's and its children's (``serve --workers``);
    ``on_ready`` gets its pid once it answers, ``on_window`` "began" and "ended" at the
    window's ends; ``spread`` is for ``media_peer.py``."""
    url = f"http://127.0.0.1:{port}"
    server_log = work / f"{design}-server.log"
    with server_log.open("wb") as handle:
        server = await asyncio.create_subprocess_exec(
            *server_cmd,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=handle,
            stderr=asyncio.subprocess.STDOUT,
        )
    clients: list[ClientProcess] = []
    result = Measurement(consultations, clients=len(specs))
    try:
        await wait_ready(url + health, server)
        if on_ready is not None:
            on_ready(server.pid)
        count = max(1, min(args.client_processes or consultations, len(specs)))
        for n in range(count):
            clients.append(
                await ClientProcess.start(
                    design=design,
                    url=url,
                    media=media,
                    specs=specs[n::count],
                    spec_path=work / f"{design}-clients-{n}.json",
                    log=work / f"{design}-clients-{n}.log",
                    ready_seconds=args.ready_seconds,
                    record=not args.unrecorded,
                    spread=spread,
                )
            )
        for process, message in zip(
            clients,
            await asyncio.gather(*(c.read(args.ready_seconds + 60) for c in clients)),
            strict=True,
        ):
            if message["event"] == "ready":
                result.ready += process.clients
            else:
                result.ready += process.clients - len(message["clients"])
                result.failures += message["clients"]
        await asyncio.sleep(args.settle)
        began = time.monotonic()
        if on_window is not None:
            on_window("began")
        server_before = tree_cpu_times(server.pid or 0)
        clients_before = sum(c.cpu() for c in clients)
        machine_before, own_before = machine_cpu(), cpu_seconds(os.getpid())
        await asyncio.sleep(args.seconds)
        ended = time.monotonic()
        server_after = tree_cpu_times(server.pid or 0)
        if on_window is not None:
            on_window("ended")
        result.clients_cpu = sum(c.cpu() for c in clients) - clients_before
        result.seconds = ended - began
        result.server_cpu = sum(server_after) - sum(server_before)
        result.server_system_cpu = server_after[1] - server_before[1]
        result.other_cpu = (
            machine_cpu()
            - machine_before
            - (cpu_seconds(os.getpid()) - own_before)
            - result.server_cpu
            - result.clients_cpu
        )
        await asyncio.sleep(GRACE)  # frames sent in the window still on their way
        logs = await frame_logs(clients, began, ended)
        if args.dump:
            write_json(
                Path(f"{args.dump}-{design}.json"), {"began": began, "ended": ended, "logs": logs}
            )
        tally(result, logs, began=began, ended=ended, keeps_timestamps=design == "telemed")
        for process in clients:
            await process.send("stop")
        for process in clients:
            with contextlib.suppress(TimeoutError, RuntimeError):
                await process.read(30)
    except Exception:
        show_logs([server_log, *(work / f"{design}-clients-{n}.log" for n in range(len(clients)))])
        raise
    finally:
        for process in clients:
            await stop_process(process.process, seconds=10)
        await stop_process(server)
    result.log_errors = error_lines(server_log)
    return result


def tally(
    result: Measurement,
    logs: list[dict[str, Any]],
    *,
    began: float,
    ended: float,
    keeps_timestamps: bool,
) -> None:
    """Frames sent in the window, delivered, and their delays: each client's frames
    against what the other participant of its room received."""
    rooms: dict[str, list[dict[str, Any]]] = {}
    for log in logs:
        rooms.setdefault(log["room"], []).append(log)
        result.keyframe_requests += log["keyframe_requests"]
    for members in rooms.values():
        for publisher in members:
            for viewer in members:
                if viewer is publisher:
                    continue
                for kind in KINDS:
                    sent = publisher["sent"].get(kind, {"first": 0, "times": []})
                    received = viewer["received"].get(kind, {"times": [], "timestamps": []})
                    delivery = match_frames(
                        kind,
                        sent,
                        received,
                        began=began,
                        ended=ended,
                        keeps_timestamps=keeps_timestamps,
                    )
                    result.sent[kind] += delivery.sent
                    result.received[kind] += delivery.delivered
                    result.latencies[kind] += delivery.latencies
                    result.unmatched += not delivery.aligned
                    result.per_client.append(
                        {
                            "from": publisher["name"],
                            "to": viewer["name"],
                            "room": publisher["room"][:8],
                            "kind": kind,
                            "sent": delivery.sent,
                            "delivered": delivery.delivered,
                            "matched": delivery.aligned,
                            "max_delay_ms": round(max(delivery.latencies, default=0) * 1000),
                        }
                    )


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data))


def error_lines(log: Path) -> list[str]:
    """Lines of the server's log that tell of an error (it logs at WARNING and above)."""
    text = log.read_text(errors="replace")
    words = ("ERROR", "Traceback", "Error", "Exception")
    return [
        line
        for line in text.splitlines()
        if line[:1].strip() and any(word in line for word in words)
    ]


def show_logs(paths: list[Path]) -> None:
    for path in paths:
        print(f"--- {path.name}", file=sys.stderr)
        print(path.read_text(errors="replace")[-3000:], file=sys.stderr)


def recordings(root: Path) -> RecordingFiles:
    """The ``.webm`` files under ``root``, and their packets by kind (demuxed, not decoded)."""
    found = RecordingFiles()
    for path in sorted(root.rglob("*.webm")):
        found.files += 1
        found.size += path.stat().st_size
        try:
            with av.open(str(path)) as container:
                for packet in container.demux():
                    if packet.size and packet.stream.type in found.packets:
                        found.packets[packet.stream.type] += 1
        except av.FFmpegError:
            found.unreadable += 1
    return found


# -- the run -------------------------------------------------------------------------------


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--consultations", type=int, default=4, help="K, recorded 1:1 calls")
    parser.add_argument("--seconds", type=float, default=20, help="the measured window")
    parser.add_argument("--settle", type=float, default=5, help="seconds before the window")
    parser.add_argument(
        "--client-processes", type=int, default=0, help="processes for the 2K clients (K)"
    )
    parser.add_argument(
        "--stock-consultations", type=int, default=0, help="K for the stock design (same K)"
    )
    parser.add_argument("--ready-seconds", type=float, default=45)
    parser.add_argument("--unrecorded", action="store_true", help="nobody records (both designs)")
    parser.add_argument("--design", choices=("both", "telemed", "stock"), default="both")
    parser.add_argument("--detail", action="store_true", help="print each stream's counts")
    parser.add_argument("--dump", help="write the frame logs to DUMP-telemed.json, DUMP-stock.json")
    args = parser.parse_args()
    count = args.consultations
    stock_count = args.stock_consultations or count
    results: dict[str, Measurement] = {}
    with tempfile.TemporaryDirectory(prefix="telemed-media-bench-") as tmp:
        work = Path(tmp)
        media = work / "media.pickle"
        bitrate = encode_media(media)
        data_dir = work / "telemed"
        stock_out = work / "stock-recordings"
        if args.design in ("both", "telemed"):
            consultations = await prepare_telemed(data_dir, count)
            specs = [
                spec
                for n, c in enumerate(consultations)
                for spec in (
                    {
                        "name": f"p{n}",
                        "role": "patient",
                        "room": c.consultation_id,
                        "token": c.patient_token,
                    },
                    {
                        "name": f"d{n}",
                        "role": "doctor",
                        "room": c.consultation_id,
                        "token": c.doctor_token,
                    },
                )
            ]
            port = free_port()
            results["telemed"] = await measure(
                design="telemed",
                server_cmd=[sys.executable, "-m", "telemed", "serve", "--port", str(port)],
                env=server_env(data_dir),
                port=port,
                health="/healthz",
                specs=specs,
                consultations=count,
                args=args,
                media=media,
                work=work,
            )
        if args.design in ("both", "stock"):
            specs = [
                {"name": role, "role": role, "room": f"room{n}"}
                for n in range(stock_count)
                for role in ("patient", "doctor")
            ]
            port = free_port()
            results["stock"] = await measure(
                design="stock",
                server_cmd=[
                    sys.executable,
                    str(ROOT / "bench" / "stock_media_server.py"),
                    *("--port", str(port), "--out", str(stock_out)),
                    *(("--no-record",) if args.unrecorded else ()),
                ],
                env={},
                port=port,
                health="/healthz",
                specs=specs,
                consultations=stock_count,
                args=args,
                media=media,
                work=work,
            )
        files = {
            "telemed": recordings(data_dir / "recordings"),
            "stock": recordings(stock_out),
        }
    report(args, results, files, bitrate=bitrate, stock_count=stock_count)


def report(
    args: argparse.Namespace,
    results: dict[str, Measurement],
    files: dict[str, RecordingFiles],
    *,
    bitrate: float,
    stock_count: int,
) -> None:
    count = args.consultations
    recorded = "unrecorded" if args.unrecorded else "recorded"
    print(
        f"media bench: {count} {recorded} 1:1 consultations (stock: {stock_count}), "
        f"VP8 640x480@30 {bitrate / 1e6:.2f} Mbit/s + Opus both ways, "
        f"{args.seconds:g} s window after {args.settle:g} s settle; cores={os.cpu_count()}"
    )
    stock, ours = results.get("stock"), results.get("telemed")

    def cell(m: Measurement | None, value: float, fmt: str) -> str:
        return format(value, fmt) if m is not None else "-"

    rows: list[tuple[str, str, Any]] = [
        ("server CPU-s per consultation-s", ".4f", lambda m: m.cpu_per_consultation),
        ("server cores busy", ".3f", lambda m: m.server_cores),
        ("  of which system (kernel)", ".3f", lambda m: m.server_system_cpu / m.seconds),
        ("server CPU-ms per delivered frame", ".3f", lambda m: m.cpu_ms_per_delivered_frame),
        ("client cores busy (all clients)", ".3f", lambda m: m.clients_cpu / m.seconds),
        # Clamped: the clocks' ticks can make an idle rest of the machine a hair below 0.
        ("other processes' cores busy", ".3f", lambda m: max(0.0, m.other_cpu / m.seconds)),
        ("video frames delivered", ".4f", lambda m: m.delivered("video")),
        ("audio frames delivered", ".4f", lambda m: m.delivered("audio")),
        ("frames delivered", ".4f", lambda m: m.delivered()),
        ("video delay p50 ms", ".1f", lambda m: m.latency_ms("video", 0.5)),
        ("video delay p99 ms", ".1f", lambda m: m.latency_ms("video", 0.99)),
        ("video delay max ms", ".1f", lambda m: m.latency_ms("video", 1.0)),
        ("audio delay p50 ms", ".1f", lambda m: m.latency_ms("audio", 0.5)),
        ("audio delay p99 ms", ".1f", lambda m: m.latency_ms("audio", 0.99)),
        ("video frames sent", ".0f", lambda m: m.sent["video"]),
        ("audio frames sent", ".0f", lambda m: m.sent["audio"]),
        ("keyframe requests to publishers", ".0f", lambda m: m.keyframe_requests),
        ("streams counted, not matched", ".0f", lambda m: m.unmatched),
        ("clients ready", ".0f", lambda m: m.ready),
        ("server log error lines (whole run)", ".0f", lambda m: len(m.log_errors)),
    ]
    print(f"\n{'':34}{'stock':>12}{'telemed':>12}{'telemed/stock':>15}")
    for label, fmt, get in rows:
        a = get(stock) if stock else float("nan")
        b = get(ours) if ours else float("nan")
        ratio = b / a if stock and ours and a else float("nan")
        print(f"{label:34}{cell(stock, a, fmt):>12}{cell(ours, b, fmt):>12}{ratio:15.3f}")

    if ours is not None:
        print("\ntargets")
        per = ours.cpu_per_consultation
        print(
            f"  CPU per recorded consultation <= {TARGET_CORE_PER_CONSULTATION} core: "
            f"{per:.4f} ({1 / per:.0f} per core)  {verdict(per <= TARGET_CORE_PER_CONSULTATION)}"
        )
        if stock is not None:
            times = stock.cpu_per_consultation / per
            print(
                f"  stock CPU / telemed CPU >= {TARGET_CPU_RATIO:g}: {times:.1f}  "
                f"{verdict(times >= TARGET_CPU_RATIO)}"
            )
            per_frame = stock.cpu_ms_per_delivered_frame / ours.cpu_ms_per_delivered_frame
            print(f"  (per delivered frame, the stock server used {per_frame:.1f} times the CPU)")
        worst = min(ours.delivered("video"), ours.delivered("audio"))
        print(
            f"  frames delivered >= {TARGET_DELIVERED:.0%} (each kind): {worst:.2%}  "
            f"{verdict(worst >= TARGET_DELIVERED)}"
        )
    if stock is not None and (
        stock.server_cores > 0.8 * (os.cpu_count() or 1) - stock.clients_cpu / stock.seconds
        or stock.delivered() < 0.9
    ):
        print(
            f"  note: the stock server could not keep up (it used {stock.server_cores:.2f} "
            f"cores and delivered {stock.delivered():.1%} of the frames): its CPU per "
            "consultation-second is a lower bound of what the load needs, and so is the ratio"
        )
    for design, m in results.items():
        if m.other_cpu / m.seconds > OTHER_LOAD:
            print(
                f"  warning: other processes kept {m.other_cpu / m.seconds:.2f} cores busy in "
                f"the {design} window: the machine was not quiet, its figures are disturbed"
            )
        for line in m.log_errors[:3]:
            print(f"  {design} server log: {line[:160]}")
        if args.detail:
            for client in m.per_client:
                print(f"  {design} {json.dumps(client)}")
        for failure in m.failures:
            print(f"  {design}: a client was not ready: {json.dumps(failure)}")

    print("\nrecordings")
    for design, found in files.items():
        if design not in results:
            continue
        print(
            f"  {design}: {found.files} .webm files, {found.size / 1e6:.1f} MB, "
            f"{found.packets['video']} video and {found.packets['audio']} audio packets"
            + (f", {found.unreadable} unreadable" if found.unreadable else "")
        )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


if __name__ == "__main__":
    asyncio.run(main())
