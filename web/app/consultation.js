// Consultations, for every role: the live list, one consultation's details with what the
// caller may do now (the server's allowed_moves), its chat, and its conclusion.
import { Chat } from "../lib/chat.js";
import { get, post, query } from "./api.js";
import { badge, errorBox, field, form, h, showError, toast } from "./dom.js";
import { countdown, fileSize, t, tCount, timeZone, when, zoneName } from "./i18n.js";
import { go, onLeave } from "./nav.js";
import { session } from "./session.js";
import { documentItem } from "./patient.js";
import { credentialsCard } from "./manager.js";

const LIVE = ["requested", "scheduled", "in_progress"];

// After a move: say so and show the consultation as it is now.
function done(move) {
  toast(t(`done.${move}`));
  go(location.hash);
}

// A wall-clock time ("2026-11-27T10:30") in the user's time zone (not the browser's) as
// an ISO moment with its offset.
export function zonedIso(local, zone = timeZone()) {
  const wall = Date.parse(local + ":00Z");
  const offsetAt = (moment) => {
    const parts = Object.fromEntries(new Intl.DateTimeFormat("en-US", {
      timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    }).formatToParts(new Date(moment)).map((p) => [p.type, p.value]));
    return Date.UTC(parts.year, parts.month - 1, parts.day, parts.hour, parts.minute, parts.second) - moment;
  };
  let moment = wall - offsetAt(wall);
  moment = wall - offsetAt(moment);
  return new Date(moment).toISOString();
}

// Refresh a page while it is shown whenever one of its consultations changes.
export function onConsultationChange(ids, redraw) {
  const listener = (event) => {
    if (!ids || ids.includes(event.detail.id)) redraw();
  };
  window.addEventListener("telemed:consultation", listener);
  onLeave(() => window.removeEventListener("telemed:consultation", listener));
}

// Whether the user has typed or ticked something in the page's forms.
function edited(element) {
  return [...element.querySelectorAll("input, textarea")].some((field) =>
    field.type === "checkbox" || field.type === "radio" ? field.checked !== field.defaultChecked : field.value !== field.defaultValue);
}

function summary(item) {
  const topic = item.route === "duty" ? t(`topic.${item.topic}`) : item.diagnosis;
  return h("li", { class: "card consultation", dataset: { id: item.id, state: item.state } },
    h("div", { class: "row" }, badge(item.state), h("span", { class: "muted" }, t(`route.${item.route}`))),
    h("h3", {}, h("a", { href: `#/consultations/${item.id}` }, session.user.role === "patient" ? item.centre.name : item.full_name)),
    h("p", {}, topic),
    item.starts_at ? h("p", {}, h("strong", {}, when(item.starts_at)), item.doctor ? ` · ${item.doctor.full_name}` : "") : null,
    item.state === "requested" && item.due_at ? h("p", { class: "deadline", dataset: { due: item.due_at } }, countdown(item.due_at)) : null);
}

const byStart = (a, b) => (a.starts_at || "").localeCompare(b.starts_at || "");

// A list of consultations (filtered by the API's query), kept live; `earliestFirst`
// orders it by start time (the API answers the newest first).
export async function consultationList(filters, empty, { earliestFirst = false } = {}) {
  const list = h("ul", { class: "cards", id: "consultations" });
  let asked = 0;
  const refill = async () => {
    const mine = ++asked;
    const { items } = await get(`/consultations${query(filters)}`);
    if (mine !== asked) return; // a later refill is on its way
    if (earliestFirst) items.sort(byStart);
    list.replaceChildren(...(items.length ? items.map(summary) : [h("li", { class: "muted" }, t(empty))]));
  };
  await refill();
  onConsultationChange(null, refill);
  // Deadlines count down while the page is open.
  const timer = setInterval(() => {
    list.querySelectorAll(".deadline").forEach((p) => { p.textContent = countdown(p.dataset.due); });
  }, 30000);
  onLeave(() => clearInterval(timer));
  return list;
}

async function consultations({ query: search }) {
  const state = search.get("state") || "";
  const filter = h("nav", { class: "filters", "aria-label": t("list.filter") },
    ["", ...LIVE, "completed", "concluded", "cancelled", "declined", "no_show"].map((s) => h("a", { href: `#/consultations${s ? `?state=${s}` : ""}`, "aria-current": s === state ? "true" : null }, s ? t(`state.${s}`) : t("list.all"))));
  return [h("h1", {}, t("list.title")), filter, await consultationList({ state }, "list.none")];
}

// --- one consultation --------------------------------------------------------------

function facts(item) {
  const rows = [
    ["details.patient", `${item.full_name}${item.age !== null ? `, ${tCount("details.years", item.age)}` : ""}`],
    ["details.centre", item.centre.name],
    ["details.doctor", item.doctor ? `${item.doctor.full_name} (${item.doctor.specialty})` : "—"],
    ["details.route", t(`route.${item.route}`)],
    item.route === "duty" ? ["details.topic", t(`topic.${item.topic}`)] : ["details.diagnosis", `${item.icd10 ? item.icd10 + " " : ""}${item.diagnosis}`],
    item.complaints ? ["details.complaints", item.complaints] : null,
    item.question ? ["details.question", item.question] : null,
    item.preferred_times ? ["details.preferredTimes", item.preferred_times] : null,
    item.referring_organisation ? ["details.referredBy", `${item.referring_organisation}, ${item.referring_doctor}`] : null,
    ["details.submitted", when(item.submitted_at)],
    item.starts_at ? ["details.starts", `${when(item.starts_at)} – ${when(item.ends_at, "time")} (${zoneName()})`] : null,
    item.state === "requested" && item.due_at ? ["details.due", `${when(item.due_at)} · ${countdown(item.due_at)}`] : null,
    item.reason ? ["details.reason", item.reason] : null,
  ].filter(Boolean);
  return h("dl", { class: "facts" }, rows.flatMap(([key, value]) => [h("dt", {}, t(key)), h("dd", {}, value)]));
}

// Declining or cancelling: a form of its own whose button looks like what it is (a
// refusal, never the page's primary action).
function reasonForm(id, move, label) {
  const element = form({ class: "inline", id: `${move}-form`, "aria-label": t(label) }, [
    field("reason", "details.reasonLabel", { required: true, minlength: 3 }),
  ], label, async (values) => {
    await post(`/consultations/${id}/${move}`, { reason: values.reason });
    done(move);
  });
  element.querySelector("button[type=submit]").classList.add("danger");
  return element;
}

function scheduleForm(item) {
  return form({ class: "inline", id: "schedule-form", "aria-label": t("details.schedule") }, [
    field("starts_at", "details.startsAt", { type: "datetime-local", required: true, hint: "details.inYourZone" }),
    field("duration_min", "details.duration", { type: "number", min: 5, max: 240, value: "30", required: true }),
  ], "details.schedule", async (values) => {
    await post(`/consultations/${item.id}/schedule`, { starts_at: zonedIso(values.starts_at), duration_min: Number(values.duration_min) });
    done("schedule");
  });
}

function conclusionForm(item) {
  return form({ id: "conclusion-form", "aria-label": t("conclusion.write") }, [
    field("diagnosis", "conclusion.diagnosis", { required: true, value: item.diagnosis }),
    field("icd10", "conclusion.icd10", { value: item.icd10 || "", hint: "conclusion.icd10Hint" }),
    field("findings", "conclusion.findings", { type: "textarea", required: true }),
    field("recommendations", "conclusion.recommendations", { type: "textarea", required: true }),
  ], "conclusion.issue", async (values) => {
    const body = { ...values };
    if (!body.icd10) delete body.icd10;
    await post(`/consultations/${item.id}/conclusion`, body);
    done("conclude");
  });
}

async function conclusionView(item) {
  const { current } = await get(`/consultations/${item.id}/conclusion`);
  return h("section", { class: "card", id: "conclusion", "aria-labelledby": "conclusion-title" },
    h("h2", { id: "conclusion-title" }, t("conclusion.title")),
    h("dl", { class: "facts" },
      h("dt", {}, t("conclusion.diagnosis")), h("dd", {}, `${current.icd10 ? current.icd10 + " " : ""}${current.diagnosis}`),
      h("dt", {}, t("conclusion.findings")), h("dd", { class: "text" }, current.findings),
      h("dt", {}, t("conclusion.recommendations")), h("dd", { class: "text" }, current.recommendations),
      h("dt", {}, t("conclusion.issued")), h("dd", {}, when(current.issued_at))),
    h("a", { class: "button", id: "conclusion-pdf", href: `/api/v1/consultations/${item.id}/conclusion.pdf`, download: `conclusion-${item.id}.pdf` }, t("conclusion.pdf")));
}

async function documentsOf(item) {
  if (!item.document_ids.length) return h("p", { class: "muted" }, t("details.noDocuments"));
  const documents = await Promise.all(item.document_ids.map((id) => get(`/documents/${id}`).catch(() => null)));
  return h("ul", { class: "documents" }, documents.filter(Boolean).map((d) => documentItem(d)));
}

// The consultation's chat (lib/chat.js, the same as the video room's): drawn in seq
// order as text, kept up to date live and after a reconnection, read-only when the
// server takes no new messages.
function chat(item) {
  const me = session.user;
  const other = me.role === "patient" ? (item.doctor ? item.doctor.full_name : t("chat.doctor")) : item.full_name;
  const log = h("ol", { class: "chat-log", id: "chat-log", "aria-live": "polite" });
  const box = errorBox();
  const closed = h("p", { class: "muted", id: "chat-closed", hidden: true }, t("chat.closed"));
  const input = h("input", { id: "chat-input", name: "body", autocomplete: "off", required: true, maxlength: 4000 });
  const button = h("button", { type: "submit" }, t("chat.send"));
  const feed = new Chat({
    socket: session.socket,
    consultationId: item.id,
    onMessage(message, index) {
      const mine = message.sender_id === me.id;
      log.insertBefore(h("li", { class: mine ? "mine" : "theirs", dataset: { seq: message.seq } },
        h("span", { class: "who" }, mine ? t("chat.you") : other),
        h("span", { class: "body" }, message.body),
        h("time", { datetime: message.created_at }, when(message.created_at, "time"))), log.children[index] || null);
      log.scrollTop = log.scrollHeight;
    },
    onWritable(writable) {
      input.disabled = button.disabled = !writable;
      closed.hidden = writable;
    },
    onError: (error) => showError(box, error),
  });
  feed.follow();
  onLeave(() => feed.close());
  const send = h("form", { id: "chat-form", class: "chat-form", "aria-label": t("chat.title") },
    h("label", { for: "chat-input", class: "visually-hidden" }, t("chat.message")),
    input,
    button);
  send.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = input.value.trim();
    if (!body) return;
    box.hidden = true;
    const answer = await feed.send(body);
    if (!answer.ok) return showError(box, answer.error);
    input.value = "";
  });
  return h("section", { class: "card chat", id: "chat", "aria-labelledby": "chat-title" },
    h("h2", { id: "chat-title" }, t("chat.title")), box, closed, log, send);
}

// The consultation's recordings, for those the server lets see them (the doctor and the
// manager; the patient if the service allows it): nothing is shown to the others.
async function recordingsOf(item) {
  let items;
  try {
    ({ items } = await get(`/consultations/${item.id}/recordings`));
  } catch (error) {
    if (error.status === 403 || error.status === 404) return null;
    throw error;
  }
  if (!items.length) return null;
  const who = (userId) => (userId === item.patient.id ? t("details.patient") : t("details.doctor"));
  return h("section", { class: "card", id: "recordings", "aria-labelledby": "recordings-title" },
    h("h2", { id: "recordings-title" }, t("recordings.title")),
    h("ul", { class: "documents" }, items.map((r) => h("li", { class: "document", dataset: { state: r.state } },
      h("strong", {}, `${who(r.user_id)} · ${when(r.started_at)}`),
      h("span", { class: "muted" }, ` ${t(`recordings.${r.state}`)}${r.duration_seconds ? ` · ${Math.round(r.duration_seconds)} ${t("recordings.seconds")}` : ""}${r.size ? ` · ${fileSize(r.size)}` : ""}`),
      r.state === "complete" ? h("p", { class: "actions" }, h("a", { href: `/api/v1/recordings/${r.id}/file`, download: `recording-${r.id}.webm` }, t("documents.download"))) : null))));
}

// How the calls went (the doctor and the manager): time by level, freezes, the worst
// moment, time through TURN and on audio only, per participant.
async function qualityOf(item) {
  let items;
  try {
    ({ items } = await get(`/consultations/${item.id}/call-quality`));
  } catch (error) {
    if (error.status === 403 || error.status === 404) return null;
    throw error;
  }
  if (!items.length) return null;
  const minutes = (seconds) => t("quality.minutes", { n: (seconds / 60).toFixed(1) });
  return h("section", { class: "card", id: "call-quality", "aria-labelledby": "call-quality-title" },
    h("h2", { id: "call-quality-title" }, t("quality.title")),
    h("ul", {}, items.map((q) => h("li", { dataset: { role: q.role } },
      h("strong", {}, t(`details.${q.role}`)), ": ",
      [
        `${t("quality.good")} ${minutes(q.good_seconds)}`,
        `${t("quality.weak")} ${minutes(q.weak_seconds)}`,
        `${t("quality.poor")} ${minutes(q.poor_seconds)}`,
        t("quality.freezes", { n: q.freezes, seconds: q.freeze_seconds }),
        q.relay_seconds ? `${t("quality.relay")} ${minutes(q.relay_seconds)}` : null,
        q.audio_only_seconds ? `${t("quality.audioOnly")} ${minutes(q.audio_only_seconds)}` : null,
      ].filter(Boolean).join("; "),
      q.worst && q.worst.level !== "good"
        ? h("p", { class: "muted" }, t("quality.worst", { when: when(q.worst.at), level: t(`quality.${q.worst.level}`) }))
        : null))));
}

// The patient adds documents from the cabinet to an open consultation.
async function attachForm(item) {
  const { items } = await get("/documents");
  const free = items.filter((d) => !item.document_ids.includes(d.id));
  // With nothing attached and nothing to attach, "none attached" above says enough.
  if (!items.length) return h("p", { class: "muted" }, t("details.uploadFirst"), " ", h("a", { href: "#/documents" }, t("nav.documents")));
  if (!free.length) return h("p", { class: "muted" }, t("details.nothingToAttach"), " ", h("a", { href: "#/documents" }, t("nav.documents")));
  return form({ id: "attach-form", "aria-label": t("details.attach") }, [
    h("fieldset", {}, h("legend", {}, t("details.attach")), free.map((d) => {
      const id = `attach-${d.id}`;
      return h("p", { class: "field check" },
        h("input", { type: "checkbox", id, name: "document_ids", value: d.id }),
        h("label", { for: id }, `${d.title} (${t(`kind.${d.kind}`)})`));
    })),
  ], "details.attachSubmit", async (values, element) => {
    const chosen = [...element.querySelectorAll("input[name=document_ids]:checked")].map((i) => i.value);
    if (!chosen.length) throw new Error(t("details.chooseDocuments"));
    await post(`/consultations/${item.id}/documents`, { document_ids: chosen });
    done("attach");
  });
}

async function details({ params }) {
  const item = await get(`/consultations/${params.id}`);
  const moves = new Set(item.allowed_moves);
  // Only the parts the server offers this user are asked for (no 403s, no "not found").
  const readable = new Set(item.readable);
  const role = session.user.role;
  const actions = [];
  if (LIVE.includes(item.state) && item.state !== "requested" && role !== "manager") {
    actions.push(h("a", { class: "button primary", id: "join-room", href: `/static/room.html?consultation=${item.id}` }, t("details.joinRoom")));
    actions.push(h("a", { class: "button", id: "calendar", href: `/api/v1/consultations/${item.id}/calendar.ics`, download: `consultation-${item.id}.ics` }, t("details.calendar")));
  }
  if (moves.has("start")) {
    actions.push(h("button", { type: "button", id: "start", onclick: async () => { await post(`/consultations/${item.id}/start`); done("start"); } }, t("details.start")));
  }
  if (moves.has("end")) {
    actions.push(h("button", { type: "button", id: "end", onclick: async () => { await post(`/consultations/${item.id}/end`); done("end"); } }, t("details.end")));
  }
  const forms = [];
  if (moves.has("schedule") || moves.has("reschedule")) forms.push(h("section", { class: "card" }, h("h2", {}, t("details.schedule")), scheduleForm(item)));
  if (moves.has("decline")) forms.push(h("section", { class: "card" }, h("h2", {}, t("details.decline")), reasonForm(item.id, "decline", "details.decline")));
  if (moves.has("conclude") && role === "doctor") forms.push(h("section", { class: "card" }, h("h2", {}, t("conclusion.write")), conclusionForm(item)));
  if (moves.has("cancel")) {
    const cancel = h("details", { class: "card" }, h("summary", {}, t("details.cancel")), reasonForm(item.id, "cancel", "details.cancel"));
    forms.push(cancel);
  }
  const page = h("article", { class: "consultation-page", dataset: { state: item.state } },
    h("p", {}, h("a", { href: role === "doctor" ? "#/requests" : role === "manager" ? "#/sla" : "#/consultations" }, t("back"))),
    h("h1", {}, t("details.title"), " ", badge(item.state)),
    facts(item),
    actions.length ? h("p", { class: "actions" }, actions) : null,
    item.state === "concluded" ? await conclusionView(item) : null,
    ["completed", "concluded", "in_progress"].includes(item.state) && readable.has("recordings") ? await recordingsOf(item) : null,
    ["completed", "concluded", "in_progress"].includes(item.state) && readable.has("call_quality") ? await qualityOf(item) : null,
    ...forms,
    role === "manager" && item.route === "referral" ? credentialsCard(item) : null,
    h("section", { class: "card", "aria-labelledby": "docs-title" }, h("h2", { id: "docs-title" }, t("details.documents")), await documentsOf(item),
      role === "patient" && LIVE.includes(item.state) ? await attachForm(item) : null),
    readable.has("chat") ? chat(item) : null);
  // Drawn again when the consultation changes, unless that would throw away what the
  // user is typing: then a notice offers to reload.
  const notice = h("p", { class: "notice", role: "status", hidden: true }, t("details.changed"), " ",
    h("button", { type: "button", onclick: () => go(location.hash) }, t("details.reload")));
  page.prepend(notice);
  onConsultationChange([item.id], () => {
    if (edited(page)) notice.hidden = false;
    else go(location.hash);
  });
  return page;
}

export const routes = [
  ["/consultations", consultations],
  ["/consultations/:id", details],
];
