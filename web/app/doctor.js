// The doctor's workspace: incoming requests with their deadlines, today's consultations,
// and the duty slots they publish.
import { del, get, post, query } from "./api.js";
import { field, form, h, table, toast } from "./dom.js";
import { dayOf, t, timeZone, when, zoneName } from "./i18n.js";
import { session } from "./session.js";
import { consultationList, zonedIso } from "./consultation.js";

async function requests() {
  return [
    h("h1", {}, t("doctor.requests")),
    h("p", { class: "muted" }, t("doctor.requestsHint")),
    await consultationList({ state: "requested" }, "doctor.noRequests"),
  ];
}

// Today in the doctor's own time zone: from its midnight to the next.
function todayBounds() {
  const day = dayOf(new Date());
  const next = dayOf(new Date(Date.parse(zonedIso(`${day}T12:00`)) + 86400000));
  return { from: zonedIso(`${day}T00:00`), to: zonedIso(`${next}T00:00`) };
}

async function today() {
  const { from, to } = todayBounds();
  // Consultations that take place today (not requests or cancellations), earliest first.
  const state = "scheduled,in_progress,completed,concluded";
  return [
    h("h1", {}, t("doctor.today"), " ", h("small", {}, when(new Date().toISOString(), "day"))),
    await consultationList({ from, to, state }, "doctor.nothingToday", { earliestFirst: true }),
  ];
}

async function myProfile() {
  const { items } = await get("/doctors");
  return items.find((d) => d.user_id === session.user.id);
}

async function slots() {
  const me = await myProfile();
  const list = h("div", { id: "my-slots" });
  const refill = async () => {
    const from = new Date();
    const to = new Date(from.getTime() + 28 * 86400000);
    const { items } = await get(`/doctors/${me.id}/slots${query({ from: from.toISOString(), to: to.toISOString(), tz: timeZone() })}`);
    list.replaceChildren(items.length ? table(["slots.when", "slots.status", ""], items.map((slot) => h("tr", {},
      h("td", {}, `${when(slot.starts_at)} – ${when(slot.ends_at, "time")}`),
      h("td", {}, t(`slots.${slot.status}`)),
      h("td", {}, slot.status === "free" ? h("button", {
        type: "button", class: "danger", "aria-label": `${t("slots.remove")}: ${when(slot.starts_at)}`, onclick: async () => { await del(`/slots/${slot.id}`); toast(t("slots.removed")); await refill(); },
      }, t("slots.remove")) : "")))) : h("p", { class: "muted" }, t("slots.none")));
  };
  if (!me || !me.is_duty) return [h("h1", {}, t("nav.slots")), h("p", {}, t("slots.notDuty"))];
  const publish = form({ id: "slots-form", "aria-label": t("slots.publish") }, [
    field("day", "slots.day", { type: "date", required: true, value: dayOf(new Date(Date.now() + 86400000)) }),
    field("from", "slots.from", { type: "time", required: true, value: "09:00" }),
    field("to", "slots.to", { type: "time", required: true, value: "12:00" }),
    field("slot_minutes", "slots.length", { type: "number", min: 10, max: 120, value: "30", required: true }),
  ], "slots.publish", async (values) => {
    const created = await post("/slots", {
      starts_at: zonedIso(`${values.day}T${values.from}`),
      ends_at: zonedIso(`${values.day}T${values.to}`),
      slot_minutes: Number(values.slot_minutes),
    });
    toast(t("slots.published", { n: (created.items || created).length }));
    await refill();
  });
  await refill();
  return [
    h("h1", {}, t("nav.slots")),
    h("section", { class: "card" }, h("h2", {}, t("slots.publish")), h("p", { class: "muted" }, t("slots.zone", { zone: zoneName() })), publish),
    h("section", {}, h("h2", {}, t("slots.mine")), list),
  ];
}

export const routes = [
  ["/requests", requests, { roles: ["doctor"] }],
  ["/today", today, { roles: ["doctor"] }],
  ["/slots", slots, { roles: ["doctor"] }],
];
