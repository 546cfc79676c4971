"""Session descriptions as text: what the room reads from and rewrites in SDP.

Pure parse/serialise, no I/O, as aiortc's own ``sdp.py``: the room
(``telemed.media.room``) checks that a participant sent a description at all
(``has_media``), drops the host candidates a server cannot resolve
(``without_mdns_candidates``), and offers each participant its own numbering of codecs
and header extensions again (``Numbering``), since aiortc numbers a new offer its own way.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

_EXTMAP = re.compile(r"^a=extmap:(\d+)(/\w+)? (\S+)(.*)$")
_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([^/\s]+)/(\d+)")
_APT = re.compile(r"^a=fmtp:(\d+) apt=(\d+)")
_PT_LINE = re.compile(r"^(a=(?:rtpmap|fmtp|rtcp-fb)):(\d+)(.*)$")


def _payload_types(sdp: str) -> tuple[dict[int, tuple[str, int]], dict[int, int]]:
    """An SDP's payload types (number → (codec name, clock rate)) and its RTX payload
    types' ``apt`` (number → the number they repeat)."""
    names: dict[int, tuple[str, int]] = {}
    apt: dict[int, int] = {}
    for line in sdp.splitlines():
        if match := _RTPMAP.match(line):
            names[int(match.group(1))] = (match.group(2).lower(), int(match.group(3)))
        elif match := _APT.match(line):
            apt[int(match.group(1))] = int(match.group(2))
    return names, apt


@dataclass
class Numbering:
    """How one side numbered codecs and header extensions in its description, to offer
    it the same numbers again."""

    payload_types: dict[tuple[str, int], int]
    """(codec name, clock rate) → payload type; RTX by ("rtx:" + its codec's name)."""
    extensions: dict[str, int]
    """Header extension URI → its id."""

    @classmethod
    def of(cls, sdp: str) -> Numbering:
        """The numbering of ``sdp``; where it numbers one codec or extension more than
        once, the first number counts (an RTX payload type only if it repeats that one)."""
        names, apt = _payload_types(sdp)
        payload_types: dict[tuple[str, int], int] = {}
        extensions: dict[str, int] = {}
        for line in sdp.splitlines():
            if match := _EXTMAP.match(line):
                extensions.setdefault(match.group(3), int(match.group(1)))
        for pt, (name, clock) in names.items():
            if name == "rtx":
                continue
            payload_types.setdefault((name, clock), pt)
        for pt, target in apt.items():
            if target in names and payload_types.get(names[target]) == target:
                payload_types.setdefault(("rtx:" + names[target][0], names[target][1]), pt)
        return cls(payload_types, extensions)

    def apply(self, sdp: str) -> str:
        """``sdp`` (an offer of ours) with these numbers; anything this side never
        numbered gets a number it does not use."""
        names, apt = _payload_types(sdp)
        used = set(self.payload_types.values())
        spare = (n for n in range(96, 128) if n not in used)
        renumber: dict[int, int] = {}
        for pt, (name, clock) in names.items():
            key = (name, clock)
            if name == "rtx" and pt in apt and apt[pt] in names:
                key = ("rtx:" + names[apt[pt]][0], names[apt[pt]][1])
            renumber[pt] = self.payload_types.get(key) or next(spare)
        taken = set(self.extensions.values())
        free_ids = (n for n in range(1, 15) if n not in taken)
        ids = dict(self.extensions)
        lines = []
        for line in sdp.split("\r\n"):
            if line.startswith("m=audio ") or line.startswith("m=video "):
                head, _, formats = line.partition(" UDP/TLS/RTP/SAVPF ")
                if formats:
                    numbers = " ".join(str(renumber.get(int(f), int(f))) for f in formats.split())
                    line = f"{head} UDP/TLS/RTP/SAVPF {numbers}"
            elif match := _PT_LINE.match(line):
                pt = renumber.get(int(match.group(2)), int(match.group(2)))
                rest = match.group(3)
                if apt_match := re.match(r" apt=(\d+)(.*)", rest):
                    target = renumber.get(int(apt_match.group(1)), int(apt_match.group(1)))
                    rest = f" apt={target}{apt_match.group(2)}"
                line = f"{match.group(1)}:{pt}{rest}"
            elif match := _EXTMAP.match(line):
                uri = match.group(3)
                if uri not in ids:
                    ids[uri] = next(free_ids)
                line = f"a=extmap:{ids[uri]}{match.group(2) or ''} {uri}{match.group(4)}"
            lines.append(line)
        return "\r\n".join(lines)


def without_mdns_candidates(sdp: str) -> str:
    """Drop a browser's ``….local`` host candidates. A browser hides its addresses behind
    mDNS names while it has no camera permission; a server cannot resolve them (aioice
    would try multicast DNS, delaying the answer), and needs them not: the browser's
    connectivity checks reveal its address to the server (peer-reflexive candidates)."""
    lines = sdp.split("\r\n")
    kept = [line for line in lines if not (line.startswith("a=candidate:") and ".local " in line)]
    return "\r\n".join(kept)


def ice_ufrag(sdp: str) -> str | None:
    """The ICE username fragment of a session description (its first ``a=ice-ufrag``:
    bundled, every section has the same)."""
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line.removeprefix("a=ice-ufrag:").strip()
    return None


def trickled_candidate(
    line: str, *, sdp_mid: str | None, sdp_mline_index: int | None
) -> RTCIceCandidate | None:
    """A candidate a client trickled (``candidate:…`` as ``RTCIceCandidate.candidate``
    gives it), or None for one the server does without: a browser's mDNS name (see
    ``without_mdns_candidates``). Raises ValueError for a line that is not a candidate."""
    text = line.strip().removeprefix("a=").removeprefix("candidate:")
    parts = text.split()
    if len(parts) < 8 or parts[6] != "typ":  # foundation component transport priority ip port typ t
        raise ValueError("not an ICE candidate")
    if parts[4].endswith(".local"):
        return None
    ipaddress.ip_address(parts[4])  # a name would be looked up: only addresses are taken
    if parts[2].lower() not in ("udp", "tcp"):
        raise ValueError("not a UDP or TCP candidate")
    candidate = candidate_from_sdp(text)
    candidate.sdpMid = sdp_mid
    candidate.sdpMLineIndex = sdp_mline_index
    return candidate


def has_media(sdp: str) -> bool:
    """Whether ``sdp`` looks like a session description with a media section at all:
    what a client sends is checked before aiortc parses it (its parser takes much that is
    not SDP without complaint)."""
    lines = sdp.splitlines()
    return bool(lines) and lines[0].strip() == "v=0" and any(x.startswith("m=") for x in lines)
