// Signing in, registering, and the forced password change of referred patients and of
// doctors created by the manager.
import { get, post } from "./api.js";
import { field, form, h } from "./dom.js";
import { t } from "./i18n.js";
import { go, session, signedIn } from "./main.js";

function login() {
  return h("section", { class: "narrow" },
    h("h1", {}, t("login.title")),
    form({ "aria-label": t("login.title") }, [
      field("login", "login.login", { autocomplete: "username", required: true, hint: "login.loginHint" }),
      field("password", "login.password", { type: "password", autocomplete: "current-password", required: true }),
    ], "login.submit", async (values) => {
      const answer = await post("/auth/login", { login: values.login.trim(), password: values.password });
      await signedIn(answer.user);
      go("#/");
    }),
    h("p", {}, t("login.noAccount"), " ", h("a", { href: "#/register" }, t("login.register"))));
}

function register() {
  return h("section", { class: "narrow" },
    h("h1", {}, t("register.title")),
    form({ "aria-label": t("register.title") }, [
      field("full_name", "register.fullName", { autocomplete: "name", required: true }),
      field("birth_date", "register.birthDate", { type: "date", required: true }),
      field("phone", "register.phone", { type: "tel", autocomplete: "tel", required: true, hint: "register.phoneHint" }),
      field("email", "register.email", { type: "email", autocomplete: "email" }),
      field("password", "register.password", { type: "password", autocomplete: "new-password", required: true, hint: "register.passwordHint" }),
    ], "register.submit", async (values) => {
      const body = { ...values, locale: document.documentElement.lang };
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

export const routes = [
  ["/login", login, { public: true }],
  ["/register", register, { public: true }],
  ["/password", password],
];
