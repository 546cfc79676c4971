// The app's frame around its pages: the skip link, the service worker that keeps the
// shell for use without a connection (web/sw.js), and the banner that says there is no
// connection. Apart from main.js on purpose: it runs even when the app cannot start.
import { loadWords, pickLanguage } from "../lib/i18n.js";

const $ = (id) => document.getElementById(id);
// The language last shown, for a start without a connection (the account's own choice
// comes from the server, which is then out of reach).
const SHOWN = "telemed-shown-lang";

// The hash router owns the address's fragment: the skip link moves the focus itself.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  $("view").focus();
});

new MutationObserver(() => localStorage.setItem(SHOWN, document.documentElement.lang))
  .observe(document.documentElement, { attributes: true, attributeFilter: ["lang"] });

const started = () => Boolean(window.telemedApp && window.telemedApp.rendered > 0);
const banner = $("offline");
let probe = null;

async function showOffline() {
  if (!banner.hidden) return;
  banner.hidden = false;
  if (!started()) {
    // The app never drew a page, so its words were never loaded: the kept copy has them.
    const asked = new URLSearchParams(location.search).get("lang");
    const lang = pickLanguage(asked, localStorage.getItem("telemed-lang"), localStorage.getItem(SHOWN));
    try {
      await loadWords(["app"], lang);
    } catch (error) {
      console.debug("no words kept:", error); // the page's Russian text stays
    }
  }
  probe = probe || setInterval(checkServer, 5000);
}

// Back online: a page that never started starts now; one that did goes on.
async function checkServer() {
  if (!navigator.onLine) return;
  try {
    const answer = await fetch("/healthz", { cache: "no-store" });
    if (!answer.ok) return;
  } catch {
    return;
  }
  clearInterval(probe);
  probe = null;
  banner.hidden = true;
  if (!started()) location.reload();
}

window.addEventListener("offline", showOffline);
window.addEventListener("online", checkServer);
if (!navigator.onLine) showOffline();

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.addEventListener("message", (event) => {
    if (event.data && event.data.type === "telemed:offline") showOffline();
  });
  navigator.serviceWorker.register("/sw.js", { scope: "/" })
    .catch((error) => console.debug("service worker not registered:", error));
}
