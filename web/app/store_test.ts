/**
 * The store hook in a DOM (linkedom): a change made after a component's
 * render but before its effects run is shown, not lost.
 */

import assert from "node:assert/strict";
import { parseHTML } from "linkedom";
import { options, render } from "preact";
import { html } from "./html.ts";
import { Store, useStore } from "./store.ts";

const { document } = parseHTML("<!doctype html><html><body></body></html>");
Object.assign(globalThis, { document });

// Preact runs effects after the next frame: here, when the test says so.
const frames: (() => void)[] = [];
options.requestAnimationFrame = (callback) => frames.push(callback);
options.debounceRendering = (rerender) => rerender();

/** The next frame: pending effects run, and what they change renders. */
function effectsRun(): void {
  for (const callback of frames.splice(0)) callback();
}

function Shown({ store }: { store: Store<{ text: string }> }) {
  const { text } = useStore(store);
  return html`<p>${text}</p>`;
}

Deno.test("useStore: a change between the render and the effects is shown", () => {
  const root = document.createElement("div");
  const store = new Store({ text: "Loading…" });
  render(html`<${Shown} store=${store} />`, root);
  assert.equal(root.textContent, "Loading…");
  // A response that comes back before the component subscribed.
  store.set({ text: "Inbox loaded" });
  effectsRun();
  assert.equal(root.textContent, "Inbox loaded");
  // And later changes still arrive.
  store.set({ text: "a new message" });
  effectsRun();
  assert.equal(root.textContent, "a new message");
  render(null, root);
});
