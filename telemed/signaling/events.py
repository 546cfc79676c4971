"""Socket.IO event names and their payload models (the real-time protocol).

Client → server events are imperative and acknowledged with ``{"ok": true, "data": …}``
or ``{"ok": false, "error": {code, message, details}}``; server → client events are in
the past tense, and each is a ``live.ServerEvent`` that carries its own name: the server
sends nothing else (``live.event``). Payload models forbid unknown fields.
``docs/realtime.md`` is generated from ``PROTOCOL`` below.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from telemed.chat.models import ChatMessagePublic
from telemed.live import ServerEvent
from telemed.media.checks import Permission
from telemed.media.checks import State as CheckState
from telemed.notify.models import NotificationPublic
from telemed.scheduling.models import Consultation


class EventModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Subscribe(EventModel):
    consultation_id: uuid.UUID
    after_seq: int = Field(default=0, ge=0, description="The last seq the client holds")


class Unsubscribe(EventModel):
    consultation_id: uuid.UUID


class ChatSend(EventModel):
    consultation_id: uuid.UUID
    client_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Chosen by the client, unique per message: a resend returns the stored one",
    )
    body: str = Field(max_length=4000)
    document_ids: list[uuid.UUID] = Field(default_factory=list, max_length=10)


class ChatRead(EventModel):
    consultation_id: uuid.UUID
    seq: int = Field(ge=0)


class ChatTyping(EventModel):
    consultation_id: uuid.UUID


class ConsultationView(BaseModel):
    """The part of a consultation every participant may see, for live updates; clients
    fetch the rest with ``GET /consultations/{id}``."""

    id: uuid.UUID
    route: str
    state: str
    version: int
    doctor_id: uuid.UUID | None
    starts_at: str | None
    ends_at: str | None
    updated_at: str

    @classmethod
    def of(cls, consultation: Consultation) -> Self:
        return cls(
            id=consultation.id,
            route=consultation.route.value,
            state=consultation.state.value,
            version=consultation.version,
            doctor_id=consultation.doctor_id,
            starts_at=consultation.starts_at.isoformat() if consultation.starts_at else None,
            ends_at=consultation.ends_at.isoformat() if consultation.ends_at else None,
            updated_at=consultation.updated_at.isoformat(),
        )


class ConsultationUpdated(ConsultationView, ServerEvent):
    event = "consultation:updated"


class Subscribed(BaseModel):
    consultation: ConsultationView
    messages: list[ChatMessagePublic]
    has_more: bool = Field(
        description="More missed messages than one answer holds: subscribe again with the "
        "last seq received"
    )
    read: dict[str, int] = Field(description="How far each participant has read (user id → seq)")
    online: list[uuid.UUID] = Field(description="Participants connected now")
    writable: bool


class MessageAck(BaseModel):
    message: ChatMessagePublic


class ChatMessageCreated(ChatMessagePublic, ServerEvent):
    event = "chat:message_created"


class ReadUpdated(ServerEvent):
    event = "chat:read_updated"

    consultation_id: uuid.UUID
    user_id: uuid.UUID
    seq: int


class TypingStarted(ServerEvent):
    event = "chat:typing_started"

    consultation_id: uuid.UUID
    user_id: uuid.UUID


class PresenceChanged(ServerEvent):
    event = "presence:changed"

    consultation_id: uuid.UUID
    online: list[uuid.UUID]


class NotificationCreated(NotificationPublic, ServerEvent):
    event = "notification:created"


class Empty(BaseModel):
    pass


# The video room (telemed.media).

MAX_SDP = 64 * 1024


class RoomJoin(EventModel):
    consultation_id: uuid.UUID


class RoomLeave(EventModel):
    consultation_id: uuid.UUID


class ConsultationEnd(EventModel):
    consultation_id: uuid.UUID


class CameraView(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    permission: Permission = Field(description="What the browser said (`media:report`)")
    enabled: bool = Field(description="Switched on by the user (`media:report`); off: no picture")
    state: CheckState = Field(
        description="What the server saw: `waiting` (no media connection yet), `checking`, "
        "`ok`, `black` (a black picture), `no_frames`, `missing` (no camera track sent)"
    )
    frames: int = Field(description="Frames decoded during the check")
    width: int | None
    height: int | None
    fps: float | None


class MicrophoneView(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    permission: Permission
    enabled: bool = Field(description="Switched on by the user; off: muted")
    state: CheckState = Field(
        description="`waiting`, `checking`, `ok`, `silent` (below -50 dBFS), `no_frames`, "
        "`missing` (no microphone track sent)"
    )
    frames: int
    level_dbfs: float | None = Field(description="The loudest 20 ms of the check")


class MediaView(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    camera: CameraView
    microphone: MicrophoneView


class RoomParticipant(BaseModel):
    user_id: uuid.UUID
    role: Literal["patient", "doctor"]
    media: MediaView
    video: bool = Field(default=True, description="Whether it is sent the others' video")
    audio_only_reason: Literal["network", "chosen"] | None = Field(
        default=None, description="Why it gets audio only (`media:receiving`)"
    )
    interrupted: bool = Field(
        default=False, description="Its media stopped coming (`media:connection`)"
    )


class MediaReport(EventModel):
    consultation_id: uuid.UUID
    camera: Permission = Field(description="The outcome of getUserMedia for the camera")
    microphone: Permission
    camera_enabled: bool = Field(
        default=True, description="False while the user has switched the camera off"
    )
    microphone_enabled: bool = Field(default=True, description="False while the user is muted")


class MediaStatusChanged(MediaView, ServerEvent):
    """A participant's camera and microphone (``MediaView``), in the room's words."""

    event = "media:status_changed"

    consultation_id: uuid.UUID
    user_id: uuid.UUID


class RecordingConsent(EventModel):
    consultation_id: uuid.UUID
    granted: bool


class RecordingCommand(EventModel):
    consultation_id: uuid.UUID


class ConsentView(BaseModel):
    user_id: uuid.UUID
    granted: bool


class RecordingView(BaseModel):
    active: bool = Field(description="The room is being recorded now")
    consents: list[ConsentView] = Field(description="Each participant's consent, if given")


class RecordingStateChanged(ServerEvent):
    event = "recording:state_changed"

    consultation_id: uuid.UUID
    recording: RecordingView


class RoomDoctor(BaseModel):
    name: str = Field(description="The consultation's doctor, as the room shows them")
    specialty: str


class RoomJoined(BaseModel):
    consultation: ConsultationView
    doctor: RoomDoctor | None = Field(
        default=None, description="The consultation's doctor (none while unassigned)"
    )
    recording: RecordingView
    participants: list[RoomParticipant] = Field(description="Who is in the room, you too")
    connection_kept: bool = Field(
        default=False,
        description="A join again from a new socket (the old one dropped): the server "
        "still holds your media connection, up and carrying media. Keep yours if it "
        "carries media again; otherwise (and always when false) send `rtc:offer`",
    )
    ice_servers: list[dict[str, Any]] = Field(
        description="For `new RTCPeerConnection({iceServers})`: the configured servers, and "
        "with TELEMED_TURN_SECRET a TURN entry with credentials minted for this join"
    )


class SessionDescription(EventModel):
    consultation_id: uuid.UUID
    sdp: str = Field(min_length=1, max_length=MAX_SDP)


class IceCandidate(EventModel):
    consultation_id: uuid.UUID
    candidate: str = Field(
        max_length=1024,
        description="`RTCIceCandidate.candidate` as the browser gives it "
        '(`candidate:…`); "" for the end of candidates',
    )
    sdp_mid: str | None = Field(default=None, max_length=32)
    sdp_mline_index: int | None = Field(default=None, ge=0, le=64)
    username_fragment: str | None = Field(
        default=None,
        max_length=256,
        description="`usernameFragment`: a candidate of an earlier connection is ignored",
    )


class AudioOnly(EventModel):
    consultation_id: uuid.UUID
    active: bool = Field(description="true: send me no video; false: video again")


class MediaReceiving(ServerEvent):
    event = "media:receiving"

    consultation_id: uuid.UUID
    user_id: uuid.UUID = Field(description="The participant whose reception changed")
    video: bool = Field(description="Whether it is sent the others' video")
    reason: Literal["network", "chosen"] | None = Field(
        description="Why not: its link carries too little (below "
        "`TELEMED_MEDIA_VIDEO_FLOOR_KBPS`), or it chose audio only"
    )


Level = Literal["good", "weak", "poor"]


class MediaStats(EventModel):
    consultation_id: uuid.UUID
    level: Level = Field(description="The client's verdict on the last interval's figures")
    rtt_ms: float | None = Field(default=None, ge=0, le=60_000)
    loss: float | None = Field(default=None, ge=0, le=1, description="Of packets received")
    jitter_ms: float | None = Field(default=None, ge=0, le=60_000)
    available_bitrate: int | None = Field(
        default=None, ge=0, le=1_000_000_000, description="Outgoing estimate, bits/s"
    )
    video_fps: float | None = Field(default=None, ge=0, le=240, description="Frames decoded")
    concealed: float | None = Field(
        default=None, ge=0, le=1, description="Audio samples concealed (lost), of those received"
    )
    freezes: int = Field(default=0, ge=0, le=1_000_000, description="Video freezes so far")
    freeze_seconds: float = Field(default=0, ge=0, le=1_000_000)
    relay: bool = Field(default=False, description="The connection goes through TURN")


class MediaQuality(ServerEvent):
    event = "media:quality"

    consultation_id: uuid.UUID
    user_id: uuid.UUID
    level: Level = Field(
        description="`good`; `weak` (round trip ≥ 400 ms, loss or concealed audio ≥ 3 %, "
        "under 15 frames a second); `poor` (≥ 1 s, ≥ 10 %, under 5 frames a second)"
    )


class MediaConnection(ServerEvent):
    event = "media:connection"

    consultation_id: uuid.UUID
    user_id: uuid.UUID
    state: Literal["interrupted", "connected"] = Field(
        description="`interrupted`: nothing has come from the participant for 1 s (its "
        "network dropped; show «reconnecting», not a frozen picture); `connected`: its "
        "media comes again"
    )


class Answer(BaseModel):
    sdp: str = Field(description="The server's answer")


class ParticipantJoined(ServerEvent):
    event = "room:participant_joined"

    consultation_id: uuid.UUID
    user_id: uuid.UUID
    role: Literal["patient", "doctor"]


class ParticipantLeft(ServerEvent):
    event = "room:participant_left"

    consultation_id: uuid.UUID
    user_id: uuid.UUID


class RoomRejoin(ServerEvent):
    event = "room:rejoin"

    consultation_id: uuid.UUID
    reason: Literal["node_stopping", "node_lost", "moved"] = Field(
        description="`node_stopping`: the server process holding the room is stopping; "
        "`node_lost`: it stopped answering; `moved`: the room is now held elsewhere"
    )


class TrackLabel(BaseModel):
    mid: str = Field(description="The transceiver's mid in the SDP")
    user_id: uuid.UUID = Field(description="Whose camera or microphone it carries")
    kind: Literal["audio", "video"]


class ServerOffer(ServerEvent):
    event = "rtc:offer"

    consultation_id: uuid.UUID
    sdp: str
    tracks: list[TrackLabel] = Field(
        description="Every track the server sends you, by mid: match `RTCTrackEvent."
        "transceiver.mid` to show each participant's video in its place"
    )


@dataclass(frozen=True)
class EventSpec:
    name: str
    direction: Literal["client→server", "server→client"]
    payload: type[BaseModel]
    ack: type[BaseModel] | None
    description: str
    errors: tuple[str, ...] = ()


def sent(model: type[ServerEvent], description: str) -> EventSpec:
    """A server → client event, named by its model."""
    return EventSpec(model.event, "server→client", model, None, description)


PROTOCOL: tuple[EventSpec, ...] = (
    EventSpec(
        "consultation:subscribe",
        "client→server",
        Subscribe,
        Subscribed,
        "Watch a consultation (its chat, state and presence); returns what the client "
        "missed after `after_seq`.",
        ("invalid_input", "not_found", "unauthenticated"),
    ),
    EventSpec(
        "consultation:unsubscribe",
        "client→server",
        Unsubscribe,
        Empty,
        "Stop watching a consultation.",
        ("invalid_input",),
    ),
    EventSpec(
        "chat:send",
        "client→server",
        ChatSend,
        MessageAck,
        "Send a message. It is stored (with the next `seq`) before the ack and before "
        "anyone sees it; a resend with the same `client_id` returns the stored message.",
        ("invalid_input", "not_found", "invalid_state", "rate_limited"),
    ),
    EventSpec(
        "chat:read",
        "client→server",
        ChatRead,
        ReadUpdated,
        "Mark the chat read up to `seq`.",
        ("invalid_input", "not_found"),
    ),
    EventSpec(
        "chat:typing",
        "client→server",
        ChatTyping,
        Empty,
        "Tell the other participant you are typing.",
        ("invalid_input", "not_found"),
    ),
    sent(
        ChatMessageCreated,
        "A message was stored in a watched consultation.",
    ),
    sent(
        ReadUpdated,
        "A participant read the chat up to `seq`.",
    ),
    sent(
        TypingStarted,
        "The other participant is typing.",
    ),
    sent(
        ConsultationUpdated,
        "A consultation changed (sent to its watchers, its patient and its centre's "
        "doctors); fetch the details with `GET /consultations/{id}`.",
    ),
    sent(
        NotificationCreated,
        "A new notification for the user (the bell).",
    ),
    sent(
        PresenceChanged,
        "Who of a watched consultation's participants is connected.",
    ),
    EventSpec(
        "room:join",
        "client→server",
        RoomJoin,
        RoomJoined,
        "Enter the consultation's video room: its patient and doctor, from "
        "`TELEMED_ROOM_OPENS_MINUTES` before the start until the end of its time (plus "
        "`TELEMED_NO_SHOW_GRACE_MINUTES`) while it is scheduled, and while it is in "
        "progress. The patient may wait for the doctor; "
        "the doctor's entry starts the consultation. Joining again (a reload, another "
        "device) takes over the participant's place. Then send `rtc:offer`.",
        ("invalid_input", "not_found", "forbidden", "invalid_state", "too_late", "unavailable"),
    ),
    EventSpec(
        "rtc:offer",
        "client→server",
        SessionDescription,
        Answer,
        "Your offer (with your camera and microphone, or receive-only): the server makes a "
        "new media connection for you, replacing the one you had (a rejoin after a broken "
        "connection), and answers. VP8 and Opus only. What you receive from the others "
        "comes in the server's `rtc:offer`s.",
        ("invalid_input", "invalid_state", "unavailable"),
    ),
    EventSpec(
        "rtc:candidate",
        "client→server",
        IceCandidate,
        Empty,
        "Trickle ICE: each candidate your connection gathers after its `rtc:offer`, once "
        "that offer is answered (send the offer at once, without waiting for gathering). "
        "mDNS (`….local`) candidates are ignored, as are those of an earlier connection; "
        'the end of candidates (`""`) is taken and changes nothing.',
        ("invalid_input", "invalid_state", "unavailable"),
    ),
    EventSpec(
        "rtc:answer",
        "client→server",
        SessionDescription,
        Empty,
        "Your answer to the server's last `rtc:offer`.",
        ("invalid_input", "invalid_state", "unavailable"),
    ),
    sent(
        ServerOffer,
        "The server adds what you receive (a participant arrived or published): set it as "
        "the remote description and reply `rtc:answer`.",
    ),
    EventSpec(
        "media:audio_only",
        "client→server",
        AudioOnly,
        Empty,
        "Audio only: the server sends you none of the others' video (`active: false`: "
        "video again). Stop sending your own camera too if you want to save data: that "
        "is the client's to do.",
        ("invalid_input", "invalid_state", "unavailable"),
    ),
    sent(
        MediaReceiving,
        "A participant's video stopped or came back: its link carries too little for "
        "video (it gets audio only; the server tries video again every few seconds and "
        "keeps it once the link carries it), or it chose so. Sent to everyone in the room.",
    ),
    sent(
        MediaConnection,
        "A participant's media stopped coming, or came back. Its client recovers by "
        "itself (the connection comes back, or it connects anew); the others show "
        "«reconnecting» meanwhile. Sent to everyone in the room.",
    ),
    EventSpec(
        "media:stats",
        "client→server",
        MediaStats,
        Empty,
        "Every few seconds: the call's figures from `getStats` over the last interval "
        "(freezes: the running totals) and the client's level for them. The server adds "
        "its own figures of the participant's upload and keeps the consultation's quality "
        "summary.",
        ("invalid_input", "invalid_state", "unavailable"),
    ),
    sent(
        MediaQuality,
        "A participant's call quality changed level: show it in words, for oneself and "
        "for the other side. Sent to everyone in the room.",
    ),
    EventSpec(
        "media:report",
        "client→server",
        MediaReport,
        Empty,
        "What `getUserMedia` gave: `granted`, `denied` (NotAllowedError), `no_device` "
        "(NotFoundError), `busy` (NotReadableError), `unsupported` (no mediaDevices: not a "
        "secure context). Shown to the room with the server's own check.",
        ("invalid_input", "invalid_state", "unavailable"),
    ),
    sent(
        MediaStatusChanged,
        "A participant's camera and microphone: what its browser reported and what the "
        "server saw in the first seconds of each track (frames, resolution, frame rate, a "
        "black picture, the sound level). Sent when a connection starts (`checking` or "
        "`missing`), when each check ends, and on each `media:report`.",
    ),
    EventSpec(
        "recording:consent",
        "client→server",
        RecordingConsent,
        Empty,
        "Consent to the recording of this consultation (`granted: true`) or withdraw it "
        "(`false`: a running recording stops). Consent belongs to the user: it survives a "
        "rejoin. Audited.",
        ("invalid_input", "invalid_state", "unavailable"),
    ),
    EventSpec(
        "recording:start",
        "client→server",
        RecordingCommand,
        Empty,
        "The doctor starts the recording; everyone in the room must have consented "
        "(`invalid_state` lists `without_consent`). Each participant's audio and video go "
        "into a WebM file of their own, as sent (no transcoding). Someone joining without "
        "consent stops it.",
        ("invalid_input", "forbidden", "invalid_state", "unavailable"),
    ),
    EventSpec(
        "recording:stop",
        "client→server",
        RecordingCommand,
        Empty,
        "The doctor stops the recording (the files are closed and listed at "
        "`GET /consultations/{id}/recordings`).",
        ("invalid_input", "forbidden", "invalid_state", "unavailable"),
    ),
    sent(
        RecordingStateChanged,
        "The recording started or stopped, or a consent changed.",
    ),
    EventSpec(
        "room:leave",
        "client→server",
        RoomLeave,
        Empty,
        "Leave the room (the consultation goes on; you may join again). A socket that "
        "closes without it keeps its place for `TELEMED_ROOM_RETURN_SECONDS` (15), in case "
        "its network dropped, and the others see it reconnecting meanwhile.",
        ("invalid_input",),
    ),
    EventSpec(
        "consultation:end",
        "client→server",
        ConsultationEnd,
        Empty,
        "The doctor ends the consultation: every media connection is closed; the "
        "conclusion comes next.",
        ("invalid_input", "not_found", "forbidden", "invalid_state"),
    ),
    sent(
        ParticipantJoined,
        "Someone entered the room.",
    ),
    sent(
        ParticipantLeft,
        "Someone left the room (or lost the connection to it).",
    ),
    sent(
        RoomRejoin,
        "The room is moving to another server process: close the media connection and "
        "send `room:join` again, then a new `rtc:offer` (the chat and the socket stay). "
        "Everyone in the room gets it; the room continues, recording included, where "
        "the join places it.",
    ),
)


SERVER_EVENTS = {spec.name for spec in PROTOCOL if spec.direction == "server→client"}
"""The events the server sends; a test checks that they are exactly ``live.EVENTS``."""
