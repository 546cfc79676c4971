// Signing in, registering, a forgotten password reset with a code sent by SMS, and the
// forced password change of referred patients and of doctors created by the manager.
import { get, patch, post } from "./api.js";
import { field, form, h, toast } from "./dom.js";
import { language, pickedLanguage, t, when, zoneName } from "./i18n.js";
import { go } from "./nav.js";
import { session, signedIn } from "./session.js";

function login() {
  return h("section", { class: "narrow" },
    h("h1", {}, t("login.title")),
    form({ "aria-label": t("login.title") }, [
      field("login", "login.login", { autocomplete: "username", required: true, hint: "login.loginHint" }),
      field("password", "login.password", { type: "password", autocomplete: "current-password", required: true }),
    ], "login.submit", async (values) => {
      const answer = await post("/auth/login", { login: values.login.trim(), password: values.password });
      // A regional system's account reads the FHIR interface only: nothing here is for it.
      if (answer.user.role === "system") throw new Error(t("login.systemClient"));
      // A temporary password means someone else made the account (a referral, a doctor
      // added by the manager): its language is a default nobody chose, so the one picked
      // on this device before signing in becomes the account's.
      const picked = pickedLanguage();
      const user = answer.user.must_change_password && picked && picked !== answer.user.locale
        ? await patch("/me", { locale: picked })
        : answer.user;
      await signedIn(user);
      go("#/");
    }),
    h("p", {}, h("a", { href: "#/reset", id: "forgot" }, t("login.forgot"))),
    h("p", {}, t("login.noAccount"), " ", h("a", { href: "#/register" }, t("login.register"))));
}

// A forgotten password: a code by SMS to the phone, then the code and a new password.
// The server answers the same whether or not the phone has an account, and so does
// this page.
function reset() {
  let phone = "";
  const sent = h("p", { class: "notice", role: "status", id: "reset-sent", hidden: true });
  const codeForm = form({ id: "reset-code-form", "aria-label": t("reset.setTitle"), hidden: true }, [
    field("code", "reset.code", { inputmode: "numeric", autocomplete: "one-time-code", required: true, maxlength: 16 }),
    field("new_password", "password.new", { type: "password", autocomplete: "new-password", required: true, hint: "register.passwordHint" }),
  ], "reset.submit", async (values) => {
    const answer = await post("/auth/password-reset/confirm", { phone, code: values.code.trim(), new_password: values.new_password });
    await signedIn(answer.user);
    toast(t("reset.done"));
    go("#/");
  });
  const phoneForm = form({ id: "reset-phone-form", "aria-label": t("reset.askTitle") }, [
    field("phone", "register.phone", { type: "tel", autocomplete: "tel", required: true, hint: "login.loginHint" }),
  ], "reset.send", async (values) => {
    const asked = values.phone.trim();
    const answer = await post("/auth/password-reset", { phone: asked });
    phone = asked;
    sent.textContent = t("reset.sent", { minutes: answer.code_valid_minutes });
    sent.hidden = false;
    codeForm.hidden = false;
    phoneForm.querySelector("button[type=submit]").textContent = t("reset.again");
    codeForm.elements.code.focus();
  });
  return h("section", { class: "narrow" },
    h("h1", {}, t("reset.title")),
    h("p", {}, t("reset.hint")),
    phoneForm,
    sent,
    codeForm,
    h("p", {}, h("a", { href: "#/login" }, t("reset.back"))));
}

// The consent to the processing of personal data (152-ФЗ): its text, to read before
// agreeing (and again in the profile), in the user's language.
function consentText(consent) {
  return h("details", { class: "consent-text" },
    h("summary", {}, t("consent.read")),
    h("div", { class: "text", tabindex: "0" }, consent.text));
}

async function register() {
  const consent = await get(`/consent?lang=${language()}`);
  return h("section", { class: "narrow" },
    h("h1", {}, t("register.title")),
    form({ "aria-label": t("register.title") }, [
      field("full_name", "register.fullName", { autocomplete: "name", required: true }),
      field("birth_date", "register.birthDate", { type: "date", required: true }),
      field("phone", "register.phone", { type: "tel", autocomplete: "tel", required: true, hint: "register.phoneHint" }),
      field("email", "register.email", { type: "email", autocomplete: "email" }),
      field("password", "register.password", { type: "password", autocomplete: "new-password", required: true, hint: "register.passwordHint" }),
      consentText(consent),
      field("consent", "consent.agree", { type: "checkbox", required: true }),
    ], "register.submit", async (values) => {
      const { consent: agreed, ...rest } = values;
      if (!agreed) throw new Error(t("consent.needed"));
      const body = { ...rest, locale: document.documentElement.lang, consent_version: consent.version };
      if (!body.email) delete body.email;
      const answer = await post("/auth/register", body);
      await signedIn(answer.user);
      go("#/documents");
    }),
    h("p", {}, h("a", { href: "#/login" }, t("register.haveAccount"))));
}

function password() {
  const forced = session.user && session.user.must_change_password;
  return h("section", { class: "narrow" },
    h("h1", {}, t("password.title")),
    forced ? h("p", { class: "notice" }, t("password.forced")) : null,
    form({ "aria-label": t("password.title") }, [
      field("current_password", "password.current", { type: "password", autocomplete: "current-password", required: true }),
      field("new_password", "password.new", { type: "password", autocomplete: "new-password", required: true, hint: "register.passwordHint" }),
    ], "password.submit", async (values) => {
      await post("/auth/password", values);
      await signedIn(await get("/me"));
      go("#/");
    }));
}

// Russia's time zones, west to east, and the browser's own if it is elsewhere.
const ZONES = [
  "Europe/Kaliningrad", "Europe/Moscow", "Europe/Samara", "Asia/Yekaterinburg", "Asia/Omsk", "Asia/Krasnoyarsk",
  "Asia/Irkutsk", "Asia/Yakutsk", "Asia/Vladivostok", "Asia/Magadan", "Asia/Kamchatka",
];

// The consent the user agreed to, fetched when they open it.
function consentLater(version) {
  const body = h("div", { class: "text", tabindex: "0" });
  const box = h("details", { class: "consent-text" }, h("summary", {}, t("consent.read")), body);
  box.addEventListener("toggle", async () => {
    if (box.open && !body.textContent) body.textContent = (await get(`/consent?lang=${language()}&version=${encodeURIComponent(version)}`)).text;
  });
  return box;
}

function profile() {
  const user = session.user;
  const own = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const zones = [...new Set([...ZONES, own, user.time_zone])];
  return h("section", { class: "narrow" },
    h("h1", {}, t("profile.title")),
    h("dl", { class: "facts" },
      h("dt", {}, t("register.fullName")), h("dd", {}, user.full_name),
      h("dt", {}, t("register.phone")), h("dd", {}, user.phone || "—"),
      h("dt", {}, t("register.email")), h("dd", {}, user.email || "—"),
      user.consent_version ? [
        h("dt", {}, t("consent.title")),
        h("dd", { id: "consent" }, t("consent.given", { when: when(user.consent_at), version: user.consent_version }), consentLater(user.consent_version)),
      ] : null),
    form({ id: "profile-form", "aria-label": t("profile.title") }, [
      field("locale", "language", { type: "select", value: user.locale, choices: [["ru", "Русский"], ["en", "English"]] }),
      field("time_zone", "profile.timeZone", { type: "select", value: user.time_zone, choices: zones.map((z) => [z, zoneName(z)]), hint: "profile.timeZoneHint" }),
    ], "profile.save", async (values) => {
      localStorage.setItem("telemed-lang", values.locale);
      await signedIn(await patch("/me", values));
      toast(t("profile.saved"));
      go("#/profile");
    }),
    h("p", {}, h("a", { href: "#/password" }, t("password.title"))));
}

export const routes = [
  ["/profile", profile],
  ["/login", login, { public: true }],
  ["/register", register, { public: true }],
  ["/reset", reset, { public: true }],
  ["/password", password],
];
