// The patient's cabinet: medical documents, a new consultation by route 1 (a centre's
// request form) or route 2 (a duty doctor's free slot).
import { del, get, post, query, upload } from "./api.js";
import { errorBox, field, form, h, showError, toast } from "./dom.js";
import { dayOf, fileSize, t, tCount, timeZone, when, zoneName } from "./i18n.js";
import { go } from "./nav.js";
import { session } from "./session.js";

export const KINDS = ["discharge_summary", "doctor_conclusion", "ultrasound", "mri", "ct", "lab_results", "other"];
const TOPICS = ["cardiovascular", "gynaecological", "healthy_lifestyle", "other"];

// --- documents ---------------------------------------------------------------------

const PDFJS = "/static/vendor/pdfjs";
const PDF_PAGES = 5;

// A PDF drawn page by page with pdf.js (from npm), the same in every browser: phones and
// app WebViews show no PDF in a frame. Fonts become paths (no FontFace, which the CSP
// would refuse as data: URLs); the standard fonts and CMaps come from the same package.
async function drawPdf(url, box) {
  const pdfjs = await import(`${PDFJS}/build/pdf.min.mjs`);
  pdfjs.GlobalWorkerOptions.workerSrc = `${PDFJS}/build/pdf.worker.min.mjs`;
  const pdf = await pdfjs.getDocument({
    url,
    withCredentials: true,
    disableFontFace: true,
    standardFontDataUrl: `${PDFJS}/standard_fonts/`,
    cMapUrl: `${PDFJS}/cmaps/`,
  }).promise;
  const shown = Math.min(pdf.numPages, PDF_PAGES);
  for (let number = 1; number <= shown; number += 1) {
    const page = await pdf.getPage(number);
    const viewport = page.getViewport({ scale: 1.5 });
    const canvas = h("canvas", { width: Math.floor(viewport.width), height: Math.floor(viewport.height), class: "pdf-page" });
    box.append(canvas);
    await page.render({ canvas, viewport }).promise;
  }
  if (pdf.numPages > shown) box.append(h("p", { class: "muted" }, t("documents.morePages", { n: pdf.numPages - shown })));
  box.dataset.pages = String(pdf.numPages);
}

export function preview(document) {
  const url = `/api/v1/documents/${document.id}/content?inline=true`;
  if (document.content_type.startsWith("image/")) {
    return h("img", { src: url, alt: document.title, class: "preview" });
  }
  if (document.content_type === "application/pdf") {
    const box = h("div", { class: "preview pdf", role: "img", "aria-label": document.title });
    drawPdf(url, box).catch(() => box.replaceChildren(h("p", {}, t("documents.noPreview"))));
    return box;
  }
  return h("p", {}, t("documents.noPreview"));
}

export function documentItem(document, { onDelete } = {}) {
  const shown = h("div", { class: "preview-box", hidden: true });
  const toggle = h("button", {
    type: "button", "aria-expanded": "false",
    onclick: () => {
      if (!shown.firstChild) shown.append(preview(document));
      shown.hidden = !shown.hidden;
      toggle.setAttribute("aria-expanded", String(!shown.hidden));
    },
  }, t("documents.preview"));
  return h("li", { class: "document", dataset: { id: document.id } },
    h("div", { class: "row" },
      h("strong", {}, document.title),
      h("span", { class: "muted" }, `${t(`kind.${document.kind}`)} · ${document.file_name} · ${fileSize(document.size)} · ${when(document.created_at, "date")}`)),
    h("div", { class: "actions" },
      toggle,
      h("a", { href: `/api/v1/documents/${document.id}/content`, download: document.file_name }, t("documents.download")),
      onDelete ? h("button", { type: "button", class: "danger", onclick: () => onDelete(document) }, t("documents.delete")) : null),
    shown);
}

async function documents() {
  const list = h("ul", { class: "documents", id: "documents" });
  const refill = async () => {
    const { items } = await get("/documents");
    list.replaceChildren(...(items.length ? items.map((d) => documentItem(d, { onDelete: remove })) : [h("li", {}, t("documents.none"))]));
  };
  const remove = async (document) => {
    if (!confirm(t("documents.confirmDelete", { title: document.title }))) return;
    await del(`/documents/${document.id}`);
    toast(t("documents.deleted"));
    await refill();
  };
  const progress = h("progress", { max: 1, value: 0, hidden: true, "aria-label": t("documents.progress") });
  const uploadForm = form({ "aria-label": t("documents.upload"), id: "upload-form" }, [
    field("file", "documents.file", { type: "file", required: true, accept: ".pdf,.jpg,.jpeg,.png,.dcm,application/pdf,image/jpeg,image/png" }),
    field("kind", "documents.kind", { type: "select", choices: KINDS.map((k) => [k, t(`kind.${k}`)]) }),
    field("title", "documents.docTitle", { required: true }),
    progress,
  ], "documents.upload", async (values, element) => {
    const file = values.file[0];
    if (!file) throw new Error(t("documents.chooseFile"));
    const data = new FormData();
    data.append("kind", values.kind);
    data.append("title", values.title || file.name);
    data.append("file", file);
    progress.hidden = false;
    try {
      await upload("/documents", data, (share) => { progress.value = share; });
    } finally {
      progress.hidden = true;
      progress.value = 0;
    }
    element.reset();
    toast(t("documents.uploaded"));
    await refill();
  });
  await refill();
  return [h("h1", {}, t("documents.title")), h("section", { class: "card" }, h("h2", {}, t("documents.upload")), uploadForm), list];
}

// --- a new consultation ------------------------------------------------------------

function ageOf(birthDate) {
  if (!birthDate) return "";
  const [year, month, day] = birthDate.split("-").map(Number); // a calendar date, no zone
  const now = new Date();
  let age = now.getFullYear() - year;
  if (now < new Date(now.getFullYear(), month - 1, day)) age -= 1;
  return String(age);
}

async function documentChoice() {
  const { items } = await get("/documents");
  if (!items.length) return h("p", { class: "muted" }, t("new.noDocuments"), " ", h("a", { href: "#/documents" }, t("nav.documents")));
  return h("fieldset", {}, h("legend", {}, t("new.attach")),
    items.map((d) => {
      const id = `doc-${d.id}`;
      return h("p", { class: "field check" },
        h("input", { type: "checkbox", id, name: "document_ids", value: d.id }),
        h("label", { for: id }, `${d.title} (${t(`kind.${d.kind}`)})`));
    }));
}

const chosenDocuments = (element) => [...element.querySelectorAll("input[name=document_ids]:checked")].map((i) => i.value);

async function newConsultation({ query: search }) {
  const { items: centres } = await get("/centres");
  const user = session.user;
  const chosen = search.get("centre");
  if (chosen) {
    const centre = centres.find((c) => c.id === chosen);
    if (!centre) return go("#/new");
    const requestForm = form({ "aria-label": t("new.requestTitle"), id: "request-form" }, [
      h("p", {}, h("strong", {}, centre.name), " — ", centre.profiles.join(", ")),
      field("full_name", "new.fullName", { required: true, value: user.full_name }),
      field("age", "new.age", { type: "number", min: 0, max: 130, required: true, value: ageOf(user.birth_date) }),
      field("diagnosis", "new.diagnosis", { required: true }),
      field("complaints", "new.complaints", { type: "textarea", required: true }),
      field("preferred_times", "new.preferredTimes", { maxlength: 500, hint: "new.preferredTimesHint" }),
      await documentChoice(),
    ], "new.send", async (values, element) => {
      const created = await post("/consultations", {
        route: "initiative", centre_id: centre.id, full_name: values.full_name, age: Number(values.age),
        diagnosis: values.diagnosis, complaints: values.complaints, preferred_times: values.preferred_times,
        document_ids: chosenDocuments(element),
      });
      toast(t("new.sent"));
      go(`#/consultations/${created.id}`);
    });
    return [h("h1", {}, t("new.requestTitle")), h("p", {}, h("a", { href: "#/new" }, t("back"))), requestForm];
  }
  const centreList = h("ul", { class: "cards", id: "centres" }, centres.map((centre) => h("li", { class: "card" },
    h("h3", {}, centre.name),
    h("p", { class: "muted" }, centre.region),
    h("p", {}, centre.profiles.map((p) => h("span", { class: "tag" }, p))),
    centre.description ? h("p", {}, centre.description) : null,
    h("a", { class: "button", href: `#/new?centre=${centre.id}` }, t("new.askCentre")))));
  return [
    h("h1", {}, t("new.title")),
    h("section", { "aria-labelledby": "route1" }, h("h2", { id: "route1" }, t("new.route1")), h("p", {}, t("new.route1Hint")), centreList),
    h("section", { "aria-labelledby": "route2" }, h("h2", { id: "route2" }, t("new.route2")), h("p", {}, t("new.route2Hint")), await dutyBooking()),
  ];
}

async function dutyBooking() {
  const { items: doctors } = await get("/doctors?duty=true");
  if (!doctors.length) return h("p", {}, t("new.noDuty"));
  const slots = h("div", { id: "slots" });
  const box = errorBox();
  const from = new Date();
  const to = new Date(from.getTime() + 14 * 86400000);
  let asked = 0;
  const showSlots = async (doctorId) => {
    const mine = ++asked;
    delete slots.dataset.doctor;
    const { items } = await get(`/doctors/${doctorId}/slots${query({ from: from.toISOString(), to: to.toISOString(), tz: timeZone() })}`);
    if (mine !== asked) return; // another doctor was chosen meanwhile
    const free = items.filter((s) => s.status === "free");
    slots.dataset.doctor = doctorId; // drawn (tests wait for it)
    if (!free.length) {
      slots.replaceChildren(h("p", {}, t("new.noSlots")));
      return;
    }
    const byDay = new Map();
    for (const slot of free) {
      const day = dayOf(new Date(slot.starts_at));
      if (!byDay.has(day)) byDay.set(day, []);
      byDay.get(day).push(slot);
    }
    // Days as a row of chips, the chosen day's free times as large chips below: tapped,
    // not hunted for among dozens of radio buttons. Both are radio groups underneath
    // (arrow keys move, the screen reader says "3 of 12").
    const times = h("div", { class: "chips times", role: "radiogroup", "aria-labelledby": "times-legend" });
    const showDay = (day) => {
      times.replaceChildren(...byDay.get(day).map((slot) => {
        const id = `slot-${slot.id}`;
        return h("span", { class: "chip" },
          h("input", { type: "radio", name: "slot_id", id, value: slot.id, required: true }),
          h("label", { for: id }, when(slot.starts_at, "time")));
      }));
    };
    const days = [...byDay.keys()].map((day, index) => {
      const id = `day-${day}`;
      const input = h("input", { type: "radio", name: "day", id, value: day, checked: index === 0 });
      input.addEventListener("change", () => showDay(day));
      const first = byDay.get(day)[0].starts_at;
      return h("span", { class: "chip day-chip" }, input,
        h("label", { for: id }, when(first, "weekday"), h("small", {}, tCount("new.freeCount", byDay.get(day).length))));
    });
    showDay([...byDay.keys()][0]);
    slots.replaceChildren(h("fieldset", {}, h("legend", {}, t("new.slot", { zone: zoneName() })),
      h("div", { class: "chips days", role: "radiogroup", "aria-label": t("new.day") }, days),
      h("p", { id: "times-legend", class: "muted" }, t("new.time")),
      times));
  };
  const doctorSelect = field("doctor", "new.dutyDoctor", {
    type: "select", choices: doctors.map((d) => [d.id, `${d.full_name} — ${d.specialty}`]),
  });
  // The topics the chosen doctor's specialty answers ("other" always among them).
  const topicField = field("topic", "new.topic", { type: "select", choices: [] });
  const showTopics = (doctorId) => {
    const doctor = doctors.find((d) => d.id === doctorId);
    topicField.querySelector("select").replaceChildren(...(doctor.topics || TOPICS).map((k) => h("option", { value: k }, t(`topic.${k}`))));
  };
  doctorSelect.querySelector("select").addEventListener("change", (event) => {
    showTopics(event.target.value);
    showSlots(event.target.value).catch((e) => showError(box, e));
  });
  const booking = form({ "aria-label": t("new.route2"), id: "duty-form" }, [
    box, doctorSelect, slots,
    topicField,
    field("question", "new.question", { type: "textarea" }),
  ], "new.book", async (values, element) => {
    const slot = element.querySelector("input[name=slot_id]:checked");
    if (!slot) throw new Error(t("new.chooseSlot"));
    const created = await post("/consultations", { route: "duty", slot_id: slot.value, channel: "video", topic: values.topic, question: values.question });
    toast(t("new.booked"));
    go(`#/consultations/${created.id}`);
  });
  showTopics(doctors[0].id);
  await showSlots(doctors[0].id);
  return booking;
}

export const routes = [
  ["/documents", documents, { roles: ["patient"] }],
  ["/new", newConsultation, { roles: ["patient"] }],
];
