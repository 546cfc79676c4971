// The service worker (served as /sw.js, so that its scope is the whole app): it keeps
// the app's shell (the page, its styles, scripts, words and icons) so that the app
// opens without a connection far enough to say that there is none (app/shell.js).
//
// Only the shell's own files are kept: each is fetched from the network first (a new
// version shows at once) and taken from the cache only when the network fails. API
// answers, documents, chat, the video room and everything else go to the network
// untouched and are never stored here: nothing of a patient's is kept on the device.
const CACHE = "telemed-shell-v1";
const SHELL = [
  "/",
  "/manifest.webmanifest",
  "/static/app.css",
  "/static/app/api.js",
  "/static/app/auth.js",
  "/static/app/consultation.js",
  "/static/app/doctor.js",
  "/static/app/dom.js",
  "/static/app/i18n.js",
  "/static/app/main.js",
  "/static/app/manager.js",
  "/static/app/nav.js",
  "/static/app/patient.js",
  "/static/app/session.js",
  "/static/app/shell.js",
  "/static/lib/chat.js",
  "/static/lib/i18n.js",
  "/static/lib/socket.js",
  "/static/vendor/socket.io/socket.io.esm.min.js",
  "/static/i18n/app.ru.json",
  "/static/i18n/app.en.json",
  "/static/i18n/manager.ru.json",
  "/static/i18n/manager.en.json",
  "/static/bell.svg",
  "/static/icons/favicon.svg",
  "/static/icons/favicon-32.png",
  "/static/icons/icon-192.png",
];
const KEPT = new Set(SHELL);
// What the worker never answers: where the browser can, it sends these past the worker
// altogether (the static routing API), so they are not even slowed down by it.
const PASSED = ["/api/*", "/socket.io/*", "/embed/*", "/fhir/*", "/metrics", "/healthz", "/readyz"];

self.addEventListener("install", (event) => {
  try {
    const routes = PASSED.map((pathname) => ({ condition: { urlPattern: new URLPattern({ pathname }) }, source: "network" }));
    event.addRoutes(routes).catch((error) => console.debug("service worker routes:", error));
  } catch (error) {
    console.debug("no static routes here:", error); // the fetch handler lets them pass
  }
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

// A new version drops the caches of the old ones and takes over the open pages.
self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (event) => {
  const { request } = event;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  // The app's page under any query (?lang=en), and the shell's files by their path.
  const key = request.mode === "navigate" ? (url.pathname === "/" ? "/" : null) : KEPT.has(url.pathname) ? url.pathname : null;
  if (key) event.respondWith(networkFirst(event, key));
});

async function networkFirst(event, key) {
  const cache = await caches.open(CACHE);
  try {
    // Past the HTTP cache to the server (a 304 costs little): a copy from the HTTP cache
    // would hide that the server cannot be reached.
    const response = await fetch(event.request, { cache: "no-cache" });
    if (response.ok && response.type === "basic") await cache.put(key, response.clone());
    return response;
  } catch (error) {
    const kept = await cache.match(key);
    if (!kept) throw error;
    tellOffline();
    return kept;
  }
}

// The app's pages learn that the server could not be reached (the kept copy was given),
// even when the browser believes it is online.
async function tellOffline() {
  for (const client of await self.clients.matchAll({ type: "window", includeUncontrolled: true })) {
    client.postMessage({ type: "telemed:offline" });
  }
}
