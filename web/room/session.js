// The room's lifecycle: entering (the socket opens), joining (room:join, then the media
// connection), joining again after a network drop, waiting for the room to open if too
// early, the doctor ending the consultation, leaving, and the end. Joins and the
// server's renegotiations run one after another (one queue). Tells the host page (the
// bridge) what happened.
import { Unanswered } from "../lib/socket.js";
import { createChatPanel } from "./chat-panel.js";
import { createMedia } from "./media.js";
import { step } from "./state.js";
import { $ } from "./view.js";

const LIVE = ["scheduled", "in_progress"];
const MAX_WAIT_MS = 86400000; // a page waits for the room to open within a day

export function createSession({ state, view, bridge, signalling, devices, presence, recording, network, consultationId, isDoctor, embedded }) {
  const { TEXT } = view;
  const room = {
    queue: Promise.resolve(), // joins and answers to the server's offers, in order
    attempt: 0, // each (re)connection of the socket; a stale join stops where it is
    chat: null,
  };
  const media = createMedia({
    state, view, signalling, devices, consultationId, onBroken: reconnect, onInterrupted: network.show,
  });

  function enqueue(task, onError) {
    room.queue = room.queue.then(task).catch(onError);
  }

  // The socket dropped (keepMedia: the media connection may live on, see join), or the
  // media connection broke: join again on a new socket.
  function reconnect(keepMedia = false) {
    if (!["joining", "joined"].includes(state.phase)) return;
    state.phase = "reconnecting";
    state.reconnections += 1;
    view.say(TEXT.reconnecting);
    if (!keepMedia) media.close();
    // A new socket at once (then "connect" joins again): the old one may be stuck on a
    // dead path, and the client's back-off would only add to the wait.
    const socket = signalling.socket;
    if (socket.connected) socket.disconnect().connect();
    else if (!socket.active) socket.connect();
  }

  function failed(error) {
    if (!["joining", "joined"].includes(state.phase)) return; // reconnecting, or over
    if (error instanceof Unanswered) return reconnect();
    state.phase = "failed";
    state.error = String(error);
    view.say(TEXT.error + error);
    bridge.tell("telemed:error", { code: "internal" });
  }

  // Come too early, the page stays and joins by itself when the room opens.
  function retryWhenOpen(error) {
    const opens = error.code === "too_late" && error.details && Date.parse(error.details.opens_at);
    const wait = opens ? opens - Date.now() + 1000 : -1;
    if (wait <= 0 || wait > MAX_WAIT_MS) return;
    setTimeout(() => {
      if (state.phase !== "refused" || signalling.socket.disconnected) return;
      state.phase = "joining";
      view.say(TEXT.connecting);
      enqueue(join, failed);
    }, wait);
  }

  async function join() {
    const mine = ++room.attempt;
    const stale = () => mine !== room.attempt || signalling.socket.disconnected;
    const joined = await signalling.call("room:join", { consultation_id: consultationId });
    if (stale()) return;
    step(state, "joined");
    if (!joined.ok && joined.error.code === "unavailable") throw new Unanswered(joined.error.message);
    if (!joined.ok) {
      state.phase = "refused";
      state.error = joined.error.code;
      view.say(view.explain(joined.error));
      bridge.tell("telemed:error", { code: joined.error.code, details: joined.error.details });
      retryWhenOpen(joined.error);
      return;
    }
    state.joins += 1;
    showPeer(joined.data.doctor);
    startTimer();
    presence.joined(joined.data.participants);
    recording.joined(joined.data.recording);
    network.joined(joined.data.participants).catch((error) => console.debug("audio only:", error));
    // Neither needs to hold up the media connection. The chat catches up by itself
    // after a reconnection from then on.
    devices.report();
    room.chat.follow();
    // A device that kept its address through a short drop has its media connection
    // working again as soon as the network is back: kept, it is back at once (a new one
    // waits for the browser to list the network again, a second or three).
    if (!(await media.resumes(joined.data.connection_kept))) {
      if (stale()) return;
      await media.connect(joined.data.ice_servers);
    }
    if (stale()) return;
    state.phase = "joined";
    presence.show();
    bridge.tell("telemed:joined", { camera: state.camera, microphone: state.microphone });
    if (state.camera === "denied" || state.microphone === "denied") {
      bridge.tell("telemed:permission_denied", { camera: state.camera, microphone: state.microphone });
    }
  }

  // Stop everything: the camera light goes off, and no reconnection follows. What
  // happened is said in the middle of the screen, with the way on.
  function finish(title, linkText) {
    media.close();
    devices.stop();
    stopTimer();
    if (signalling.socket) signalling.socket.disconnect();
    $("controls").hidden = true;
    $("chat-form").hidden = true;
    for (const dialog of document.querySelectorAll("dialog")) if (dialog.open) dialog.close();
    $("after-title").textContent = title;
    $("after-link").hidden = embedded;
    $("after-link").href = `/#/consultations/${consultationId}`;
    $("after-link").textContent = linkText;
    $("after").hidden = false;
  }

  // The call's length, from the first picture of the other side.
  const timer = { id: null };
  function startTimer() {
    if (timer.id) return;
    timer.id = setInterval(() => {
      if (state.firstRemoteFrameAt === null) return;
      const seconds = Math.floor((performance.now() - state.firstRemoteFrameAt) / 1000);
      const clock = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
      $("timer").textContent = clock;
      $("timer").dateTime = `PT${seconds}S`;
      $("timer").hidden = false;
    }, 1000);
  }
  function stopTimer() {
    clearInterval(timer.id);
    timer.id = null;
  }

  // Who the patient talks to: the doctor's name and specialty; the doctor sees "Patient".
  function showPeer(doctor) {
    if (isDoctor) {
      $("peer-name").textContent = TEXT.rolePatient;
    } else if (doctor) {
      $("peer-name").textContent = doctor.name;
      $("peer-specialty").textContent = doctor.specialty;
    }
  }

  function ended() {
    state.phase = "ended";
    view.say(TEXT.ended);
    finish(TEXT.ended, isDoctor ? TEXT.writeConclusion : TEXT.openConsultation);
    bridge.tell("telemed:ended");
  }

  signalling.on("connect", () => {
    step(state, "socket");
    // Opened on the pre-join screen, the socket waits there for the click. A page
    // refused (come too early) asks again on a new socket, as its timer would.
    if (["joining", "reconnecting", "refused"].includes(state.phase)) enqueue(join, failed);
  });
  signalling.on("disconnect", (reason) => {
    console.debug("socket:", reason);
    // The server closed this socket on purpose (a restart, a takeover): the client does
    // not try again by itself. A signed-out session is then refused with connect_error.
    if (reason === "io server disconnect") signalling.socket.connect();
    reconnect(true);
  });
  signalling.on("connect_error", (error) => {
    if (error && error.data && error.data.error) {
      state.phase = "refused";
      state.error = error.data.error.code;
      view.say(view.explain(error.data.error));
      bridge.tell("telemed:error", { code: state.error });
    }
  });
  // The room moves to another server process: join again on the same socket, with a
  // new media connection (the join places the room where it can go on).
  signalling.on("room:rejoin", (event) => {
    if (event.consultation_id !== consultationId || state.phase !== "joined") return;
    state.phase = "joining";
    state.moves += 1;
    view.say(TEXT.reconnecting);
    media.close();
    enqueue(join, failed);
  });
  signalling.on("rtc:offer", (offer) => {
    if (offer.consultation_id !== consultationId) return;
    media.expect(offer.tracks);
    enqueue(() => media.answer(offer), (error) => { state.error = String(error); });
  });
  signalling.on("consultation:updated", (event) => {
    if (event.id === consultationId && !LIVE.includes(event.state)) ended();
  });

  $("camera-switch").addEventListener("click", () => {
    devices.switchCamera(media.replaceVideo).catch((error) => view.notice(String(error)));
  });

  // The doctor ends the consultation for everyone, after a confirmation.
  $("end").addEventListener("click", () => $("end-dialog").showModal());
  $("end-cancel").addEventListener("click", () => $("end-dialog").close());
  $("end-confirm").addEventListener("click", async () => {
    $("end-dialog").close();
    const done = await signalling.call("consultation:end", { consultation_id: consultationId });
    if (!done.ok) view.notice(view.explain(done.error));
  });

  return {
    media,
    enter() {
      state.phase = "joining";
      view.say(TEXT.connecting);
      $("room").classList.replace("prejoin", "inroom");
      $("prejoin").hidden = true;
      $("controls").hidden = false;
      $("chat").hidden = false;
      $("doctor-controls").hidden = !isDoctor;
      $("consent").hidden = isDoctor;
      devices.offerSwitch();
      const socket = signalling.socket || signalling.open();
      room.chat = createChatPanel({ state, view, socket, consultationId, isDoctor });
      if (socket.connected) enqueue(join, failed);
      else if (!socket.active) socket.connect();
    },
    // The socket opens while the user checks the camera on the pre-join screen: the
    // click joins at once.
    prepare() {
      if (!signalling.socket) signalling.open();
    },
    // From the page's own button, the host page or the native app.
    async command(data) {
      const { type } = data;
      if (type === "telemed:leave") {
        // Leaving is not ending: the consultation goes on, and the way back is the link shown.
        await signalling.call("room:leave", { consultation_id: consultationId });
        state.phase = "left";
        view.say(TEXT.left);
        finish(TEXT.left, TEXT.openConsultation);
        bridge.tell("telemed:left");
      } else if (type === "telemed:mute") {
        devices.setMuted(Boolean(data.muted));
      } else if (type === "telemed:camera") {
        devices.setCameraOff(!data.enabled);
      } else if (type === "telemed:audio_only") {
        await network.setAudioOnly(Boolean(data.active));
      }
    },
  };
}
