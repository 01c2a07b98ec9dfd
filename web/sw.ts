/// <reference lib="webworker" />
/**
 * The service worker: shows a notification for new mail pushed while no tab
 * of the app is open (Web Push, PROTOCOL.md §10.2: the payload is what the
 * subscription's `preview` allows, never a message's text nor the subject
 * of end-to-end encrypted mail), and opens the app when it is clicked.
 *
 * @module
 */

declare const self: ServiceWorkerGlobalScope;

/** The payload the server sends (PROTOCOL.md §10.2). */
interface PushPayload {
  v?: number;
  event?: string;
  account?: string;
  count?: number;
  from?: string;
  subject?: string;
  encrypted?: boolean;
}

/** The notification for a payload: title and body text. */
function notificationOf(data: PushPayload): {
  title: string;
  body: string;
} {
  const count = data.count && data.count > 1 ? data.count : 1;
  const title = count > 1 ? `${count} new messages` : "New mail";
  const parts: string[] = [];
  if (data.from) parts.push(`From ${data.from}`);
  if (data.subject && !data.encrypted) parts.push(data.subject);
  if (data.encrypted) parts.push("🔒 end-to-end encrypted");
  if (data.account) parts.push(`to ${data.account}`);
  return { title, body: parts.join(" · ") };
}

/** The app's own files, kept for when the server cannot be reached. */
const SHELL = [
  "/",
  "/app.js",
  "/app.css",
  "/config.json",
  "/mail.html",
  "/mail.js",
  "/manifest.webmanifest",
  "/icon.svg",
];
const CACHE = "amtp-shell-v1";

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches.open(CACHE).then((cache) => cache.addAll(SHELL)).catch(() => {})
      .then(() => self.skipWaiting()),
  );
});

// The network first (the app is never stale while the server answers); the
// kept copy when it does not, so recently read mail opens offline.
self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (
    event.request.method !== "GET" || url.origin !== self.location.origin ||
    !SHELL.includes(url.pathname)
  ) return;
  event.respondWith(
    fetch(event.request).then((response) => {
      if (response.ok && !url.search) {
        const copy = response.clone();
        caches.open(CACHE).then((cache) => cache.put(url.pathname, copy))
          .catch(() => {});
      }
      return response;
    }).catch(async () => await caches.match(url.pathname) ?? Response.error()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(self.clients.claim());
});

self.addEventListener("push", (event) => {
  event.waitUntil((async () => {
    let data: PushPayload = {};
    try {
      data = event.data?.json() ?? {};
    } catch {
      // Not ours: a plain notification.
    }
    const windows = await self.clients.matchAll({
      type: "window",
      includeUncontrolled: true,
    });
    // A visible tab shows new mail itself.
    if (windows.some((w) => w.visibilityState === "visible")) return;
    const { title, body } = notificationOf(data);
    await self.registration.showNotification(title, {
      body,
      tag: `amtp-${data.account ?? "mail"}`,
      icon: "/icon.svg",
      data: { account: data.account },
    });
  })());
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window" });
    if (windows[0]) return void await windows[0].focus();
    await self.clients.openWindow("/");
  })());
});
