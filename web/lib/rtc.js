// One media connection of the browser to the server (docs/media.md), from creation to
// close: the page's offer with its own tracks, sent at once and its candidates trickled
// after the answer (trickle ICE), the server's renegotiation (its rtc:offer when it adds
// what this page receives, our answer), and every state change logged with
// console.debug, as aiortc's example client logs them. Signalling is the caller's:
// `exchange(sdp)` sends our description and resolves with the server's answer SDP (or
// whatever it acknowledges); `trickle(candidate)` sends one candidate (null: the end).
//
// Relay only (docs/media.md, "STUN and TURN"): a connection made with
// `iceTransportPolicy: "relay"` uses TURN servers' addresses alone, for networks where
// nothing else passes. The page asks for it with ?ice=relay, or on its own after a
// connection with every candidate failed to come up; `onUnconnected(link)` says so, and
// `turnFailure()` tells what the TURN servers answered.
const GATHERING_LIMIT_MS = 3000;
// How long a new connection may take to connect before it counts as failed (a browser
// takes half a minute to give up by itself).
const CONNECT_LIMIT_MS = 8000;
// icecandidateerror codes meaning the TURN server refused our credentials (RFC 8656:
// 401 Unauthorized, 403 Forbidden, 437 Allocation Mismatch, 441 Wrong Credentials).
const REFUSED = [401, 403, 437, 441];
const WATCHED = [
  ["connectionstatechange", "connectionState"],
  ["iceconnectionstatechange", "iceConnectionState"],
  ["icegatheringstatechange", "iceGatheringState"],
  ["signalingstatechange", "signalingState"],
];

function gathered(connection) {
  return new Promise((resolve) => {
    if (connection.iceGatheringState === "complete") return resolve();
    const done = () => {
      if (connection.iceGatheringState === "complete") {
        connection.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    connection.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, GATHERING_LIMIT_MS); // what was gathered by then will do
  });
}

// Whether the page was asked to use relay candidates only (`?ice=relay`).
export function relayAsked(search = location.search) {
  return new URLSearchParams(search).get("ice") === "relay";
}

// Whether `iceServers` name a TURN server (what a relay-only connection needs).
export function hasTurn(iceServers) {
  return iceServers.some((server) =>
    [].concat(server.urls).some((url) => /^turns?:/.test(url)),
  );
}

export class PeerLink {
  // stream: the local camera and microphone (or null); receiveVideo: ask for video even
  // when sending none; relay: TURN servers' candidates only. onTrack(event) for each
  // remote track; onStateChange(state) for the connection's state until close();
  // onUnconnected(link) once if it never connects (failed, not connected within
  // CONNECT_LIMIT_MS, or relay only and no relay candidate gathered), before the
  // onStateChange of that failure.
  constructor({
    iceServers = [], relay = false, stream = null, receiveVideo = false, onTrack, onStateChange, onUnconnected = () => {},
  }) {
    const iceTransportPolicy = relay ? "relay" : "all";
    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy, bundlePolicy: "max-bundle" });
    this.pc = pc;
    this.relay = relay;
    this.closed = false;
    this.connected = false; // ever
    this.unconnected = false;
    this.relayCandidates = 0;
    this.turnErrors = []; // {url, code, text} of each TURN server that answered an error
    this.onUnconnected = onUnconnected;
    for (const [event, property] of WATCHED) {
      pc.addEventListener(event, () => console.debug(`rtc: ${property} -> ${pc[property]}`));
    }
    pc.addEventListener("icecandidate", ({ candidate }) => {
      if (candidate && candidate.type === "relay") this.relayCandidates += 1;
    });
    pc.addEventListener("icecandidateerror", ({ url, errorCode, errorText }) => {
      console.debug(`rtc: ${url} answered ${errorCode} ${errorText}`);
      if (/^turns?:/.test(url || "")) this.turnErrors.push({ url, code: errorCode, text: errorText });
    });
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete" && this.relay && !this.relayCandidates) this.giveUp();
    });
    pc.addEventListener("track", (event) => onTrack(event));
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState === "connected") this.connected = true;
      if (pc.connectionState === "failed") this.giveUp();
      if (!this.closed) onStateChange(pc.connectionState);
    });
    if (stream) stream.getTracks().forEach((track) => pc.addTrack(track, stream));
    if (receiveVideo) pc.addTransceiver("video", { direction: "recvonly" });
    console.debug("rtc: created");
  }

  get connectionState() {
    return this.pc.connectionState;
  }

  // Why the TURN servers gave this connection no relay candidate: "refused" (they did
  // not take the credentials), "unreachable" (no answer, a TLS connection that failed,
  // or none gathered for a relay-only connection), or null (a relay candidate was
  // gathered, or the connection did not need one and no TURN server failed).
  turnFailure() {
    if (this.relayCandidates) return null;
    if (this.turnErrors.some((error) => REFUSED.includes(error.code))) return "refused";
    return this.turnErrors.length || this.relay ? "unreachable" : null;
  }

  // A connection that never came up: said once, unless closed or connected meanwhile.
  giveUp() {
    if (this.closed || this.connected || this.unconnected) return;
    this.unconnected = true;
    console.debug(`rtc: not connected (relay only: ${this.relay}, TURN: ${this.turnFailure()})`);
    this.onUnconnected(this);
  }

  // Our offer (a new connection), sent without waiting for ICE gathering; the answer is
  // applied unless closed meanwhile. Candidates gathered before the answer wait for it
  // (the server has no connection to add them to before), the others go at once.
  async offer(exchange, trickle) {
    const waiting = [];
    let answered = false;
    this.pc.addEventListener("icecandidate", ({ candidate }) => {
      if (this.closed || (candidate && !candidate.candidate)) return;
      if (answered) trickle(candidate);
      else waiting.push(candidate);
    });
    await this.pc.setLocalDescription(await this.pc.createOffer());
    setTimeout(() => this.giveUp(), CONNECT_LIMIT_MS);
    const answer = await exchange(this.pc.localDescription.sdp);
    if (this.closed) return;
    await this.pc.setRemoteDescription({ type: "answer", sdp: answer });
    answered = true;
    for (const candidate of waiting.splice(0)) trickle(candidate);
  }

  // The server's offer (a renegotiation): our answer is sent unless closed meanwhile.
  async answer(sdp, exchange) {
    if (this.closed) return;
    await this.pc.setRemoteDescription({ type: "offer", sdp });
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    await gathered(this.pc);
    if (!this.closed) await exchange(this.pc.localDescription.sdp);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.pc.close();
    console.debug("rtc: closed");
  }
}
