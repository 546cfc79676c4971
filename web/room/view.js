// The room's words (web/i18n/room.<lang>.json, loaded by lib/i18n.js) and the places
// they are shown: the status line, the notice of the user's last action, refusals in the
// user's words, role names, and times in the user's own time zone.
import { localeOf } from "../lib/i18n.js";

export const $ = (id) => document.getElementById(id);

export function createView({ TEXT, lang, timeZone }) {
  const zone = { timeZone };
  const locale = localeOf(lang);
  const timeFormat = new Intl.DateTimeFormat(locale, { hour: "2-digit", minute: "2-digit", ...zone });
  const momentFormat = new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeStyle: "short", ...zone });
  return {
    TEXT,
    say(text) {
      $("status").textContent = text;
    },
    // What came of the user's last action (a refused command), apart from the room's state.
    notice(text) {
      $("notice").textContent = text;
    },
    roleName(role) {
      return TEXT[role === "doctor" ? "roleDoctor" : role === "patient" ? "rolePatient" : "roleOther"];
    },
    // A refusal in the user's words (the server's message is English), with when the
    // room opens if it is too early.
    explain(error) {
      const opens = error.details && error.details.opens_at;
      if (error.code === "too_late" && opens) return TEXT.refused_too_early.replace("{time}", momentFormat.format(new Date(opens)));
      return TEXT[`refused_${error.code}`] || TEXT.error + error.message;
    },
    time(iso) {
      return timeFormat.format(new Date(iso));
    },
  };
}
