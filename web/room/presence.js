// The others in the room: who is here (room:join's participants, then
// room:participant_joined / _left) and their camera and microphone as the server saw
// them (media:status_changed), shown in words; and the status line while in the room
// (waiting for the other side, or the consultation is on). Keeps them in state.others.
import { $ } from "./view.js";

export function createPresence({ state, view, signalling, consultationId, isDoctor }) {
  const { TEXT } = view;

  function other(userId) {
    if (!state.others[userId]) state.others[userId] = { role: null, present: false, media: null };
    return state.others[userId];
  }

  // The browser's refusal says more than the server's check of a track never sent.
  function deviceText(kind, device) {
    const refused = device.permission !== "granted" && device.permission !== "unknown";
    if (!refused && device.enabled === false) return TEXT[`${kind}_off`];
    return TEXT[`${kind}_${refused ? device.permission : device.state}`] || TEXT[`${kind}_waiting`];
  }

  function show() {
    const lines = Object.entries(state.others)
      .filter(([userId]) => userId !== state.userId)
      .map(([, o]) => {
        if (!o.present) return `${view.roleName(o.role)}: ${TEXT.away}`;
        if (!o.media) return `${view.roleName(o.role)}: ${TEXT.present}`;
        return `${view.roleName(o.role)}: ${deviceText("camera", o.media.camera)}, ${deviceText("microphone", o.media.microphone)}`;
      });
    $("others").textContent = lines.join("; ");
    if (!["joined", "joining"].includes(state.phase)) return;
    const someone = Object.entries(state.others).some(([id, o]) => id !== state.userId && o.present);
    view.say(someone ? TEXT.inRoom : isDoctor ? TEXT.waitingPatient : TEXT.waiting);
  }

  signalling.on("room:participant_joined", (event) => {
    if (event.consultation_id !== consultationId) return;
    Object.assign(other(event.user_id), { role: event.role, present: true, media: null });
    if (event.user_id !== state.userId) view.announce(TEXT.peerJoined.replace("{who}", view.roleName(event.role)));
    show();
  });
  signalling.on("room:participant_left", (event) => {
    if (event.consultation_id !== consultationId) return;
    other(event.user_id).present = false;
    if (event.user_id !== state.userId) view.announce(TEXT.peerLeft.replace("{who}", view.roleName(other(event.user_id).role)));
    show();
  });
  signalling.on("media:status_changed", (event) => {
    if (event.consultation_id !== consultationId) return;
    const { camera, microphone } = event;
    $("others").dataset[`u${event.user_id.replaceAll("-", "")}`] = `${camera.state}/${microphone.state}`;
    other(event.user_id).media = { camera, microphone };
    show();
  });

  return {
    show,
    // room:join's answer: exactly these are here now.
    joined(participants) {
      for (const participant of participants) {
        Object.assign(other(participant.user_id), { role: participant.role, present: true, media: participant.media });
      }
      const here = new Set(participants.map((p) => p.user_id));
      for (const [userId, o] of Object.entries(state.others)) o.present = here.has(userId);
    },
    present() {
      return Object.entries(state.others).filter(([, o]) => o.present).map(([id]) => id);
    },
  };
}
