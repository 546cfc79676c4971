// A few DOM helpers instead of a view library: h() builds elements, form() builds a
// labelled, keyboard-friendly form whose errors are shown next to it.
import { t, tOr } from "./i18n.js";

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name === "text") element.textContent = value;
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, value);
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

let counter = 0;
const nextId = () => `f${++counter}`;

// A labelled input: field(name, labelKey, {type, required, value, choices, hint}).
export function field(name, label, options = {}) {
  const id = nextId();
  const { type = "text", choices, hint, ...rest } = options;
  let control;
  if (type === "textarea") {
    control = h("textarea", { id, name, rows: 4, ...rest });
    if (rest.value) control.defaultValue = rest.value; // its text, so that a reset keeps it
  } else if (type === "select") {
    control = h("select", { id, name, ...rest },
      choices.map(([value, text]) => h("option", { value, selected: String(value) === String(rest.value ?? "") }, text)));
  } else if (type === "checkbox") {
    control = h("input", { id, name, type, ...rest });
    return h("p", { class: "field check" }, control, h("label", { for: id }, t(label)));
  } else {
    control = h("input", { id, name, type, ...rest });
  }
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  return h("p", { class: "field" },
    h("label", { for: id }, t(label)),
    control,
    hint ? h("small", { id: hintId }, t(hint)) : null);
}

export function errorBox() {
  return h("p", { class: "error", role: "alert", hidden: true });
}

// What is wrong with one value, in the user's words: the server's problem code
// (`details.fields[].code`, an import row's `errors[].code`) with the values its text
// names. A list (columns, say) is joined; `words` turns each of its items into a word.
export function problemText(entry, words = (name, value) => value) {
  const params = {};
  for (const [name, value] of Object.entries(entry.params || {})) {
    params[name] = Array.isArray(value) ? value.map((item) => words(name, item)).join(", ") : words(name, value);
  }
  return entry.code ? tOr(`problem.${entry.code}`, entry.message || t("problem.invalid"), params) : entry.message;
}

export const capitalised = (text) => text.charAt(0).toUpperCase() + text.slice(1);

// An error shown in a form's box: the error's own words, then what is wrong with each
// field, named by the field's label in the form (which is marked aria-invalid).
export function showError(box, error) {
  box.hidden = false;
  const owner = box.closest("form");
  if (owner) for (const marked of owner.querySelectorAll("[aria-invalid]")) marked.removeAttribute("aria-invalid");
  const fields = error.details && Array.isArray(error.details.fields) ? error.details.fields : [];
  const told = fields.filter((entry) => entry.code).map((entry) => {
    const control = owner && entry.field ? owner.querySelector(`[name="${CSS.escape(entry.field.split(".").pop())}"]`) : null;
    if (control) control.setAttribute("aria-invalid", "true");
    const label = control && control.labels && control.labels[0] ? control.labels[0].textContent : "";
    const text = problemText(entry);
    return label ? `${label}: ${text}` : capitalised(text);
  });
  const general = error.code ? tOr(`error.${error.code}`, t("error.internal")) : error.message;
  // A value the user can correct is told by its field alone; anything else by both.
  box.textContent = told.length ? (error.code === "invalid_input" ? `${general} ${told.join("; ")}.` : `${told.join("; ")}.`) : general;
}

// A form whose submit handler gets the values; failures are shown in the form, and the
// button is disabled while the request runs.
export function form(attributes, children, submitLabel, onSubmit) {
  const box = errorBox();
  const button = h("button", { type: "submit" }, t(submitLabel));
  const element = h("form", { novalidate: false, ...attributes }, box, children, h("p", {}, button));
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    box.hidden = true;
    button.disabled = true;
    try {
      await onSubmit(values(element), element);
    } catch (error) {
      showError(box, error);
    } finally {
      button.disabled = false;
    }
  });
  return element;
}

export function values(formElement) {
  const result = {};
  for (const element of formElement.elements) {
    if (!element.name) continue;
    if (element.type === "checkbox") result[element.name] = element.checked;
    else if (element.type === "file") result[element.name] = element.files;
    else if (element.multiple) result[element.name] = [...element.selectedOptions].map((o) => o.value);
    else result[element.name] = element.value;
  }
  return result;
}

export function toast(text) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.classList.add("shown");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.classList.remove("shown"), 4000);
}

// The wrap scrolls sideways on a phone: focusable, so the keyboard can scroll it too.
export function table(headers, rows, attributes = {}) {
  const label = attributes["aria-labelledby"];
  return h("div", { class: "table-wrap", tabindex: "0", role: label ? "region" : null, "aria-labelledby": label },
    h("table", attributes,
      h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col" }, t(text))))),
      h("tbody", {}, rows)));
}

export const badge = (state) => h("span", { class: `badge state-${state}` }, t(`state.${state}`));
