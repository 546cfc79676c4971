"""Records a synthetic camera and microphone through a tapped aiortc receiver into a
RemuxRecorder, printing what it wrote every 100 ms, until it is killed.

    python -m tests.record_and_die OUT.webm
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpCodecParameters
from aiortc.jitterbuffer import JitterFrame

import tests.conftest  # noqa: F401  (the test helpers import each other through it)
from telemed.media.forwarding import FrameSink
from telemed.media.network import bind_media_addresses
from telemed.media.passthrough import tap_receiver
from telemed.media.recorder import RemuxRecorder
from tests.media_peers import SineMicrophone, SynthCamera


async def main(path: Path) -> None:
    bind_media_addresses(["127.0.0.1"])
    assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    recorder = RemuxRecorder(path, ("video", "audio"))

    def sink(kind: str) -> FrameSink:
        def write(_codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
            recorder.write(kind, frame)

        return write

    @server.on("track")
    def on_track(track: object) -> None:
        for transceiver in server.getTransceivers():
            if transceiver.receiver.track is track:
                tap_receiver(transceiver.receiver, sink(transceiver.kind))

    publisher.addTrack(SynthCamera())
    publisher.addTrack(SineMicrophone())
    await publisher.setLocalDescription(await publisher.createOffer())
    await server.setRemoteDescription(publisher.localDescription)
    await server.setLocalDescription(await server.createAnswer())
    await publisher.setRemoteDescription(server.localDescription)
    while True:
        await asyncio.sleep(0.1)
        print(recorder.counts.video, recorder.counts.audio, flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
