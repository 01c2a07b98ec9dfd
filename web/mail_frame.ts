/// <reference lib="dom" />
/**
 * The script of the mail frame (`/mail.html`): a sandboxed frame (scripts,
 * no same origin: it can reach neither the app's storage nor its keys)
 * that shows one HTML message the app already sanitized. It says when it
 * is ready, takes the HTML by `postMessage`, opens links in a new window,
 * and tells the app its height. Remote content stays blocked by the
 * frame's own Content-Security-Policy unless the reader asked for it.
 *
 * @module
 */

function reportHeight(): void {
  parent.postMessage({ height: document.documentElement.scrollHeight }, "*");
}

addEventListener("message", (event: MessageEvent) => {
  if (event.source !== parent || typeof event.data?.html !== "string") return;
  document.body.innerHTML = event.data.html;
  for (const a of document.querySelectorAll("a[href]")) {
    a.setAttribute("target", "_blank");
    a.setAttribute("rel", "noopener noreferrer");
  }
  for (const img of document.querySelectorAll("img")) {
    img.addEventListener("load", reportHeight);
  }
  reportHeight();
});

addEventListener("resize", reportHeight);
parent.postMessage({ ready: true }, "*");
