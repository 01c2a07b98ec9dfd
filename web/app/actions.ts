/// <reference lib="dom" />
/**
 * What moves the app from one state to another: opening a user's mailbox
 * (and opening it again after a reload), signing out.
 *
 * @module
 */

import type { AmtpClient } from "../../client/mod.ts";
import { UserSession } from "./account.ts";
import { storedAccounts } from "./keys.ts";
import { Mailbox } from "./mailbox.ts";
import { app, notify } from "./state.ts";

/** Open the mailbox of a signed-in user and show it. */
export async function startMail(user: UserSession): Promise<void> {
  app.value.mailbox?.stop();
  const mailbox = new Mailbox(user);
  app.set({
    user,
    mailbox,
    screen: "mail",
    backup: undefined,
    notice: undefined,
  });
  await mailbox.start();
  performance.mark("amtp-mailbox-ready");
}

/** Tabs of this browser tell each other of sign-outs (they share the token). */
const tabs = typeof BroadcastChannel === "function"
  ? new BroadcastChannel("amtp-accounts")
  : undefined;

/** Sign the user out (and forget the keys when asked), in every tab. */
export async function signOut(forget: boolean): Promise<void> {
  const { user, mailbox } = app.value;
  mailbox?.stop();
  await user?.signOut(forget);
  app.set({
    user: undefined,
    mailbox: undefined,
    screen: "welcome",
    notice: undefined,
  });
  if (user) tabs?.postMessage({ signedOut: user.address });
}

tabs?.addEventListener("message", (event: MessageEvent) => {
  const { user, mailbox } = app.value;
  if (!user || event.data?.signedOut !== user.address) return;
  mailbox?.stop();
  app.set({ user: undefined, mailbox: undefined, screen: "welcome" });
  notify(`${user.address} was signed out in another tab.`);
});

/**
 * After a reload: the account still signed in here (it has a token; signing
 * out drops it) opens again without a click, when there is exactly one.
 */
export async function resumeMail(client: AmtpClient): Promise<void> {
  const signedIn = (await storedAccounts()).filter((a) => a.token);
  if (signedIn.length !== 1 || app.value.invite || app.value.user) return;
  try {
    await startMail(await UserSession.signIn(client, signedIn[0]));
  } catch {
    // The welcome screen stays, with its "Sign in as" button.
    app.set({ user: undefined, mailbox: undefined, screen: "welcome" });
  }
}
