// The manager's console: medical centres and their doctors, referral tables (checked
// first, then imported; new credentials for a referred patient), response deadlines, and
// the outbox of SMS and e-mail. The server decides everything; these pages ask and show.
import { del, get, patch, post, query, upload } from "./api.js";
import { capitalised, errorBox, field, form, h, problemText, showError, table, toast } from "./dom.js";
import { countdown, t, tOr, when } from "./i18n.js";
import { go, onLeave } from "./nav.js";

const MANAGER = { roles: ["manager"] };

// Draw the current page again (after a change).
const redraw = () => go(location.hash);

// A word for a value the server names (a status, a column), or the value itself when the
// dictionary has no word for it yet.
const word = (prefix, value) => tOr(`${prefix}.${value}`, value);

const profilesOf = (text) => text.split(/[,;\n]/).map((p) => p.trim()).filter(Boolean);

// A button that asks first, then removes; a refusal (409 centre_has_doctors) is shown in
// the page's error box, in the user's language.
function archiveButton(label, question, path, done, box) {
  return h("button", {
    type: "button", class: "danger", "aria-label": label,
    onclick: async (event) => {
      if (!confirm(question)) return;
      box.hidden = true;
      event.target.disabled = true;
      try {
        await del(path);
      } catch (error) {
        event.target.disabled = false;
        showError(box, error);
        box.focus();
        return;
      }
      toast(done);
      redraw();
    },
  }, t("manager.archive"));
}

// The last cell of a directory row: edit, and archive (asking first).
function rowActions(href, name, prefix, path, box) {
  return h("td", {}, h("div", { class: "actions" },
    h("a", { class: "button", href, "aria-label": t(`${prefix}.editOne`, { name }) }, t("manager.edit")),
    archiveButton(t(`${prefix}.archiveOne`, { name }), t(`${prefix}.confirmArchive`, { name }), path, t(`${prefix}.archived`), box)));
}

// A directory page's body: the table (or a word that it is empty), then the form that adds
// to it, folded away once there is something to list.
function listAndForm(id, headers, rows, noneKey, addKey, create) {
  return [
    rows.length ? table([...headers, "manager.actions"], rows, { id }) : h("p", { class: "muted" }, t(noneKey)),
    h("details", { class: "card", open: !rows.length }, h("summary", {}, t(addKey)), create),
  ];
}

// --- medical centres ---------------------------------------------------------------

function centreFields(centre = {}) {
  return [
    field("name", "centres.name", { required: true, maxlength: 200, value: centre.name }),
    field("region", "centres.region", { required: true, maxlength: 200, value: centre.region }),
    field("profiles", "centres.profiles", { required: true, hint: "centres.profilesHint", value: (centre.profiles || []).join(", ") }),
    field("description", "centres.description", { type: "textarea", maxlength: 4000, value: centre.description }),
  ];
}

const centreBody = (values) => ({
  name: values.name.trim(), region: values.region.trim(), profiles: profilesOf(values.profiles), description: values.description.trim(),
});

async function centres() {
  const [{ items }, { items: doctors }] = await Promise.all([get("/centres"), get("/doctors")]);
  const staffed = new Map();
  for (const doctor of doctors) staffed.set(doctor.centre_id, (staffed.get(doctor.centre_id) || 0) + 1);
  const box = h("p", { class: "error", role: "alert", id: "centres-error", tabindex: "-1", hidden: true });
  const create = form({ id: "centre-form", "aria-label": t("centres.add") }, centreFields(), "centres.add", async (values) => {
    await post("/centres", centreBody(values));
    toast(t("centres.created"));
    redraw();
  });
  const rows = items.map((centre) => h("tr", { dataset: { id: centre.id } },
    h("th", { scope: "row" }, centre.name),
    h("td", {}, centre.region),
    h("td", {}, centre.profiles.join(", ")),
    h("td", {}, h("a", { href: `#/doctors?centre=${centre.id}`, "aria-label": `${staffed.get(centre.id) || 0} — ${t("centres.doctorsOf", { name: centre.name })}` }, String(staffed.get(centre.id) || 0))),
    rowActions(`#/centres/${centre.id}`, centre.name, "centres", `/centres/${centre.id}`, box)));
  return [
    h("h1", {}, t("centres.title")),
    box,
    ...listAndForm("centres", ["centres.name", "centres.region", "centres.profiles", "centres.doctors"], rows, "centres.none", "centres.add", create),
  ];
}

async function centre({ params }) {
  const item = await get(`/centres/${params.id}`);
  const edit = form({ id: "centre-form", "aria-label": t("centres.editTitle", { name: item.name }) }, centreFields(item), "manager.save", async (values) => {
    await patch(`/centres/${item.id}`, centreBody(values));
    toast(t("manager.saved"));
    go("#/centres");
  });
  return [h("p", {}, h("a", { href: "#/centres" }, t("back"))), h("h1", {}, t("centres.editTitle", { name: item.name })), edit];
}

// --- doctors -----------------------------------------------------------------------

const centreChoice = (centres, chosen) => field("centre_id", "doctors.centre", {
  type: "select", required: true, value: chosen, choices: centres.map((c) => [c.id, c.name]),
});

function doctorFields(centres, doctor = {}) {
  return [
    field("full_name", "doctors.fullName", { required: true, maxlength: 200, value: doctor.full_name }),
    centreChoice(centres, doctor.centre_id),
    field("specialty", "doctors.specialty", { required: true, maxlength: 200, value: doctor.specialty }),
    field("is_duty", "doctors.duty", { type: "checkbox", checked: Boolean(doctor.is_duty) }),
    field("bio", "doctors.bio", { type: "textarea", maxlength: 4000, value: doctor.bio }),
  ];
}

const doctorBody = (values) => ({
  full_name: values.full_name.trim(), centre_id: values.centre_id, specialty: values.specialty.trim(), is_duty: values.is_duty, bio: values.bio.trim(),
});

async function doctors({ query: search }) {
  const chosen = search.get("centre") || "";
  const [{ items: centreList }, { items }] = await Promise.all([get("/centres"), get(`/doctors${query({ centre_id: chosen })}`)]);
  const heading = h("h1", {}, t("doctors.title"));
  if (!centreList.length) return [heading, h("p", { class: "notice" }, t("doctors.noCentres"), " ", h("a", { href: "#/centres" }, t("nav.centres")))];
  const filter = h("form", { class: "filters", id: "doctors-filter", role: "search" },
    field("centre", "doctors.filter", { type: "select", value: chosen, choices: [["", t("doctors.allCentres")], ...centreList.map((c) => [c.id, c.name])] }),
    h("p", {}, h("button", { type: "submit" }, t("manager.show"))));
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    go(`#/doctors${query({ centre: filter.elements.centre.value })}`);
  });
  const box = h("p", { class: "error", role: "alert", tabindex: "-1", hidden: true });
  const create = form({ id: "doctor-form", "aria-label": t("doctors.add") }, [
    field("full_name", "doctors.fullName", { required: true, maxlength: 200, autocomplete: "off" }),
    field("phone", "doctors.phone", { type: "tel", required: true, autocomplete: "off", hint: "doctors.phoneHint" }),
    field("password", "doctors.password", { type: "password", required: true, autocomplete: "new-password", hint: "doctors.passwordHint" }),
    field("email", "doctors.email", { type: "email", autocomplete: "off" }),
    centreChoice(centreList, chosen),
    field("specialty", "doctors.specialty", { required: true, maxlength: 200 }),
    field("is_duty", "doctors.duty", { type: "checkbox" }),
    field("bio", "doctors.bio", { type: "textarea", maxlength: 4000 }),
  ], "doctors.add", async (values) => {
    const body = { ...doctorBody(values), phone: values.phone.trim(), password: values.password };
    if (values.email.trim()) body.email = values.email.trim();
    await post("/doctors", body);
    toast(t("doctors.created"));
    redraw();
  });
  const rows = items.map((doctor) => h("tr", { dataset: { id: doctor.id } },
    h("th", { scope: "row" }, doctor.full_name),
    h("td", {}, doctor.centre_name),
    h("td", {}, doctor.specialty),
    h("td", {}, doctor.is_duty ? t("manager.yes") : t("manager.no")),
    rowActions(`#/doctors/${doctor.id}`, doctor.full_name, "doctors", `/doctors/${doctor.id}`, box)));
  return [
    heading,
    filter,
    box,
    ...listAndForm("doctors", ["doctors.fullName", "doctors.centre", "doctors.specialty", "doctors.duty"], rows, "doctors.none", "doctors.add", create),
  ];
}

async function doctor({ params }) {
  const [item, { items: centreList }] = await Promise.all([get(`/doctors/${params.id}`), get("/centres")]);
  const edit = form({ id: "doctor-form", "aria-label": t("doctors.editTitle", { name: item.full_name }) }, doctorFields(centreList, item), "manager.save", async (values) => {
    await patch(`/doctors/${item.id}`, doctorBody(values));
    toast(t("manager.saved"));
    go("#/doctors");
  });
  return [h("p", {}, h("a", { href: "#/doctors" }, t("back"))), h("h1", {}, t("doctors.editTitle", { name: item.full_name })), edit];
}

// --- referral import ---------------------------------------------------------------

// A problem of the table or of one of its cells, from its code (docs/referral-import.md
// lists them), in the user's language: columns named as the manager's table names them.
const tableProblem = (entry) => problemText(entry, (name, value) => (name === "columns" ? word("column", value) : value));

// Why a whole file was refused (422 invalid_value): its problem, in the user's words.
function refusal(error) {
  const fields = (error.details && error.details.fields) || [];
  return fields.length ? `${capitalised(tableProblem(fields[0]))}.` : t("error.invalid_value");
}

async function send(file, dryRun, progress) {
  const data = new FormData();
  data.append("file", file);
  progress.hidden = false;
  try {
    return await upload(`/referral-imports${dryRun ? "?dry_run=true" : ""}`, data, (share) => { progress.value = share; });
  } catch (error) {
    if (error.code === "invalid_value") throw new Error(refusal(error));
    throw error;
  } finally {
    progress.hidden = true;
    progress.value = 0;
  }
}

function reportRow(row) {
  const errors = row.errors.map((e) => h("li", {}, h("strong", {}, word("column", e.column)), ": ", tableProblem(e)));
  // "Imported before" is the row's status already; other notes are told.
  const note = row.note && row.note_code !== "imported_before" ? (row.note_code ? t(`problem.${row.note_code}`) : row.note) : null;
  return h("tr", { class: row.ok ? "" : "bad", dataset: { row: row.row, status: row.status } },
    h("th", { scope: "row" }, String(row.row)),
    h("td", {}, h("span", { class: `import-status status-${row.status}` }, word("verdict", row.status))),
    h("td", {}, errors.length ? h("ul", { class: "cell-errors" }, errors) : "—"),
    h("td", {},
      note,
      row.consultation_id ? [note ? " " : null, h("a", { href: `#/consultations/${row.consultation_id}` }, t("manager.open"))] : null,
      // The patient the row made or found: new credentials if the SMS never arrived.
      row.patient_id ? h("div", {}, credentialsButton(row.patient_id, t("credentials.issueRow", { row: row.row }))) : null));
}

function reportView(report) {
  const values = { total: report.total_rows, created: report.created, invalid: report.invalid };
  return [
    h("h2", { id: "report-title" }, report.dry_run ? t("imports.dryRunTitle") : t("imports.doneTitle"), " ", h("small", { class: "muted" }, report.file_name)),
    h("p", { id: "report-summary" }, t(report.dry_run ? "imports.dryRunSummary" : "imports.doneSummary", values)),
    report.invalid ? h("p", { class: "notice" }, t("imports.fixHint")) : null,
    report.dry_run ? null : h("p", { class: "muted" }, t("imports.credentialsHint"), " ", h("a", { href: "#/outbox" }, t("nav.outbox"))),
    table(["imports.row", "imports.status", "imports.errors", "imports.note"], report.rows.map(reportRow), { id: "import-rows", "aria-labelledby": "report-title" }),
  ].filter(Boolean); // replaceChildren() would write a null as the text "null"
}

// --- new credentials for a referred patient ----------------------------------------

// A button that issues a referred patient a new temporary password (asking first), and
// says in words what happened: where the SMS went, or that it waits in the outbox when
// no gateway sends SMS. The server decides who may get one (404, 429 otherwise).
export function credentialsButton(patientId, label) {
  const result = h("span", { class: "credentials-result", role: "status" });
  const box = errorBox();
  const button = h("button", { type: "button", class: "credentials", "aria-label": label }, t("credentials.issue"));
  button.addEventListener("click", async () => {
    if (!confirm(t("credentials.confirm"))) return;
    box.hidden = true;
    result.replaceChildren();
    button.disabled = true;
    try {
      const issued = await post(`/patients/${patientId}/credentials`);
      result.replaceChildren(t("credentials.issued", { when: when(issued.issued_at) }), " ",
        ...(issued.kept_in_outbox
          ? [t("credentials.kept", { login: issued.login }), " ", h("a", { href: "#/outbox?status=kept" }, t("credentials.toOutbox")), "."]
          : [t("credentials.sent", { login: issued.login })]));
    } catch (error) {
      showError(box, error);
    } finally {
      button.disabled = false;
    }
  });
  return h("span", { class: "credentials-box" }, button, " ", result, box);
}

// The consultation page's part for a referral (manager): the patient's credentials.
export function credentialsCard(item) {
  return h("section", { class: "card", id: "credentials", "aria-labelledby": "credentials-title" },
    h("h2", { id: "credentials-title" }, t("credentials.title")),
    h("p", { class: "muted" }, t("credentials.hint")),
    h("p", {}, credentialsButton(item.patient.id, t("credentials.issueFor", { name: item.full_name }))));
}

function pastImports(items) {
  if (!items.length) return h("p", { class: "muted" }, t("imports.noPast"));
  return table(["imports.when", "imports.fileName", "imports.kind", "imports.total", "imports.created", "imports.invalid", ""], items.map((item) => h("tr", { dataset: { id: item.id } },
    h("td", {}, when(item.created_at)),
    h("td", {}, item.file_name),
    h("td", {}, item.dry_run ? t("imports.dryRun") : t("imports.real")),
    h("td", {}, String(item.total_rows)),
    h("td", {}, String(item.created)),
    h("td", {}, String(item.invalid)),
    h("td", {}, h("a", { href: `#/imports/${item.id}`, "aria-label": t("imports.reportOf", { file: item.file_name, when: when(item.created_at) }) }, t("imports.report"))))), { id: "past-imports" });
}

async function imports() {
  const report = h("section", { class: "card", id: "import-report", hidden: true });
  const past = h("div", {});
  const refillPast = async () => past.replaceChildren(pastImports((await get("/referral-imports")).items));
  const progress = h("progress", { max: 1, value: 0, hidden: true, "aria-label": t("imports.progress") });

  // The checked file, uploaded again for real once the manager confirms.
  const confirmImport = (file) => {
    const box = errorBox();
    const button = h("button", { type: "button", class: "primary", id: "import-confirm" });
    button.addEventListener("click", async () => {
      box.hidden = true;
      button.disabled = true;
      try {
        const done = await send(file, false, progress);
        report.replaceChildren(...reportView(done));
        toast(t("imports.imported", { n: done.created }));
        checkForm.reset();
        await refillPast();
      } catch (error) {
        button.disabled = false;
        showError(box, error);
      }
    });
    return [box, button];
  };

  const checkForm = form({ id: "import-form", "aria-label": t("imports.upload") }, [
    field("file", "imports.file", { type: "file", required: true, accept: ".csv,.xlsx,text/csv", hint: "imports.fileHint" }),
    progress,
  ], "imports.check", async (values) => {
    const file = values.file[0];
    if (!file) throw new Error(t("imports.chooseFile"));
    report.hidden = true;
    const checked = await send(file, true, progress);
    const [box, button] = confirmImport(file);
    button.textContent = t("imports.confirm", { n: checked.created });
    report.replaceChildren(...reportView(checked),
      checked.created ? h("p", { class: "actions" }, button) : h("p", { class: "notice" }, t("imports.nothingToImport")), box);
    report.hidden = false;
    await refillPast();
    report.querySelector("h2").scrollIntoView({ block: "start" });
  });
  await refillPast();
  return [
    h("h1", {}, t("imports.title")),
    h("section", { class: "card" },
      h("p", {}, t("imports.hint")),
      h("p", { class: "muted" }, t("imports.columnsHint")),
      checkForm),
    report,
    h("section", { "aria-labelledby": "past-title" }, h("h2", { id: "past-title" }, t("imports.past")), past),
  ];
}

async function importReport({ params }) {
  const report = await get(`/referral-imports/${params.id}`);
  return [
    h("p", {}, h("a", { href: "#/imports" }, t("back"))),
    h("h1", {}, t("imports.reportTitle", { file: report.file_name })),
    h("p", { class: "muted" }, when(report.created_at)),
    h("section", { class: "card", id: "import-report" }, reportView(report)),
  ];
}

// --- response deadlines ------------------------------------------------------------

const COUNTS = ["on_track", "due_soon", "overdue", "met", "met_late"];

function countsTable(id, nameKey, rows) {
  return table([nameKey, ...COUNTS.map((status) => `counts.${status}`)], rows.map((row) => h("tr", { dataset: { id: row.id || "" } },
    h("th", { scope: "row" }, row.name || t("sla.noDoctor")),
    COUNTS.map((status) => h("td", { class: row[status] && (status === "overdue" || status === "met_late") ? "late" : "" }, String(row[status]))))), { id });
}

// Deadlines count from the server's clock, which decides what is overdue.
function deadlineTable(id, items, serverNow) {
  return table(["sla.centre", "sla.doctor", "sla.route", "sla.submitted", "sla.due", "sla.left", ""], items.map((item) => h("tr", { dataset: { id: item.consultation_id } },
    h("td", {}, item.centre_name),
    h("td", {}, item.doctor_name || t("sla.noDoctor")),
    h("td", {}, t(`route.${item.route}`)),
    h("td", {}, when(item.submitted_at)),
    h("td", {}, when(item.due_at)),
    h("td", { class: "deadline", dataset: { due: item.due_at } }, countdown(item.due_at, serverNow())),
    h("td", {}, h("a", { href: `#/consultations/${item.consultation_id}` }, t("manager.open"))))), { id });
}

// Calls by quality per centre (GET /call-quality), under the deadlines.
function qualityTable(report) {
  const minutes = (m) => m.toFixed(1);
  return table(
    ["sla.centre", "quality.calls", "quality.goodMinutes", "quality.weakMinutes", "quality.poorMinutes", "quality.poorCalls", "quality.freezeCount", "quality.relayMinutes", "quality.audioOnlyMinutes"],
    report.by_centre.map((c) => h("tr", { dataset: { id: c.centre_id } },
      h("td", {}, c.centre_name), h("td", {}, String(c.calls)),
      h("td", {}, minutes(c.good_minutes)), h("td", {}, minutes(c.weak_minutes)), h("td", {}, minutes(c.poor_minutes)),
      h("td", {}, String(c.poor_calls)), h("td", {}, String(c.freezes)),
      h("td", {}, minutes(c.relay_minutes)), h("td", {}, minutes(c.audio_only_minutes)))),
    { id: "quality-by-centre" });
}

async function sla() {
  const [report, quality] = await Promise.all([get("/sla"), get("/call-quality")]);
  const skew = Date.parse(report.now) - Date.now();
  const serverNow = () => Date.now() + skew;
  const totals = [["overdue", report.overdue.length], ["due_soon", report.due_soon.length], ["met", report.met.length]];
  const section = (id, titleKey, items, noneKey) => h("section", { "aria-labelledby": `${id}-title` },
    h("h2", { id: `${id}-title` }, t(titleKey)),
    items.length ? deadlineTable(id, items, serverNow) : h("p", { class: "muted" }, t(noneKey)));
  const page = [
    h("h1", {}, t("sla.title")),
    h("p", { class: "muted" }, t("sla.hint"), " ", t("sla.asOf", { when: when(report.now) })),
    h("ul", { class: "sla-totals", id: "sla-totals" }, totals.map(([status, n]) => h("li", { class: `total-${status}`, dataset: { status } },
      h("strong", {}, String(n)), " ", t(`counts.${status}`)))),
    section("sla-overdue", "sla.overdueList", report.overdue, "sla.noneOverdue"),
    section("sla-due-soon", "sla.dueSoonList", report.due_soon, "sla.noneDueSoon"),
    h("section", { "aria-labelledby": "by-centre-title" }, h("h2", { id: "by-centre-title" }, t("sla.byCentre")),
      report.by_centre.length ? countsTable("sla-by-centre", "sla.centre", report.by_centre) : h("p", { class: "muted" }, t("sla.empty"))),
    h("section", { "aria-labelledby": "by-doctor-title" }, h("h2", { id: "by-doctor-title" }, t("sla.byDoctor")),
      report.by_doctor.length ? countsTable("sla-by-doctor", "sla.doctor", report.by_doctor) : h("p", { class: "muted" }, t("sla.empty"))),
    h("section", { "aria-labelledby": "quality-title" }, h("h2", { id: "quality-title" }, t("quality.byCentre")),
      h("p", { class: "muted" }, t("quality.hint")),
      quality.by_centre.length ? qualityTable(quality) : h("p", { class: "muted" }, t("quality.none"))),
  ];
  const timer = setInterval(() => {
    document.querySelectorAll("#view td.deadline").forEach((cell) => { cell.textContent = countdown(cell.dataset.due, serverNow()); });
  }, 30000);
  onLeave(() => clearInterval(timer));
  return page;
}

// --- the outbox --------------------------------------------------------------------

const STATUSES = ["pending", "sent", "kept", "failed"];
const CHANNELS = ["sms", "email"];

// Texts as the API gives them: passwords masked by the server. A message kept with no
// gateway in development mode also has its full text (kept_text), shown in a row of its
// own under the message, labelled as not sent, for the manager to pass on.
function outboxRows(item) {
  const text = h("details", {}, h("summary", {}, t("outbox.showText")),
    item.subject ? h("p", {}, h("strong", {}, item.subject)) : null,
    h("p", { class: "text" }, item.body));
  const sent = item.sent_at ? when(item.sent_at)
    : item.status === "pending" ? t("outbox.nextAttempt", { when: when(item.next_attempt_at) })
      : item.status === "kept" ? t("outbox.notSent") : "—";
  const row = h("tr", { dataset: { id: item.id, status: item.status, channel: item.channel } },
    h("td", {}, when(item.created_at)),
    h("td", {}, item.recipient),
    h("td", {}, word("channel", item.channel)),
    h("td", {}, word("notice", item.kind)),
    h("td", {}, h("span", { class: `outbox-status outbox-${item.status}` }, word("delivery", item.status)),
      // What an SMS provider (smsru, smsc, smsaero) last reported of the message it took.
      item.delivery_status ? h("span", { class: "muted delivery-report", title: t("outbox.report"), dataset: { report: item.delivery_status } },
        " · ", word("report", item.delivery_status)) : null),
    h("td", {}, String(item.attempts)),
    h("td", {}, item.last_error || "—"),
    h("td", {}, sent),
    h("td", {}, text));
  if (!item.kept_text) return [row];
  return [row, h("tr", { class: "kept-row", dataset: { for: item.id } },
    h("td", { colspan: 9 }, h("details", {},
      h("summary", {}, t("outbox.showKept", { recipient: item.recipient })),
      h("p", { class: "notice" }, t("outbox.keptLabel")),
      item.subject ? h("p", {}, h("strong", {}, item.subject)) : null,
      h("p", { class: "text kept-text" }, item.kept_text))))];
}

async function outbox({ query: search }) {
  const status = search.get("status") || "";
  const channel = search.get("channel") || "";
  const { items } = await get(`/outbox${query({ status, channel })}`);
  const filter = h("form", { class: "filters", id: "outbox-filter", role: "search" },
    field("status", "outbox.status", { type: "select", value: status, choices: [["", t("outbox.all")], ...STATUSES.map((s) => [s, word("delivery", s)])] }),
    field("channel", "outbox.channel", { type: "select", value: channel, choices: [["", t("outbox.all")], ...CHANNELS.map((c) => [c, word("channel", c)])] }),
    h("p", {}, h("button", { type: "submit" }, t("manager.show"))));
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    go(`#/outbox${query({ status: filter.elements.status.value, channel: filter.elements.channel.value })}`);
  });
  const kept = items.some((item) => item.status === "kept");
  return [
    h("h1", {}, t("outbox.title")),
    kept ? h("p", { class: "notice", id: "outbox-kept" }, t("outbox.keptNotice")) : null,
    h("p", { class: "muted" }, t("outbox.masked")),
    filter,
    items.length
      ? table(["outbox.created", "outbox.recipient", "outbox.channel", "outbox.kind", "outbox.status", "outbox.attempts", "outbox.lastError", "outbox.sent", "outbox.text"], items.flatMap(outboxRows), { id: "outbox" })
      : h("p", { class: "muted" }, t("outbox.none")),
  ];
}

export const routes = [
  ["/centres", centres, MANAGER],
  ["/centres/:id", centre, MANAGER],
  ["/doctors", doctors, MANAGER],
  ["/doctors/:id", doctor, MANAGER],
  ["/imports", imports, MANAGER],
  ["/imports/:id", importReport, MANAGER],
  ["/sla", sla, MANAGER],
  ["/outbox", outbox, MANAGER],
];
