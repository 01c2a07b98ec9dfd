/// <reference lib="dom" />
/**
 * What moves the app from one state to another: opening a user's mailbox,
 * signing out.
 *
 * @module
 */

import type { UserSession } from "./account.ts";
import { Mailbox } from "./mailbox.ts";
import { app } from "./state.ts";

/** Open the mailbox of a signed-in user and show it. */
export async function startMail(user: UserSession): Promise<void> {
  app.value.mailbox?.stop();
  const mailbox = new Mailbox(user);
  app.set({ user, mailbox, screen: "mail", backup: undefined });
  await mailbox.start();
  performance.mark("amtp-mailbox-ready");
}

/** Sign the user out (and forget the keys when asked). */
export async function signOut(forget: boolean): Promise<void> {
  const { user, mailbox } = app.value;
  mailbox?.stop();
  await user?.signOut(forget);
  app.set({ user: undefined, mailbox: undefined, screen: "welcome" });
}
