// The video room: camera and microphone, the room's Socket.IO signalling, the server's
// media connection (see docs/media.md). Rules stay on the server; this page only asks.
import { io } from "/static/vendor/socket.io/socket.io.esm.min.js";

const params = new URLSearchParams(location.search);
const embedded = location.pathname.match(/^\/embed\/consultations\/([0-9a-f-]{36})$/);
const consultationId = embedded ? embedded[1] : params.get("consultation");
const token = params.get("token");
// Embedded (docs/embedding.md): events go to the host at `origin` (which the server
// checked against TELEMED_EMBED_ORIGINS), and commands are taken from it only.
const hostOrigin = window.parent !== window ? params.get("origin") : null;

function tell(type, detail = {}) {
  if (hostOrigin) window.parent.postMessage({ type, consultationId, ...detail }, hostOrigin);
}

// What the tests (and an embedding host) can read.
const state = (window.telemedRoom = {
  phase: "starting",
  camera: "unknown",
  microphone: "unknown",
  remoteFrames: 0,
  remoteTracks: 0,
  micLevel: 0,
  recording: false,
  error: null,
});

// Russian by default; English by choice (?lang=en). Both dictionaries have the same keys
// (a test checks them, and that every key used here and in room.html exists).
const LANG = params.get("lang") === "en" ? "en" : "ru";
const TEXT = await (await fetch(`/static/i18n/room.${LANG}.json`)).json();
document.documentElement.lang = LANG;
document.title = TEXT.title;
document.querySelectorAll("[data-i18n]").forEach((element) => {
  element.textContent = TEXT[element.dataset.i18n];
});
document.querySelectorAll("[data-i18n-label]").forEach((element) => {
  element.setAttribute("aria-label", TEXT[element.dataset.i18nLabel]);
});


const $ = (id) => document.getElementById(id);
const say = (text) => { $("status").textContent = text; };

function permissionOf(error) {
  switch (error && error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "denied";
    case "NotFoundError":
    case "OverconstrainedError":
      return "no_device";
    case "NotReadableError":
    case "AbortError":
      return "busy";
    default:
      return "unknown";
  }
}

async function localMedia() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return { stream: null, camera: "unsupported", microphone: "unsupported" };
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    return { stream, camera: "granted", microphone: "granted" };
  } catch (error) {
    const camera = permissionOf(error);
    try {
      // Without the camera, the consultation can still go on with sound only.
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      return { stream, camera, microphone: "granted" };
    } catch (audioError) {
      return { stream: null, camera, microphone: permissionOf(audioError) };
    }
  }
}

function gathered(pc) {
  // The server takes complete descriptions (no trickle ICE).
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const done = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000);
  });
}

function countFrames(video) {
  const tick = () => {
    state.remoteFrames += 1;
    video.requestVideoFrameCallback(tick);
  };
  video.requestVideoFrameCallback(tick);
}

function meterLevel(stream) {
  // The microphone's level, so that the user sees it works before speaking to anyone.
  const audio = new AudioContext();
  const analyser = audio.createAnalyser();
  analyser.fftSize = 512;
  audio.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const meter = $("level");
  const tick = () => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const value of samples) sum += value * value;
    const level = Math.min(1, Math.sqrt(sum / samples.length) * 4);
    meter.value = level;
    state.micLevel = Math.max(state.micLevel, level);
    requestAnimationFrame(tick);
  };
  audio.resume().finally(tick);
}

async function main() {
  const media = await localMedia();
  state.camera = media.camera;
  state.microphone = media.microphone;
  if (media.stream) $("local").srcObject = media.stream;
  if (media.stream && media.stream.getAudioTracks().length) meterLevel(media.stream);

  const socket = io({ auth: token ? { token } : undefined, transports: ["websocket"] });
  const call = (event, data) => socket.timeout(15000).emitWithAck(event, data);
  let pc = null;
  let labels = {};
  let negotiation = Promise.resolve();

  async function connectMedia(iceServers) {
    if (pc) pc.close();
    pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });

    const current = pc;
    if (media.stream) {
      media.stream.getTracks().forEach((track) => current.addTrack(track, media.stream));
    }
    if (!media.stream || media.camera !== "granted") current.addTransceiver("video", { direction: "recvonly" });
    current.ontrack = (event) => {
      state.remoteTracks += 1;
      if (event.track.kind !== "video") {
        const audio = new Audio();
        audio.srcObject = new MediaStream([event.track]);
        audio.play().catch(() => {});
        return;
      }
      const video = document.createElement("video");
      video.autoplay = true;
      video.playsInline = true;
      video.muted = true; // the sound plays through its own element
      video.srcObject = new MediaStream([event.track]);
      video.dataset.mid = event.transceiver.mid;
      video.dataset.userId = (labels[event.transceiver.mid] || {}).user_id || "";
      $("remotes").appendChild(video);
      countFrames(video);
    };
    current.onconnectionstatechange = () => {
      if (current === pc && current.connectionState === "failed") {
        // A broken connection: join again with a new one (the server replaces it).
        negotiation = negotiation.then(() => connectMedia(iceServers));
      }
    };
    await current.setLocalDescription(await current.createOffer());
    await gathered(current);
    const answer = await call("rtc:offer", { consultation_id: consultationId, sdp: current.localDescription.sdp });
    if (!answer.ok) throw new Error(answer.error.message);
    await current.setRemoteDescription({ type: "answer", sdp: answer.data.sdp });
  }

  socket.on("rtc:offer", (offer) => {
    if (offer.consultation_id !== consultationId) return;
    labels = Object.fromEntries(offer.tracks.map((t) => [t.mid, t]));
    negotiation = negotiation
      .then(async () => {
        await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
        await pc.setLocalDescription(await pc.createAnswer());
        await gathered(pc);
        const done = await call("rtc:answer", { consultation_id: consultationId, sdp: pc.localDescription.sdp });
        if (!done.ok) throw new Error(done.error.message);
      })
      .catch((error) => { state.error = String(error); });
  });
  socket.on("room:participant_joined", () => { say(TEXT.inRoom); });
  socket.on("media:status_changed", (event) => {
    const { camera, microphone } = event;
    $("others").dataset[`u${event.user_id.replaceAll("-", "")}`] = `${camera.state}/${microphone.state}`;
  });
  socket.on("recording:state_changed", (event) => {
    state.recording = event.recording.active;
    $("recording").textContent = state.recording ? TEXT.recording : TEXT.notRecording;
  });
  socket.on("consultation:updated", (event) => {
    if (event.id === consultationId && !["scheduled", "in_progress"].includes(event.state)) {
      state.phase = "ended";
      say(TEXT.ended);
      if (pc) pc.close();
      tell("telemed:ended");
    }
  });

  window.addEventListener("message", async (event) => {
    if (!hostOrigin || event.origin !== hostOrigin || !event.data) return;
    const { type } = event.data;
    if (type === "telemed:leave") {
      await call("room:leave", { consultation_id: consultationId });
      if (pc) pc.close();
      if (media.stream) media.stream.getTracks().forEach((t) => t.stop());
      socket.disconnect();
      state.phase = "left";
      tell("telemed:left");
    } else if (type === "telemed:mute" && media.stream) {
      media.stream.getAudioTracks().forEach((t) => { t.enabled = !event.data.muted; });
    } else if (type === "telemed:camera" && media.stream) {
      media.stream.getVideoTracks().forEach((t) => { t.enabled = Boolean(event.data.enabled); });
    }
  });

  $("consent").addEventListener("click", async () => {
    await call("recording:consent", { consultation_id: consultationId, granted: true });
  });

  socket.on("connect", async () => {
    try {
      const joined = await call("room:join", { consultation_id: consultationId });
      if (!joined.ok) {
        state.phase = "refused";
        state.error = joined.error.code;
        say(TEXT.error + joined.error.message);
        tell("telemed:error", { code: joined.error.code });
        return;
      }
      await call("media:report", {
        consultation_id: consultationId,
        camera: state.camera,
        microphone: state.microphone,
      });
      const problem = [state.camera, state.microphone].find((p) => p !== "granted");
      if (problem && TEXT[problem]) say(state.microphone === "granted" ? TEXT.audioOnly + " " + TEXT[problem] : TEXT[problem]);
      else say(joined.data.participants.length > 1 ? TEXT.inRoom : TEXT.waiting);
      await connectMedia(joined.data.ice_servers);
      state.phase = "joined";
      tell("telemed:joined", { camera: state.camera, microphone: state.microphone });
      if (state.camera === "denied" || state.microphone === "denied") {
        tell("telemed:permission_denied", { camera: state.camera, microphone: state.microphone });
      }
    } catch (error) {
      state.phase = "failed";
      state.error = String(error);
      say(TEXT.error + error);
      tell("telemed:error", { code: "internal" });
    }
  });
}

main();
