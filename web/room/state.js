// The room's one shared record, published as window.telemedRoom: what the tests, the
// benchmark and an embedding host read. Created once by room.js and handed to every room
// module that changes it; no module keeps a copy of these fields.
export function publishState() {
  return (window.telemedRoom = {
    phase: "starting", // prejoin, joining, joined, reconnecting, ended, left, refused, failed
    lang: "ru",
    role: null, // from GET /api/v1/me/preferences: "patient" or "doctor"
    userId: null,
    camera: "unknown", // what getUserMedia gave: granted, denied, no_device, busy, unsupported
    microphone: "unknown",
    muted: false,
    cameraOff: false,
    remoteFrames: 0,
    remoteTracks: 0,
    micLevel: 0,
    others: {}, // user id → {role, present, media} (the server's views)
    recording: false,
    consented: false,
    chat: 0, // messages shown
    unread: 0, // messages come while the chat panel was closed (a phone)
    speakerTests: 0, // the check's speaker test played
    joins: 0, // room:join calls that succeeded (a reconnection joins again)
    reconnections: 0, // network drops noticed (each shows «reconnecting», then joins again)
    moves: 0, // room:rejoin received: the room moved to another server process
    trickled: 0, // ICE candidates sent after an offer (rtc:candidate) and taken
    receiving: {}, // user id → {video, reason}: who gets audio only, and why (media:receiving)
    audioOnly: false, // the user chose audio only (media:audio_only)
    interrupted: {}, // user id → true while the server gets no media from them (media:connection)
    stats: null, // this page's last getStats totals (room/quality.js)
    figures: null, // the figures of the last interval (what media:stats reported)
    levels: {}, // user id → good, weak or poor (media:quality)
    mediaInterrupted: 0, // times this page's own media connection was interrupted (ICE disconnected)
    stalls: 0, // connections given up because nothing came any more while the others sent
    kept: 0, // media connections kept through a dropped socket (carrying media again at once)
    joinClickedAt: null, // performance.now() of the #join click
    firstRemoteFrameAt: null, // performance.now() of the first remote video frame
    // performance.now() of each step of the first join: socket, joined, described (our offer),
    // answered (rtc:offer's ack), offered (the server's rtc:offer), connected (media).
    steps: {},
    error: null,
    // The media connection's use of TURN (docs/media.md, "STUN and TURN"): relay (relay
    // candidates only), fallbacks (times the page took relay by itself), failure
    // ("refused": the TURN server did not take the credentials; "unreachable"; or null).
    turn: null,
  });
}

// The first time of each step only: a reconnection does not move them.
export function step(state, name) {
  if (!(name in state.steps)) state.steps[name] = performance.now();
}
