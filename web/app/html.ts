/// <reference lib="dom" />
/**
 * Rendering: Preact with htm (tagged templates, no build step of their own),
 * and small helpers the screens share.
 *
 * @module
 */

import { h, type VNode } from "preact";
import * as htmModule from "htm";

/** htm's one function (its package is CommonJS to Deno's type checker, ESM in the bundle). */
interface Htm {
  bind(
    create: typeof h,
  ): (strings: TemplateStringsArray, ...values: unknown[]) => VNode;
}
const htm = ((htmModule as unknown as { default?: Htm }).default ??
  htmModule) as unknown as Htm;

/** Preact elements from a template: html`<p>${text}</p>` (text is escaped). */
export const html = htm.bind(h);

/** A size for people: 1.2 MB, 340 KB, 12 bytes. */
export function formatSize(bytes: number): string {
  if (bytes >= 1_000_000) return `${(bytes / 1_000_000).toFixed(1)} MB`;
  if (bytes >= 1_000) return `${Math.round(bytes / 1_000)} KB`;
  return `${bytes} bytes`;
}

/** A date for a list: the time today, else the day (and the year when not this one). */
export function formatDate(date: Date, now = new Date()): string {
  if (date.toDateString() === now.toDateString()) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  return date.toLocaleDateString([], {
    day: "numeric",
    month: "short",
    ...(date.getFullYear() === now.getFullYear() ? {} : { year: "numeric" }),
  });
}

/** A moment in full, the same way on every screen (expiries, logins). */
export function formatMoment(date: Date): string {
  return date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

/** Save bytes as a file (a download the browser asks about or keeps). */
export function saveFile(name: string, data: Uint8Array, type: string): void {
  const url = URL.createObjectURL(
    new Blob([data as Uint8Array<ArrayBuffer>], { type }),
  );
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.rel = "noopener";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** An error as one sentence for people. */
export function describe(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

/** Addresses from a comma- or space-separated field. */
export function addressList(text: string): string[] {
  return text.split(/[,;\s]+/).map((s) => s.trim()).filter(Boolean);
}
