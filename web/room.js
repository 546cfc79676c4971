// The video room page (room.html; alone at /embed/consultations/{id} for a host page or
// a mobile WebView): who the user is and in which language, then the room's parts wired
// together. Rules stay on the server; this page only asks and shows.
//
//   room/state.js       window.telemedRoom, the one shared record of the room
//   room/view.js        the words and where they are shown
//   room/bridge.js      events to the embedding host or native app, its commands
//   room/signalling.js  the room's socket (lib/socket.js)
//   room/devices.js     camera and microphone: the check before joining, mute, camera off
//   room/presence.js    the others in the room and their devices
//   room/recording.js   consent, the indicator, the doctor's commands
//   room/network.js     who gets audio only (a weak link, or the user's choice)
//   room/quality.js     the call's figures (getStats), its level, told to the server
//   room/session.js     joining, reconnecting, leaving, the end; it makes
//     room/media.js       the media connection (lib/rtc.js), and
//     room/chat-panel.js  the chat (lib/chat.js)
import { loadWords, pickLanguage } from "./lib/i18n.js";
import { createBridge } from "./room/bridge.js";
import { createDevices } from "./room/devices.js";
import { createNetwork } from "./room/network.js";
import { createPresence } from "./room/presence.js";
import { createQuality } from "./room/quality.js";
import { createRecording } from "./room/recording.js";
import { createSession } from "./room/session.js";
import { createSignalling } from "./room/signalling.js";
import { publishState } from "./room/state.js";
import { $, createView, makeMovable } from "./room/view.js";

const params = new URLSearchParams(location.search);
const embedded = location.pathname.match(/^\/embed\/consultations\/([0-9a-f-]{36})$/);
const consultationId = embedded ? embedded[1] : params.get("consultation");
const token = params.get("token");
// Embedded (docs/embedding.md): events go to the host at `origin` (which the server
// checked against TELEMED_EMBED_ORIGINS), and commands are taken from it only.
const hostOrigin = window.parent !== window ? params.get("origin") : null;

const state = publishState();

// The session cookie, or the token the page was given (an app's or an embedding's).
async function signedIn() {
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
// ?lang= wins, then the user's own setting; Russian otherwise.
state.lang = pickLanguage(params.get("lang"), me && me.locale);
const TEXT = await loadWords(["room"], state.lang);
// "Консультация — Телемед": the service's name as the server gave it (TELEMED_BRAND_NAME).
document.title = `${TEXT.title} — ${document.querySelector("meta[name=application-name]").content}`;
// Times in the user's own time zone (the account's), as the rest of the app shows them.
const view = createView({ TEXT, lang: state.lang, timeZone: (me && me.time_zone) || "Europe/Moscow" });

const isDoctor = state.role === "doctor";
// Icon buttons: their names are their labels (for screen readers) and their tooltips.
for (const button of document.querySelectorAll("button[aria-label]")) button.title = button.getAttribute("aria-label");
makeMovable($("local"), $("room"));
if (consultationId && !embedded) $("back-link").href = `/#/consultations/${consultationId}`;
else $("back-link").hidden = true;
const bridge = createBridge({ consultationId, embedded: Boolean(embedded), hostOrigin });
const signalling = createSignalling({ token });
const devices = createDevices({ state, view, signalling, consultationId });
const presence = createPresence({ state, view, signalling, consultationId, isDoctor });
const recording = createRecording({ state, view, signalling, consultationId, isDoctor, presence });
const network = createNetwork({ state, view, signalling, devices, consultationId });
const session = createSession({
  state, view, bridge, signalling, devices, presence, recording, network, consultationId, isDoctor, embedded: Boolean(embedded),
});

createQuality({ state, view, signalling, media: session.media, consultationId });

$("leave").addEventListener("click", () => session.command({ type: "telemed:leave" }));
bridge.listen(session.command);

if (!consultationId) {
  state.phase = "failed";
  view.say(TEXT.noConsultation);
} else if (embedded) {
  // The host app has its own check before the room: join at once.
  $("prejoin").hidden = true;
  await devices.acquire();
  session.enter();
} else {
  view.say(TEXT.checkDevices);
  session.prepare();
  await devices.acquire();
  await devices.listDevices();
  devices.offerChoice();
  $("prejoin").addEventListener("submit", (event) => {
    event.preventDefault();
    state.joinClickedAt = performance.now();
    session.enter();
  });
  $("join").disabled = false;
  state.phase = "prejoin";
}
