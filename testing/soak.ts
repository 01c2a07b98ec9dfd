/**
 * The kill test: clients send continuously while the sending server is killed
 * with SIGKILL and restarted several times, and a federated peer too. At the
 * end every acknowledged message exists exactly once at its sender and at
 * each recipient, and the outbound queue is empty.
 *
 * `deno task soak [--seconds N] [--kills N]`; a short run is part of the tests.
 *
 * @module
 */

import type { MailSession } from "./mail.ts";
import { type Node, startWorld, type World } from "./federation_world.ts";

/** What a soak run found. */
export interface SoakReport {
  /** Sends acknowledged. */
  acknowledged: number;
  /** SIGKILLs of the sending server. */
  senderKills: number;
  /** SIGKILLs of the peer. */
  peerKills: number;
  /** Problems found (empty when all is well). */
  problems: string[];
  /** Seconds the run took. */
  seconds: number;
}

async function retry<T>(work: () => Promise<T>, until: number): Promise<T> {
  let lastError: unknown;
  while (Date.now() < until) {
    try {
      return await work();
    } catch (error) {
      lastError = error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw lastError;
}

/** Global ids of every copy in a folder (the same for a message on every server). */
async function ids(session: MailSession, folder: string): Promise<string[]> {
  const out: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await session.call<
      { messages: { global_id: string }[]; cursor?: string }
    >("list", {
      folder,
      limit: 200,
      cursor,
    });
    out.push(...page.messages.map((m) => m.global_id));
    cursor = page.cursor;
  } while (cursor);
  return out;
}

/** Run the kill test. */
export async function soak(
  options: { seconds: number; kills: number; senders?: number },
): Promise<SoakReport> {
  const started = Date.now();
  // A lifetime far above the kills' outages: what is checked is that nothing
  // acknowledged is lost or doubled, not when an unreachable peer's mail
  // bounces (restarts take seconds on a loaded machine, the default here is 6).
  const world: World = await startWorld([["a.example.test", "alpha.test"], [
    "b.example.test",
    "beta.test",
  ]], { AMTP_FEDERATION_LIFETIME: "120" });
  const [a, b] = world.nodes;
  const problems: string[] = [];
  const acked = new Set<string>();
  let senderKills = 0;
  let peerKills = 0;
  try {
    for (
      const address of ["alice@alpha.test", "bob@alpha.test", "carl@beta.test"]
    ) await world.addUser(address);
    let stop = false;
    const sender = async (n: number) => {
      let session = await world.mail("alice@alpha.test");
      for (let i = 0; !stop; i++) {
        const clientId = `s${n}-${i}`;
        // Retry the same client id until acknowledged: the answer is then certain.
        for (;;) {
          try {
            const r = await session.call<{ global_id: string }>("send", {
              to: ["bob@alpha.test", "carl@beta.test"],
              subject: `soak ${clientId}`,
              body: `message ${clientId}`,
              client_id: clientId,
            });
            acked.add(r.global_id);
            break;
          } catch {
            session.client.close();
            session = await retry(
              () => world.mail("alice@alpha.test"),
              Date.now() + 60_000,
            );
          }
        }
      }
      session.client.close();
    };
    const kill = async (node: Node) => {
      await node.server!.stop("SIGKILL");
      await new Promise((r) => setTimeout(r, 100));
      await world.start(node);
    };
    const senders = Array.from(
      { length: options.senders ?? 2 },
      (_, n) => sender(n),
    );
    const step = (options.seconds * 1000) / (options.kills * 2 + 1);
    for (let k = 0; k < options.kills; k++) {
      await new Promise((r) => setTimeout(r, step));
      await kill(a);
      senderKills++;
      await new Promise((r) => setTimeout(r, step));
      await kill(b);
      peerKills++;
    }
    await new Promise((r) => setTimeout(r, step));
    stop = true;
    await Promise.all(senders);
    // The queue drains.
    const admin = await world.connect(a);
    await retry(async () => {
      const q = await admin.call<{ items: unknown[] }>("admin_get_queue", {
        admin_token: a.adminToken,
      });
      if (q.items.length) {
        throw new Error(`${q.items.length} items still queued`);
      }
    }, Date.now() + 60_000).catch((error) =>
      problems.push(`outbound queue: ${error.message}`)
    );
    admin.close();
    // Exactly once everywhere.
    const check = async (address: string, folder: string) => {
      const session = await world.mail(address);
      const found = await ids(session, folder);
      const counts = new Map<string, number>();
      for (const id of found) counts.set(id, (counts.get(id) ?? 0) + 1);
      for (const id of acked) {
        const n = counts.get(id) ?? 0;
        if (n !== 1) {
          problems.push(`${address} ${folder}: message ${id} found ${n} times`);
        }
      }
      session.client.close();
    };
    await check("alice@alpha.test", "sent");
    await check("bob@alpha.test", "inbox");
    await check("carl@beta.test", "inbox");
    void b;
  } finally {
    await world.close();
  }
  return {
    acknowledged: acked.size,
    senderKills,
    peerKills,
    problems,
    seconds: (Date.now() - started) / 1000,
  };
}
