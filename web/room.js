// The video room: a camera and microphone check before joining, the room's Socket.IO
// signalling, the server's media connection (docs/media.md), the consultation's chat,
// recording consent, and reconnection after a network drop. Rules stay on the server;
// this page only asks and shows.
import { io } from "/static/vendor/socket.io/socket.io.esm.min.js";

const params = new URLSearchParams(location.search);
const embedded = location.pathname.match(/^\/embed\/consultations\/([0-9a-f-]{36})$/);
const consultationId = embedded ? embedded[1] : params.get("consultation");
const token = params.get("token");
// Embedded (docs/embedding.md): events go to the host at `origin` (which the server
// checked against TELEMED_EMBED_ORIGINS), and commands are taken from it only.
const hostOrigin = window.parent !== window ? params.get("origin") : null;

function tell(type, detail = {}) {
  const message = { type, consultationId, ...detail };
  if (hostOrigin) {
    window.parent.postMessage(message, hostOrigin);
  } else if (embedded) {
    // A mobile app's WebView: its native bridge, if it registered one (docs/embedding.md).
    if (window.webkit && window.webkit.messageHandlers && window.webkit.messageHandlers.telemed) {
      window.webkit.messageHandlers.telemed.postMessage(message);
    }
    if (window.TelemedAndroid) window.TelemedAndroid.postMessage(JSON.stringify(message));
  }
}

// What the tests, the benchmark and an embedding host can read.
const state = (window.telemedRoom = {
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
  others: {}, // user id → {role, present, camera, microphone} (the server's views)
  recording: false,
  consented: false,
  chat: 0, // messages shown
  joins: 0, // room:join calls that succeeded (a reconnection joins again)
  reconnections: 0, // network drops noticed (each shows «reconnecting», then joins again)
  joinClickedAt: null, // performance.now() of the #join click
  firstRemoteFrameAt: null, // performance.now() of the first remote video frame
  // performance.now() of each step of the first join: socket, joined, gathered (ICE),
  // answered (rtc:offer's ack), offered (the server's rtc:offer), connected (media).
  steps: {},
  error: null,
});

const $ = (id) => document.getElementById(id);
const say = (text) => { $("status").textContent = text; };
// What came of the user's last action (a refused command), apart from the room's state.
const notice = (text) => { $("notice").textContent = text; };

// -- who, and in which language -------------------------------------------------------

async function signedIn() {
  // The session cookie, or the token the page was given (an app's or an embedding's).
  try {
    const response = await fetch("/api/v1/me/preferences", {
      headers: token ? { Authorization: `Bearer ${token}` } : {},
    });
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

const me = await signedIn();
state.role = me && me.role;
state.userId = me && me.id;
// ?lang= wins, then the user's own setting; Russian otherwise. Both dictionaries have
// the same keys (a test checks them, and that every key used here and in room.html exists).
const chosen = params.get("lang");
const LANG = ["ru", "en"].includes(chosen) ? chosen : me && me.locale === "en" ? "en" : "ru";
state.lang = LANG;
const TEXT = await (await fetch(`/static/i18n/room.${LANG}.json`)).json();
document.documentElement.lang = LANG;
document.title = TEXT.title;
document.querySelectorAll("[data-i18n]").forEach((element) => {
  element.textContent = TEXT[element.dataset.i18n];
});
document.querySelectorAll("[data-i18n-label]").forEach((element) => {
  element.setAttribute("aria-label", TEXT[element.dataset.i18nLabel]);
});

const isDoctor = state.role === "doctor";
const roleName = (role) => TEXT[role === "doctor" ? "roleDoctor" : role === "patient" ? "rolePatient" : "roleOther"];
// Times in the user's own time zone (the account's), as the rest of the app shows them.
const zoneOptions = { timeZone: (me && me.time_zone) || "Europe/Moscow" };
const LOCALE = LANG === "en" ? "en-GB" : "ru-RU";
const timeFormat = new Intl.DateTimeFormat(LOCALE, { hour: "2-digit", minute: "2-digit", ...zoneOptions });
const momentFormat = new Intl.DateTimeFormat(LOCALE, { dateStyle: "medium", timeStyle: "short", ...zoneOptions });

// A refusal in the user's words (the server's message is English), with when the room
// opens if it is too early.
function explain(error) {
  const opens = error.details && error.details.opens_at;
  if (error.code === "too_late" && opens) return TEXT.refused_too_early.replace("{time}", momentFormat.format(new Date(opens)));
  return TEXT[`refused_${error.code}`] || TEXT.error + error.message;
}

// -- camera and microphone -------------------------------------------------------------

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

const local = { stream: null };

async function acquire({ cameraId, microphoneId } = {}) {
  // A device chosen in the check is asked for exactly; the browser's default otherwise.
  if (local.stream) local.stream.getTracks().forEach((track) => track.stop());
  local.stream = null;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    state.camera = state.microphone = "unsupported";
    return;
  }
  const audio = microphoneId ? { deviceId: { exact: microphoneId } } : true;
  const video = cameraId ? { deviceId: { exact: cameraId } } : true;
  try {
    local.stream = await navigator.mediaDevices.getUserMedia({ video, audio });
    state.camera = state.microphone = "granted";
  } catch (error) {
    state.camera = permissionOf(error);
    try {
      // Without the camera, the consultation can still go on with sound only.
      local.stream = await navigator.mediaDevices.getUserMedia({ audio });
      state.microphone = "granted";
    } catch (audioError) {
      state.microphone = permissionOf(audioError);
    }
  }
  $("local").srcObject = local.stream;
  setMuted(state.muted);
  setCameraOff(state.cameraOff);
  if (local.stream && local.stream.getAudioTracks().length) meter.listen(local.stream);
  explainDevices();
}

function explainDevices() {
  // What went wrong, and what to do about it, in the user's words.
  const problem = [state.camera, state.microphone].find((p) => p !== "granted");
  const text = problem && TEXT[problem] ? (state.microphone === "granted" ? `${TEXT.audioOnly} ${TEXT[problem]}` : TEXT[problem]) : "";
  $("guidance").textContent = text;
  $("camera-toggle").disabled = state.camera !== "granted";
  $("mute").disabled = state.microphone !== "granted";
}

async function listDevices() {
  // Labels are known only after permission; the selects come after getUserMedia.
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, select, word] of [
    ["videoinput", $("camera-select"), TEXT.cameraDevice],
    ["audioinput", $("microphone-select"), TEXT.microphoneDevice],
  ]) {
    const track = local.stream && local.stream.getTracks().find((t) => `${t.kind}input` === kind);
    const current = track ? track.getSettings().deviceId : "";
    const found = devices.filter((d) => d.kind === kind && d.deviceId);
    select.replaceChildren(
      ...found.map((device, n) => {
        const option = new Option(device.label || `${word} ${n + 1}`, device.deviceId);
        option.selected = device.deviceId === current;
        return option;
      }),
    );
    select.disabled = found.length === 0;
  }
}

async function changeDevice() {
  $("join").disabled = true;
  await acquire({ cameraId: $("camera-select").value, microphoneId: $("microphone-select").value });
  await listDevices();
  $("join").disabled = false;
  state.phase = "prejoin";
}

const meter = (() => {
  // The microphone's level, so that the user sees it works before speaking to anyone.
  let audio = null;
  let analyser = null;
  let source = null;
  const tick = () => {
    const samples = new Float32Array(analyser.fftSize);
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const value of samples) sum += value * value;
    const level = Math.min(1, Math.sqrt(sum / samples.length) * 4);
    $("level").value = level;
    state.micLevel = Math.max(state.micLevel, level);
    requestAnimationFrame(tick);
  };
  return {
    listen(stream) {
      if (!audio) {
        audio = new AudioContext();
        analyser = audio.createAnalyser();
        analyser.fftSize = 512;
        audio.resume().finally(tick);
      }
      if (source) source.disconnect();
      source = audio.createMediaStreamSource(stream);
      source.connect(analyser);
    },
  };
})();

// What the browser gave, and what the user has switched off: the others see it in words.
function reportMedia() {
  if (!socket || !socket.connected) return; // the next join reports it
  call("media:report", {
    consultation_id: consultationId,
    camera: state.camera,
    microphone: state.microphone,
    camera_enabled: !state.cameraOff,
    microphone_enabled: !state.muted,
  });
}

function setMuted(muted) {
  state.muted = muted;
  if (local.stream) local.stream.getAudioTracks().forEach((t) => { t.enabled = !muted; });
  $("mute").setAttribute("aria-pressed", String(muted));
  reportMedia();
}

function setCameraOff(off) {
  state.cameraOff = off;
  if (local.stream) local.stream.getVideoTracks().forEach((t) => { t.enabled = !off; });
  $("camera-toggle").setAttribute("aria-pressed", String(off));
  reportMedia();
}

$("mute").addEventListener("click", () => setMuted(!state.muted));
$("camera-toggle").addEventListener("click", () => setCameraOff(!state.cameraOff));

// -- the others: who is here, and their camera and microphone ---------------------------

function deviceText(kind, view) {
  // The browser's refusal says more than the server's check of a track never sent.
  const refused = view.permission !== "granted" && view.permission !== "unknown";
  if (!refused && view.enabled === false) return TEXT[`${kind}_off`];
  return TEXT[`${kind}_${refused ? view.permission : view.state}`] || TEXT[`${kind}_waiting`];
}

function showOthers() {
  const lines = Object.entries(state.others)
    .filter(([userId]) => userId !== state.userId)
    .map(([, other]) => {
      if (!other.present) return `${roleName(other.role)}: ${TEXT.away}`;
      if (!other.media) return `${roleName(other.role)}: ${TEXT.present}`;
      return `${roleName(other.role)}: ${deviceText("camera", other.media.camera)}, ${deviceText("microphone", other.media.microphone)}`;
    });
  $("others").textContent = lines.join("; ");
  if (!["joined", "joining"].includes(state.phase)) return;
  const someone = Object.entries(state.others).some(([id, o]) => id !== state.userId && o.present);
  say(someone ? TEXT.inRoom : isDoctor ? TEXT.waitingPatient : TEXT.waiting);
}

function other(userId) {
  if (!state.others[userId]) state.others[userId] = { role: null, present: false, media: null };
  return state.others[userId];
}

// -- recording: consent, the indicator, the doctor's commands ---------------------------

let recordingWanted = false; // the doctor asked: start once everyone has consented
let consentAsked = false;

function showRecording(view, { asking = false } = {}) {
  const consents = Object.fromEntries(view.consents.map((c) => [c.user_id, c.granted]));
  state.recording = view.active;
  state.consented = Boolean(consents[state.userId]);
  $("recording").hidden = !view.active;
  $("consent").textContent = state.consented ? TEXT.consentWithdraw : TEXT.consent;
  $("record-start").disabled = view.active;
  $("record-stop").disabled = !view.active;
  if (view.active) recordingWanted = false;
  if (!isDoctor && !state.consented && asking && !$("consent-dialog").open) {
    $("consent-dialog").showModal();
  }
  return consents;
}

async function giveConsent(granted) {
  const done = await call("recording:consent", { consultation_id: consultationId, granted });
  if (!done.ok) notice(explain(done.error));
}

$("consent").addEventListener("click", () => giveConsent(!state.consented));
$("consent-yes").addEventListener("click", async () => {
  $("consent-dialog").close();
  await giveConsent(true);
});
$("consent-no").addEventListener("click", async () => {
  $("consent-dialog").close();
  if (state.consented) await giveConsent(false);
});

let recordingStarting = false;

async function askToRecord() {
  // The doctor's click is the doctor's consent, sent again each time: that asks the
  // patient (it opens the patient's dialog); the recording starts once both agreed.
  recordingWanted = true;
  await giveConsent(true);
  await startRecording();
}

async function startRecording() {
  if (recordingStarting) return;
  recordingStarting = true;
  const started = await call("recording:start", { consultation_id: consultationId });
  recordingStarting = false;
  if (started.ok) return notice("");
  const waiting = started.error.details && started.error.details.without_consent;
  notice(waiting ? TEXT.waitingConsent : explain(started.error));
}

$("record-start").addEventListener("click", askToRecord);
$("record-stop").addEventListener("click", async () => {
  recordingWanted = false;
  await call("recording:stop", { consultation_id: consultationId });
});
$("end").addEventListener("click", () => $("end-dialog").showModal());
$("end-cancel").addEventListener("click", () => $("end-dialog").close());
$("end-confirm").addEventListener("click", async () => {
  $("end-dialog").close();
  const done = await call("consultation:end", { consultation_id: consultationId });
  if (!done.ok) notice(explain(done.error));
});

// -- chat -------------------------------------------------------------------------------

const chat = { seen: new Set(), lastSeq: 0 };

function showMessage(message) {
  if (message.consultation_id !== consultationId || chat.seen.has(message.seq)) return;
  chat.seen.add(message.seq);
  chat.lastSeq = Math.max(chat.lastSeq, message.seq);
  const mine = message.sender_id === state.userId;
  const item = document.createElement("li");
  item.className = mine ? "mine" : "theirs";
  item.dataset.seq = message.seq;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = mine ? TEXT.you : roleName(isDoctor ? "patient" : "doctor");
  const when = document.createElement("time");
  when.dateTime = message.created_at;
  when.textContent = timeFormat.format(new Date(message.created_at));
  const body = document.createElement("p");
  body.textContent = message.body;
  item.append(who, " ", when, body);
  // In seq order, whichever way a message came (history, live, own ack).
  const later = [...$("chat-log").children].find((li) => Number(li.dataset.seq) > message.seq);
  $("chat-log").insertBefore(item, later || null);
  item.scrollIntoView({ block: "nearest" });
  state.chat = chat.seen.size;
}

async function subscribeChat() {
  // From the last seq held: a reconnection gets exactly what it missed.
  for (;;) {
    const answer = await call("consultation:subscribe", { consultation_id: consultationId, after_seq: chat.lastSeq });
    if (!answer.ok) {
      $("chat-error").textContent = explain(answer.error);
      return;
    }
    answer.data.messages.forEach(showMessage);
    $("chat-input").disabled = $("chat-send").disabled = !answer.data.writable;
    $("chat-error").textContent = answer.data.writable ? "" : TEXT.chatClosed;
    if (!answer.data.has_more) return;
  }
}

$("chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("chat-input");
  const body = input.value.trim();
  if (!body) return;
  const sent = await call("chat:send", { consultation_id: consultationId, client_id: crypto.randomUUID(), body });
  if (!sent.ok) {
    $("chat-error").textContent = explain(sent.error);
    return;
  }
  $("chat-error").textContent = "";
  input.value = "";
  showMessage(sent.data.message);
});

// -- the room: socket, media connection, reconnection -----------------------------------

let socket = null;
let pc = null;
let labels = {};
let negotiation = Promise.resolve();
let iceServers = [];
let attempt = 0; // each (re)connection of the socket; a stale join stops where it is

class Unanswered extends Error {}

function call(event, data) {
  // The ack, or an error of the same shape when the server did not answer in time.
  if (!socket) return Promise.resolve({ ok: false, error: { code: "unavailable", message: "not connected" } });
  return socket.timeout(15000).emitWithAck(event, data).catch((error) => ({
    ok: false,
    error: { code: "unavailable", message: String(error) },
  }));
}

function check(answer) {
  if (answer.ok) return answer.data;
  throw answer.error.code === "unavailable" ? new Unanswered(answer.error.message) : new Error(answer.error.message);
}

function gathered(connection) {
  // The server takes complete descriptions (no trickle ICE).
  return new Promise((resolve) => {
    if (connection.iceGatheringState === "complete") return resolve();
    const done = () => {
      if (connection.iceGatheringState === "complete") {
        connection.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    connection.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000);
  });
}

function step(name) {
  if (!(name in state.steps)) state.steps[name] = performance.now();
}

function countFrames(video) {
  const tick = () => {
    if (state.firstRemoteFrameAt === null) state.firstRemoteFrameAt = performance.now();
    state.remoteFrames += 1;
    video.requestVideoFrameCallback(tick);
  };
  video.requestVideoFrameCallback(tick);
}

function showTrack(event) {
  state.remoteTracks += 1;
  const label = labels[event.transceiver.mid] || {};
  const element = document.createElement(event.track.kind === "video" ? "video" : "audio");
  element.autoplay = true;
  element.srcObject = new MediaStream([event.track]);
  element.dataset.mid = event.transceiver.mid;
  element.dataset.userId = label.user_id || "";
  if (event.track.kind === "video") {
    element.playsInline = true;
    element.muted = true; // the sound plays through its own element
    element.setAttribute("aria-label", roleName((state.others[label.user_id] || {}).role));
    countFrames(element);
  } else {
    element.play().catch(() => {});
  }
  $("remotes").appendChild(element);
}

function closeMedia() {
  if (pc) pc.close();
  pc = null;
  $("remotes").replaceChildren();
}

async function connectMedia() {
  // A new connection (the first, or after a drop): the server replaces the old one.
  closeMedia();
  const current = (pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" }));
  if (local.stream) local.stream.getTracks().forEach((track) => current.addTrack(track, local.stream));
  if (!local.stream || state.camera !== "granted") current.addTransceiver("video", { direction: "recvonly" });
  current.ontrack = showTrack;
  current.onconnectionstatechange = () => {
    console.log("rtc:", current.connectionState);
    if (current !== pc) return;
    // A broken media connection is a network drop that the socket may not have noticed
    // yet (its pings take longer): join again over a new socket, with a new connection.
    if (current.connectionState === "connected") step("connected");
    if (current.connectionState === "failed") reconnect();
    if (current.connectionState === "disconnected") {
      setTimeout(() => { if (current === pc && current.connectionState === "disconnected") reconnect(); }, 5000);
    }
  };
  await current.setLocalDescription(await current.createOffer());
  await gathered(current);
  step("gathered");
  const answer = check(await call("rtc:offer", { consultation_id: consultationId, sdp: current.localDescription.sdp }));
  step("answered");
  if (current === pc) await current.setRemoteDescription({ type: "answer", sdp: answer.sdp });
}

async function answerServer(offer) {
  // The server adds what this page receives: its offer, our answer.
  const current = pc;
  if (!current) return;
  step("offered");
  await current.setRemoteDescription({ type: "offer", sdp: offer.sdp });
  await current.setLocalDescription(await current.createAnswer());
  await gathered(current);
  if (current !== pc) return;
  check(await call("rtc:answer", { consultation_id: consultationId, sdp: current.localDescription.sdp }));
}

function reconnect() {
  if (!["joining", "joined"].includes(state.phase)) return;
  state.phase = "reconnecting";
  state.reconnections += 1;
  say(TEXT.reconnecting);
  closeMedia();
  // Closing the transport makes the client connect again (a new socket, then "connect").
  if (socket.connected) socket.io.engine.close();
  else if (!socket.active) socket.connect();
}

function failed(error) {
  if (!["joining", "joined"].includes(state.phase)) return; // reconnecting, or over
  if (error instanceof Unanswered) return reconnect();
  state.phase = "failed";
  state.error = String(error);
  say(TEXT.error + error);
  tell("telemed:error", { code: "internal" });
}

// Come too early, the page stays and joins by itself when the room opens (within a day).
function retryWhenOpen(error) {
  const opens = error.code === "too_late" && error.details && Date.parse(error.details.opens_at);
  const wait = opens ? opens - Date.now() + 1000 : -1;
  if (wait <= 0 || wait > 86400000) return;
  setTimeout(() => {
    if (state.phase !== "refused" || socket.disconnected) return;
    state.phase = "joining";
    say(TEXT.connecting);
    negotiation = negotiation.then(joinRoom).catch(failed);
  }, wait);
}

async function joinRoom() {
  const mine = ++attempt;
  const stale = () => mine !== attempt || socket.disconnected;
  const joined = await call("room:join", { consultation_id: consultationId });
  if (stale()) return;
  step("joined");
  if (!joined.ok && joined.error.code === "unavailable") throw new Unanswered(joined.error.message);
  if (!joined.ok) {
    state.phase = "refused";
    state.error = joined.error.code;
    say(explain(joined.error));
    tell("telemed:error", { code: joined.error.code, details: joined.error.details });
    retryWhenOpen(joined.error);
    return;
  }
  state.joins += 1;
  iceServers = joined.data.ice_servers;
  for (const participant of joined.data.participants) {
    Object.assign(other(participant.user_id), { role: participant.role, present: true, media: participant.media });
  }
  const here = new Set(joined.data.participants.map((p) => p.user_id));
  for (const [userId, o] of Object.entries(state.others)) o.present = here.has(userId);
  const firstJoin = !consentAsked;
  consentAsked = true;
  showRecording(joined.data.recording, { asking: firstJoin });
  // Neither needs to hold up the media connection.
  reportMedia();
  subscribeChat();
  await connectMedia();
  if (stale()) return;
  state.phase = "joined";
  showOthers();
  tell("telemed:joined", { camera: state.camera, microphone: state.microphone });
  if (state.camera === "denied" || state.microphone === "denied") {
    tell("telemed:permission_denied", { camera: state.camera, microphone: state.microphone });
  }
}

function ended() {
  state.phase = "ended";
  say(TEXT.ended);
  finish(isDoctor ? TEXT.writeConclusion : TEXT.openConsultation);
  tell("telemed:ended");
}

function finish(linkText) {
  // Stop everything: the camera light goes off, and no reconnection follows.
  closeMedia();
  if (local.stream) local.stream.getTracks().forEach((t) => t.stop());
  if (socket) socket.disconnect();
  $("controls").hidden = true;
  $("chat-form").hidden = true;
  for (const dialog of document.querySelectorAll("dialog")) if (dialog.open) dialog.close();
  if (!embedded) {
    $("after-link").href = `/#/consultations/${consultationId}`;
    $("after-link").textContent = linkText;
    $("after").hidden = false;
  }
}

function enter() {
  state.phase = "joining";
  say(TEXT.connecting);
  $("room").classList.replace("prejoin", "inroom");
  $("prejoin").hidden = true;
  $("controls").hidden = false;
  $("chat").hidden = false;
  $("doctor-controls").hidden = !isDoctor;
  $("consent").hidden = isDoctor;

  socket = io({
    auth: token ? { token } : undefined,
    transports: ["websocket"],
    reconnectionDelay: 500,
    reconnectionDelayMax: 4000,
  });
  socket.on("connect", () => {
    step("socket");
    negotiation = negotiation.then(joinRoom).catch(failed);
  });
  socket.on("disconnect", (reason) => {
    console.log("socket:", reason);
    // The server closed this socket on purpose (a restart, a takeover): the client does
    // not try again by itself. A signed-out session is then refused with connect_error.
    if (reason === "io server disconnect") socket.connect();
    reconnect();
  });
  socket.on("connect_error", (error) => {
    if (error && error.data && error.data.error) {
      state.phase = "refused";
      state.error = error.data.error.code;
      say(explain(error.data.error));
      tell("telemed:error", { code: state.error });
    }
  });
  socket.on("rtc:offer", (offer) => {
    if (offer.consultation_id !== consultationId) return;
    labels = Object.fromEntries(offer.tracks.map((t) => [t.mid, t]));
    negotiation = negotiation.then(() => answerServer(offer)).catch((error) => { state.error = String(error); });
  });
  socket.on("room:participant_joined", (event) => {
    if (event.consultation_id !== consultationId) return;
    Object.assign(other(event.user_id), { role: event.role, present: true, media: null });
    showOthers();
  });
  socket.on("room:participant_left", (event) => {
    if (event.consultation_id !== consultationId) return;
    other(event.user_id).present = false;
    showOthers();
  });
  socket.on("media:status_changed", (event) => {
    if (event.consultation_id !== consultationId) return;
    const { camera, microphone } = event;
    $("others").dataset[`u${event.user_id.replaceAll("-", "")}`] = `${camera.state}/${microphone.state}`;
    other(event.user_id).media = { camera, microphone };
    showOthers();
  });
  socket.on("recording:state_changed", (event) => {
    if (event.consultation_id !== consultationId) return;
    const { recording } = event;
    const mine = recording.consents.some((c) => c.user_id === state.userId && c.granted);
    // Someone else (re)consented while this user's consent stayed as it was: the doctor
    // asks (its record-start consents again each time).
    const asked = mine === state.consented && recording.consents.some((c) => c.user_id !== state.userId && c.granted);
    const consents = showRecording(recording, { asking: asked });
    if (isDoctor && recordingWanted && !recording.active) {
      const present = Object.entries(state.others).filter(([, o]) => o.present).map(([id]) => id);
      if (present.every((id) => consents[id])) startRecording();
    }
  });
  socket.on("chat:message_created", showMessage);
  socket.on("consultation:updated", (event) => {
    if (event.id === consultationId && !["scheduled", "in_progress"].includes(event.state)) ended();
  });
}

async function command(data) {
  const { type } = data;
  if (type === "telemed:leave") {
    await call("room:leave", { consultation_id: consultationId });
    state.phase = "left";
    say(TEXT.left);
    finish(TEXT.openConsultation);
    tell("telemed:left");
  } else if (type === "telemed:mute") {
    setMuted(Boolean(data.muted));
  } else if (type === "telemed:camera") {
    setCameraOff(!data.enabled);
  }
}

// Leaving is not ending: the consultation goes on, and the way back is the link shown.
$("leave").addEventListener("click", () => command({ type: "telemed:leave" }));

window.addEventListener("message", (event) => {
  if (!hostOrigin || event.origin !== hostOrigin || !event.data) return;
  command(event.data);
});
// A mobile app's WebView (no host frame) sends the same commands with
// evaluateJavaScript("telemedCommand({type: 'telemed:mute', muted: true})").
if (embedded && !hostOrigin) window.telemedCommand = (data) => command(data || {});

// -- start ------------------------------------------------------------------------------

if (!consultationId) {
  state.phase = "failed";
  say(TEXT.noConsultation);
} else if (embedded) {
  // The host app has its own check before the room: join at once.
  $("prejoin").hidden = true;
  await acquire();
  enter();
} else {
  say(TEXT.checkDevices);
  await acquire();
  await listDevices();
  $("camera-select").addEventListener("change", changeDevice);
  $("microphone-select").addEventListener("change", changeDevice);
  $("prejoin").addEventListener("submit", (event) => {
    event.preventDefault();
    state.joinClickedAt = performance.now();
    enter();
  });
  $("join").disabled = false;
  state.phase = "prejoin";
}
