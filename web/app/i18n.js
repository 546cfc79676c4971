// Words and dates in the user's language and time zone. Russian by default, English by
// choice: the signed-in user's locale, else ?lang= or the last choice on this device.
// Words come from web/i18n/<part>.<lang>.json for the app's parts, loaded by the
// loader every page uses (lib/i18n.js).
import { LANGUAGES, localeOf, loadWords, pickLanguage } from "../lib/i18n.js";

const PARTS = ["app", "manager"];

let words = {};
let lang = "ru";
let zone = "Europe/Moscow";

// The language asked for on this device (?lang=, else the last choice here), if any.
export function pickedLanguage() {
  const asked = new URLSearchParams(location.search).get("lang") || localStorage.getItem("telemed-lang");
  return LANGUAGES.includes(asked) ? asked : null;
}

export function chosenLanguage(user) {
  return pickLanguage((user && user.locale) || pickedLanguage());
}

export async function load(language, timeZone) {
  lang = language;
  if (timeZone) zone = timeZone;
  words = await loadWords(PARTS, lang);
}

export const language = () => lang;
export const timeZone = () => zone;

// t("key", {name: "…"}) with {name} placeholders; a missing key shows itself.
export function t(key, values = {}) {
  const text = words[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

// A count in words, in the language's plural form (Russian: 41 год, 64 года, 15 лет):
// the dictionary's `${key}_one`, `_few`, `_many` or `_other`, with {n}.
const plurals = new Map();
export function tCount(key, n, values = {}) {
  if (!plurals.has(lang)) plurals.set(lang, new Intl.PluralRules(lang));
  const form = `${key}_${plurals.get(lang).select(n)}`;
  return t(form in words ? form : `${key}_other`, { n, ...values });
}

// The word for ``key``, or ``fallback`` when the dictionary has none (a value the server
// names that has no word yet, an error code the server added).
export function tOr(key, fallback, values = {}) {
  return key in words ? t(key, values) : fallback;
}

// A time zone as people name it: «Москва (UTC+3)», not Europe/Moscow. Russia's zones
// have their city in the dictionary (`zone.Europe/Moscow`); another shows its own city.
export function zoneName(name = zone) {
  const part = new Intl.DateTimeFormat("en-US", { timeZone: name, timeZoneName: "shortOffset" })
    .formatToParts(new Date()).find((p) => p.type === "timeZoneName");
  const offset = part ? part.value.replace("GMT", "UTC").replace(/^UTC$/, "UTC+0") : "";
  const city = tOr(`zone.${name}`, name.split("/").pop().replaceAll("_", " "));
  return offset ? `${city} (${offset})` : city;
}

const formats = {
  dateTime: { dateStyle: "medium", timeStyle: "short" },
  date: { dateStyle: "medium" },
  time: { timeStyle: "short" },
  day: { weekday: "long", day: "numeric", month: "long" },
  weekday: { weekday: "short", day: "numeric", month: "short" },
};

// Formatters are made once per language, zone and style (a list formats many dates).
const formatters = new Map();

export function when(iso, style = "dateTime") {
  if (!iso) return "—";
  const id = `${lang} ${zone} ${style}`;
  if (!formatters.has(id)) {
    formatters.set(id, new Intl.DateTimeFormat(localeOf(lang), { ...formats[style], timeZone: zone }));
  }
  return formatters.get(id).format(new Date(iso));
}

// The calendar date (YYYY-MM-DD) of a moment in the user's time zone.
export function dayOf(moment) {
  return new Intl.DateTimeFormat("en-CA", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit" }).format(moment);
}

// "12 h 5 min" until (or since, negative) a moment.
export function countdown(iso, now = Date.now()) {
  const minutes = Math.round((new Date(iso).getTime() - now) / 60000);
  const whole = Math.abs(minutes);
  const days = Math.floor(whole / 1440);
  const hours = Math.floor((whole % 1440) / 60);
  const rest = whole % 60;
  const text = days ? t("duration.days", { d: days, h: hours }) : hours ? t("duration.hours", { h: hours, m: rest }) : t("duration.minutes", { m: rest });
  return minutes >= 0 ? t("duration.left", { time: text }) : t("duration.overdue", { time: text });
}

export function fileSize(bytes) {
  if (bytes < 1024) return t("size.bytes", { n: bytes });
  if (bytes < 1024 * 1024) return t("size.kb", { n: (bytes / 1024).toFixed(0) });
  return t("size.mb", { n: (bytes / 1024 / 1024).toFixed(1) });
}
