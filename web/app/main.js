// The web app: a page per hash route (#/consultations/…), drawn from the API. Rules stay
// on the server; these modules only ask and show. This module is the top of the app: it
// imports the pages and the shared modules (nav.js, session.js), and nothing imports it.
import { ApiError, get, patch, post } from "./api.js";
import { h, toast } from "./dom.js";
import { chosenLanguage, load, t, tOr, when } from "./i18n.js";
import { REDRAW, go, leavePage } from "./nav.js";
import { onSignedIn, session, signedIn } from "./session.js";
import * as auth from "./auth.js";
import * as patient from "./patient.js";
import * as doctor from "./doctor.js";
import * as manager from "./manager.js";
import * as consultation from "./consultation.js";

const $ = (id) => document.getElementById(id);

// What the tests can read without eval (the CSP forbids it): the page and the bell.
const state = (window.telemedApp = { user: null, route: null, unread: 0, rendered: 0, live: false });
// Navigation for tests and embedding hosts: redraws even when the hash is the same.
window.telemedGo = (hash) => go(hash);

const NAV = {
  patient: [["#/consultations", "nav.consultations"], ["#/new", "nav.new"], ["#/documents", "nav.documents"]],
  doctor: [["#/requests", "nav.requests"], ["#/today", "nav.today"], ["#/slots", "nav.slots"], ["#/consultations", "nav.consultations"]],
  manager: [["#/consultations", "nav.consultations"], ["#/centres", "nav.centres"], ["#/doctors", "nav.doctors"], ["#/imports", "nav.imports"], ["#/sla", "nav.sla"], ["#/outbox", "nav.outbox"]],
};
const HOME = { patient: "#/consultations", doctor: "#/requests", manager: "#/centres", admin: "#/profile" };

// Each module's [pattern, view, options], with its pattern made a regular expression once.
const ROUTES = [
  ...auth.routes, ...patient.routes, ...doctor.routes, ...manager.routes, ...consultation.routes,
].map(([pattern, view, options = {}]) => {
  const names = [];
  const regex = new RegExp("^" + pattern.replace(/:(\w+)/g, (_, name) => { names.push(name); return "([^/]+)"; }) + "$");
  return { regex, names, view, options };
});

function match(path) {
  for (const { regex, names, view, options } of ROUTES) {
    const found = path.match(regex);
    if (found) return { view, options, params: Object.fromEntries(names.map((name, i) => [name, decodeURIComponent(found[i + 1])])) };
  }
  return null;
}

let renderCount = 0;
async function render() {
  leavePage();
  const [path, search = ""] = (location.hash.slice(1) || "/").split("?");
  const user = session.user;
  if (path === "/") return go(user ? (user.must_change_password ? "#/password" : HOME[user.role]) : "#/login");
  const found = match(path);
  const view = $("view");
  const mine = ++renderCount;
  if (!found) {
    view.replaceChildren(h("h1", {}, t("notFound")));
    return;
  }
  if (!found.options.public && !user) return go("#/login");
  if (user && user.must_change_password && path !== "/password") return go("#/password");
  if (found.options.roles && !found.options.roles.includes(user.role)) return go("#/");
  drawNav(path);
  try {
    const content = await found.view({ params: found.params, query: new URLSearchParams(search), user });
    if (mine !== renderCount) return; // a later navigation won
    view.replaceChildren(...[content].flat().filter((part) => part !== null && part !== undefined && part !== false));
    state.route = path;
    state.rendered += 1;
    // "Консультация · запланирована — Телемед": the heading's parts (its words, its
    // badge or date) apart, then the service's name as the page shows it.
    const heading = view.querySelector("h1");
    if (heading) {
      const parts = [...heading.childNodes].map((node) => node.textContent.trim()).filter(Boolean);
      document.title = `${parts.join(" · ")} — ${document.querySelector(".brand").textContent}`;
    }
  } catch (error) {
    if (mine !== renderCount) return;
    if (error instanceof ApiError && error.status === 401) {
      await signedIn(null); // the session ended elsewhere: close the live link too
      return go("#/login");
    }
    view.replaceChildren(h("h1", {}, t("error.title")), h("p", { class: "error", role: "alert" }, error.code ? tOr(`error.${error.code}`, t("error.internal")) : t("error.internal")));
  }
}

function drawNav(path) {
  const user = session.user;
  // A manager bound to one centre does not read the outbox: it is the whole service's.
  const links = (user && !user.must_change_password ? NAV[user.role] || [] : [])
    .filter(([href]) => !(user.centre_id && href === "#/outbox"));
  $("nav").replaceChildren(...links.map(([href, key]) =>
    h("a", { href, "aria-current": path.startsWith(href.slice(1)) ? "page" : null }, t(key))));
  $("who").replaceChildren(...(user ? [
    h("a", { class: "name", href: "#/profile", title: t("profile.title") }, user.full_name),
    h("button", { type: "button", class: "link", onclick: signOut }, t("signOut")),
  ] : []));
}

async function signOut() {
  try {
    await post("/auth/logout");
  } finally {
    await signedIn(null);
    go("#/login");
  }
}

// --- the bell: notifications, live -------------------------------------------------

const bell = { items: [], unread: 0 };

async function loadBell() {
  const list = await get("/notifications?limit=20");
  bell.items = list.items;
  bell.unread = list.unread;
  drawBell();
}

function drawBell() {
  state.unread = bell.unread;
  const panel = h("div", { id: "bell-panel", class: "panel", hidden: true },
    h("h2", {}, t("bell.title")),
    bell.items.length ? h("ul", {}, bell.items.map((item) => h("li", { class: item.read_at ? "" : "unread" },
      h("a", { href: item.consultation_id ? `#/consultations/${item.consultation_id}` : "#/", onclick: () => read(item) }, item.title),
      h("p", {}, item.body),
      h("small", {}, when(item.created_at))))) : h("p", {}, t("bell.empty")),
    bell.unread ? h("button", { type: "button", onclick: readAll }, t("bell.readAll")) : null);
  const button = h("button", {
    type: "button", id: "bell", "aria-expanded": "false", "aria-controls": "bell-panel",
    "aria-label": t("bell.label", { n: bell.unread }),
    onclick: () => {
      panel.hidden = !panel.hidden;
      button.setAttribute("aria-expanded", String(!panel.hidden));
    },
  }, h("img", { src: "/static/bell.svg", alt: "", width: 24, height: 24 }), bell.unread ? h("span", { class: "count" }, String(bell.unread)) : null);
  $("bell-box").replaceChildren(button, panel);
}

// The panel closes with Escape (focus back on the bell) or a click elsewhere.
function closeBell(refocus) {
  const panel = $("bell-panel");
  if (!panel || panel.hidden) return;
  panel.hidden = true;
  $("bell").setAttribute("aria-expanded", "false");
  if (refocus) $("bell").focus();
}
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closeBell(true);
});
document.addEventListener("click", (event) => {
  if (!event.target.closest("#bell-box")) closeBell(false);
});

async function read(item) {
  if (!item.read_at) {
    await post(`/notifications/${item.id}/read`);
    await loadBell();
  }
}

async function readAll() {
  await post("/notifications/read-all");
  await loadBell();
}

// --- the live link -----------------------------------------------------------------

function listen(socket) {
  socket.on("connect", () => { state.live = true; });
  socket.on("disconnect", () => { state.live = false; });
  socket.on("notification:created", (item) => {
    bell.items = [item, ...bell.items].slice(0, 20);
    bell.unread += 1;
    drawBell();
    toast(item.title);
  });
  socket.on("consultation:updated", (item) => {
    window.dispatchEvent(new CustomEvent("telemed:consultation", { detail: item }));
  });
}

onSignedIn(async (user) => {
  state.user = user && { id: user.id, role: user.role, must_change_password: user.must_change_password };
  $("lang").value = chosenLanguage(user);
  if (session.socket) {
    listen(session.socket);
    await loadBell();
  } else {
    $("bell-box").replaceChildren();
  }
});

$("lang").addEventListener("change", async (event) => {
  const chosen = event.target.value;
  localStorage.setItem("telemed-lang", chosen);
  if (session.user) session.user = await patch("/me", { locale: chosen });
  await load(chosen);
  if (session.user) drawBell();
  render();
});

window.addEventListener("hashchange", render);
window.addEventListener(REDRAW, render);

async function boot() {
  let user = null;
  try {
    user = await get("/me");
  } catch (error) {
    // 403: a system client's session (its token is for FHIR only): as signed out here.
    if (!(error instanceof ApiError && (error.status === 401 || error.code === "forbidden"))) throw error;
  }
  await signedIn(user);
  await render();
}

boot();
