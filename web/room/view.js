// The room's words (web/i18n/room.<lang>.json, loaded by lib/i18n.js) and the places
// they are shown: the status line, the notice of the user's last action, refusals in the
// user's words, role names, and times in the user's own time zone.
import { localeOf } from "../lib/i18n.js";

export const $ = (id) => document.getElementById(id);

export function createView({ TEXT, lang, timeZone }) {
  const zone = { timeZone };
  const locale = localeOf(lang);
  const timeFormat = new Intl.DateTimeFormat(locale, { hour: "2-digit", minute: "2-digit", ...zone });
  const plurals = new Intl.PluralRules(locale);
  const momentFormat = new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeStyle: "short", ...zone });
  return {
    TEXT,
    say(text) {
      $("status").textContent = text;
    },
    // What screen readers should hear of a change that the status line does not say:
    // someone came or went, the recording started or stopped (a live region).
    announce(text) {
      $("announcer").textContent = text;
    },
    // What came of the user's last action (a refused command), apart from the room's state.
    notice(text) {
      $("notice").textContent = text;
    },
    // A count in words, with the language's plural form: TEXT[`${key}_one`] (few, many,
    // other), "{n}" replaced.
    plural(key, n) {
      const form = plurals.select(n);
      return (TEXT[`${key}_${form}`] ?? TEXT[`${key}_other`]).replace("{n}", String(n));
    },
    roleName(role) {
      return TEXT[role === "doctor" ? "roleDoctor" : role === "patient" ? "rolePatient" : "roleOther"];
    },
    // A refusal in the user's words (the server's message is English, never shown), with
    // when the room opens if it is too early.
    explain(error) {
      const opens = error.details && error.details.opens_at;
      if (error.code === "too_late" && opens) return TEXT.refused_too_early.replace("{time}", momentFormat.format(new Date(opens)));
      return TEXT[`refused_${error.code}`] || TEXT.refused_internal;
    },
    time(iso) {
      return timeFormat.format(new Date(iso));
    },
  };
}

// The self-view can be dragged anywhere over the video; let go, it goes to the nearest
// corner (as video-call apps do).
export function makeMovable(element, within) {
  let start = null;
  element.addEventListener("pointerdown", (event) => {
    const box = element.getBoundingClientRect();
    start = { x: event.clientX - box.left, y: event.clientY - box.top };
    element.setPointerCapture(event.pointerId);
  });
  element.addEventListener("pointermove", (event) => {
    if (!start) return;
    const area = within.getBoundingClientRect();
    const box = element.getBoundingClientRect();
    const left = Math.min(Math.max(0, event.clientX - area.left - start.x), area.width - box.width);
    const top = Math.min(Math.max(0, event.clientY - area.top - start.y), area.height - box.height);
    Object.assign(element.style, { left: `${left}px`, top: `${top}px`, right: "auto", bottom: "auto" });
  });
  element.addEventListener("pointerup", () => {
    if (!start) return;
    start = null;
    const area = within.getBoundingClientRect();
    const box = element.getBoundingClientRect();
    const right = box.left + box.width / 2 > area.left + area.width / 2;
    const lower = box.top + box.height / 2 > area.top + area.height / 2;
    Object.assign(element.style, { left: "", top: "", right: "", bottom: "" });
    element.classList.toggle("at-left", !right);
    element.classList.toggle("at-top", !lower);
  });
}
