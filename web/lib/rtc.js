// One media connection of the browser to the server (docs/media.md), from creation to
// close: the page's offer with its own tracks, sent at once and its candidates trickled
// after the answer (trickle ICE), the server's renegotiation (its rtc:offer when it adds
// what this page receives, our answer), and every state change logged with
// console.debug, as aiortc's example client logs them. Signalling is the caller's:
// `exchange(sdp)` sends our description and resolves with the server's answer SDP (or
// whatever it acknowledges); `trickle(candidate)` sends one candidate (null: the end).
const GATHERING_LIMIT_MS = 3000;
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

export class PeerLink {
  // stream: the local camera and microphone (or null); receiveVideo: ask for video even
  // when sending none. onTrack(event) for each remote track; onStateChange(state) for
  // the connection's state until close().
  constructor({ iceServers = [], stream = null, receiveVideo = false, onTrack, onStateChange }) {
    const pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
    this.pc = pc;
    this.closed = false;
    for (const [event, property] of WATCHED) {
      pc.addEventListener(event, () => console.debug(`rtc: ${property} -> ${pc[property]}`));
    }
    pc.addEventListener("track", (event) => onTrack(event));
    pc.addEventListener("connectionstatechange", () => {
      if (!this.closed) onStateChange(pc.connectionState);
    });
    if (stream) stream.getTracks().forEach((track) => pc.addTrack(track, stream));
    if (receiveVideo) pc.addTransceiver("video", { direction: "recvonly" });
    console.debug("rtc: created");
  }

  get connectionState() {
    return this.pc.connectionState;
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
