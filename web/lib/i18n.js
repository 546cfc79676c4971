// The one loader of words for every page: web/i18n/<part>.<lang>.json (the app's parts
// "app" and "manager", the room's "room"), merged into one dictionary, and the page's
// own markup (data-i18n for text, data-i18n-label for aria-label) put in that language.
// Russian by default, English by choice; both languages have the same keys (a test
// checks them).
export const LANGUAGES = ["ru", "en"];

// The first of the candidates that is a language we speak; Russian otherwise.
export function pickLanguage(...candidates) {
  return candidates.find((candidate) => LANGUAGES.includes(candidate)) || "ru";
}

export const localeOf = (lang) => (lang === "en" ? "en-GB" : "ru-RU");

export async function loadWords(parts, lang) {
  const loaded = await Promise.all(parts.map(async (part) => (await fetch(`/static/i18n/${part}.${lang}.json`)).json()));
  const words = Object.assign({}, ...loaded);
  translatePage(words, lang);
  return words;
}

// A key missing from the dictionary shows itself.
export function translatePage(words, lang) {
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-i18n]").forEach((element) => {
    element.textContent = words[element.dataset.i18n] ?? element.dataset.i18n;
  });
  document.querySelectorAll("[data-i18n-label]").forEach((element) => {
    element.setAttribute("aria-label", words[element.dataset.i18nLabel] ?? element.dataset.i18nLabel);
  });
}
