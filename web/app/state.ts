/// <reference lib="dom" />
/**
 * The app's state: the connection's client, who is signed in (a user, an
 * admin, or both), the screen shown, and the messages for the user (a
 * notice line that screen readers announce).
 *
 * @module
 */

import type { AmtpClient } from "../../client/mod.ts";
import type { AdminSession, UserSession } from "./account.ts";
import type { SiteConfig } from "./connection.ts";
import type { Mailbox } from "./mailbox.ts";
import { Store } from "./store.ts";

/** The screens. */
export type Screen =
  | "welcome"
  | "backup"
  | "mail"
  | "settings"
  | "admin"
  | "offline";

/** What the whole app knows. */
export interface AppState {
  /** How to reach the server. */
  site?: SiteConfig;
  /** The connection. */
  client?: AmtpClient;
  /** The signed-in user. */
  user?: UserSession;
  /** The user's mailbox. */
  mailbox?: Mailbox;
  /** The signed-in admin. */
  admin?: AdminSession;
  /** The screen shown. */
  screen: Screen;
  /** A new account's backup, offered once. */
  backup?: {
    address: string;
    text: string;
    pending: boolean;
    /** Signed in with a key file the user already keeps: no backup to offer. */
    restored?: boolean;
  };
  /** An invitation code from the link that opened the app. */
  invite?: string;
  /** The last notice. */
  notice?: { text: string; kind: "info" | "error" };
}

/** The app's state. */
export const app = new Store<AppState>({ screen: "welcome" });

/** How long an information notice stays. */
const NOTICE_MS = 10_000;
let noticeTimer: ReturnType<typeof setTimeout> | undefined;

/** Show a notice: information goes after a while, errors stay until replaced or signed in. */
export function notify(text: string, kind: "info" | "error" = "info"): void {
  clearTimeout(noticeTimer);
  const notice = { text, kind };
  app.set({ notice });
  if (kind === "info") {
    noticeTimer = setTimeout(() => {
      if (app.value.notice === notice) app.set({ notice: undefined });
    }, NOTICE_MS);
  }
}

/** Show a screen. */
export function show(screen: Screen): void {
  app.set({ screen });
}

/**
 * The client, once the page has connected: a button pressed while the page
 * is still connecting waits for it rather than failing.
 */
export function connected(): Promise<AmtpClient> {
  const now = app.value.client;
  if (now) return Promise.resolve(now);
  return new Promise((resolve) => {
    const stop = app.subscribe(() => {
      const client = app.value.client;
      if (!client) return;
      stop();
      resolve(client);
    });
  });
}
