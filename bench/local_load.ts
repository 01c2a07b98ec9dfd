/**
 * The local delivery load of the profiles (`delivery_profile.ts`,
 * `cpu_profile.ts`): sessions of `s0@bench.test`, `s1@…` sending 1 KiB
 * messages, each to one of 10 mailboxes (`r0@bench.test` … `r9@`), on a
 * server started with `startAmtp`; warmed by one unmeasured second.
 *
 * @module
 */

import { mailSession } from "../testing/mail.ts";
import type { startAmtp } from "../testing/server.ts";
import { concurrent } from "./measure.ts";

/** Senders and mailboxes made, sessions open, warmed. */
export async function localLoad(
  amtp: Awaited<ReturnType<typeof startAmtp>>,
  senders: number,
) {
  const addresses = Array.from(
    { length: senders },
    (_, i) => `s${i}@bench.test`,
  );
  const receivers = Array.from({ length: 10 }, (_, i) => `r${i}@bench.test`);
  for (const a of [...addresses, ...receivers]) await amtp.user(a);
  const sessions = await Promise.all(
    addresses.map(async (a) =>
      await mailSession(await amtp.connect(), a, amtp.keys.get(a)!)
    ),
  );
  const body = "x".repeat(1024);
  const load = {
    sessions,
    receivers,
    body,
    /** Messages sent so far. */
    sent: 0,
    /** Sender `w` sends one message, to the next mailbox. */
    send: (w: number) =>
      sessions[w].call("send", {
        to: [receivers[(w + load.sent++) % receivers.length]],
        subject: "b",
        body,
      }),
  };
  await concurrent(senders, load.send, 1000);
  return load;
}
