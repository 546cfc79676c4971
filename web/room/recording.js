// Recording: the patient's consent (asked in a dialog on entering and whenever the
// doctor asks again), the indicator, and the doctor's commands. The recording starts once
// everyone present has consented; the server enforces it, this page only asks and shows.
import { $ } from "./view.js";

export function createRecording({ state, view, signalling, consultationId, isDoctor, presence }) {
  const { TEXT } = view;
  const recording = {
    wanted: false, // the doctor asked: start once everyone has consented
    asked: false, // the patient was asked on the first join
    starting: false,
  };

  function show(current, { asking = false } = {}) {
    const consents = Object.fromEntries(current.consents.map((c) => [c.user_id, c.granted]));
    if (current.active !== state.recording) view.announce(current.active ? TEXT.recording : TEXT.recordingStopped);
    state.recording = current.active;
    state.consented = Boolean(consents[state.userId]);
    $("recording").hidden = !current.active;
    $("consent").textContent = state.consented ? TEXT.consentWithdraw : TEXT.consent;
    $("record-start").disabled = current.active;
    $("record-stop").disabled = !current.active;
    if (current.active) recording.wanted = false;
    if (!isDoctor && !state.consented && asking && !$("consent-dialog").open) {
      $("consent-dialog").showModal();
    }
    return consents;
  }

  async function giveConsent(granted) {
    const done = await signalling.call("recording:consent", { consultation_id: consultationId, granted });
    if (!done.ok) view.notice(view.explain(done.error));
  }

  async function start() {
    if (recording.starting) return;
    recording.starting = true;
    const started = await signalling.call("recording:start", { consultation_id: consultationId });
    recording.starting = false;
    if (started.ok) return view.notice("");
    const waiting = started.error.details && started.error.details.without_consent;
    view.notice(waiting ? TEXT.waitingConsent : view.explain(started.error));
  }

  // The doctor's click is the doctor's consent, sent again each time: that asks the
  // patient (it opens the patient's dialog); the recording starts once both agreed.
  async function askToRecord() {
    recording.wanted = true;
    await giveConsent(true);
    await start();
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
  $("record-start").addEventListener("click", askToRecord);
  $("record-stop").addEventListener("click", async () => {
    recording.wanted = false;
    await signalling.call("recording:stop", { consultation_id: consultationId });
  });

  signalling.on("recording:state_changed", (event) => {
    if (event.consultation_id !== consultationId) return;
    const current = event.recording;
    const mine = current.consents.some((c) => c.user_id === state.userId && c.granted);
    // Someone else (re)consented while this user's consent stayed as it was: the doctor
    // asks (its record-start consents again each time).
    const asked = mine === state.consented && current.consents.some((c) => c.user_id !== state.userId && c.granted);
    const consents = show(current, { asking: asked });
    if (isDoctor && recording.wanted && !current.active) {
      if (presence.present().every((id) => consents[id])) start();
    }
  });

  return {
    // room:join's answer: the patient is asked on the first join only.
    joined(current) {
      const first = !recording.asked;
      recording.asked = true;
      show(current, { asking: first });
    },
  };
}
