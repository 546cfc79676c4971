// Whose media stopped coming (media:connection: their network dropped, they reconnect)
// and what each side receives (docs/media.md, "Bandwidth"): video, or audio only when its
// link carries too little for video (the server's media:receiving; it tries video
// again by itself), and the user's own "audio only" choice (media:audio_only), which
// also stops sending the camera, to save data.
import { dataOf } from "../lib/socket.js";
import { $ } from "./view.js";

export function createNetwork({ state, view, signalling, devices, consultationId }) {
  const { TEXT } = view;
  let cameraOffBefore = false;

  function show() {
    const lines = [];
    for (const [userId, interrupted] of Object.entries(state.interrupted)) {
      if (!interrupted) continue;
      const mine = userId === state.userId;
      const who = mine ? "" : view.roleName((state.others[userId] || {}).role);
      lines.push(TEXT[mine ? "interrupted" : "interruptedOther"].replace("{who}", who));
    }
    for (const [userId, receiving] of Object.entries(state.receiving)) {
      if (receiving.video) continue;
      const mine = userId === state.userId;
      const key = (receiving.reason === "chosen" ? "audioOnlyChosen" : "weakLink") + (mine ? "" : "Other");
      const who = mine ? "" : view.roleName((state.others[userId] || {}).role);
      lines.push(TEXT[key].replace("{who}", who));
    }
    $("network").textContent = lines.join(" ");
  }

  function note(userId, video, reason) {
    state.receiving[userId] = { video, reason };
    show();
  }

  async function setAudioOnly(active) {
    dataOf(await signalling.call("media:audio_only", { consultation_id: consultationId, active }));
    if (active && !state.audioOnly) cameraOffBefore = state.cameraOff;
    state.audioOnly = active;
    $("audio-only").setAttribute("aria-pressed", String(active));
    devices.setCameraOff(active || cameraOffBefore);
  }

  // The server tells whose media stopped coming (their network dropped) and came back.
  signalling.on("media:connection", (event) => {
    if (event.consultation_id !== consultationId) return;
    state.interrupted[event.user_id] = event.state === "interrupted";
    show();
  });
  signalling.on("media:receiving", (event) => {
    if (event.consultation_id === consultationId) note(event.user_id, event.video, event.reason);
  });
  $("audio-only").addEventListener("click", () => {
    setAudioOnly(!state.audioOnly).catch((error) => view.notice(view.explain(error.error || error)));
  });

  return {
    show,
    setAudioOnly,
    // room:join's participants say who gets audio only; a choice made before a rejoin
    // (a room moved to another server) is made again.
    async joined(participants) {
      for (const p of participants) {
        if (p.user_id !== state.userId) state.interrupted[p.user_id] = Boolean(p.interrupted);
        note(p.user_id, p.video, p.audio_only_reason);
      }
      const me = participants.find((p) => p.user_id === state.userId);
      if (state.audioOnly && me && me.video) await setAudioOnly(true);
    },
  };
}
