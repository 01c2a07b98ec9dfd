/**
 * Two server processes on one database serving one domain (docs/DEPLOY.md,
 * Several instances): a user on one instance gets the pushes of mail
 * handled by the other; each queued remote delivery is delivered by one
 * instance; a SIGKILLed instance's deliveries are taken over; every message
 * arrives exactly once.
 */

import assert from "node:assert/strict";
import { AmtpClient } from "../client/mod.ts";
import type { OutboundItem } from "../kv/outbound.ts";
import { certificateHash } from "../shared/pem.ts";
import { freePort } from "../testing/dnsmasq.ts";
import { startWorld } from "../testing/federation_world.ts";
import { waitFor } from "../testing/helpers.ts";
import { mailSession, pushOf } from "../testing/mail.ts";
import { startServerProcess } from "../testing/process.ts";

/** The ids each instance logged as delivered (`outbound_delivered`, JSON logs). */
function delivered(stderr: string): string[] {
  return stderr.split("\n").filter((l) => l.includes('"outbound_delivered"'))
    .map((l) => JSON.parse(l).id as string);
}

Deno.test("two instances: cross-instance pushes, each queued delivery by one instance, a killed one's taken over, all exactly once", async () => {
  const world = await startWorld([
    ["a.one.test", "one.test"],
    ["b.two.test", "two.test"],
  ], {
    AMTP_CLUSTER_POLL: "50",
    // Long enough for an instance to deliver what it took on a loaded
    // machine (no lease is renewed while its delivery runs), short enough
    // for the take-over below.
    AMTP_QUEUE_LEASE: "30",
    AMTP_FEDERATION_LIFETIME: "300",
    AMTP_LOG_FORMAT: "json",
    AMTP_LOG_LEVEL: "info",
  });
  const [one, two] = world.nodes;
  const first = one.server!;
  let second: Awaited<ReturnType<typeof startServerProcess>> | undefined;
  const kv = await Deno.openKv(`${one.dir}/data/amtp.kv`);
  try {
    await world.addUser("alice@one.test");
    const carolKey = await world.addUser("carol@one.test");
    await world.addUser("dave@two.test");
    // The second instance: the same data folder, its own port.
    second = await startServerProcess(one.dir, {
      ...one.env,
      AMTP_PORT: String(freePort()),
    });
    const alice = await world.mail("alice@one.test"); // on the first
    const carol = await mailSession(
      await AmtpClient.connect({
        url: `https://127.0.0.1:${second.port}/amtp`,
        certHash: await certificateHash(one.certPem),
        keepAliveMs: 0,
      }),
      "carol@one.test",
      carolKey,
    );

    // Mail handled by one instance is pushed to sessions on the other.
    const started = performance.now();
    await carol.call("send", { to: ["alice@one.test"], subject: "to A" });
    await pushOf(alice, "message_new", (d) => d.subject === "to A");
    const crossMs = performance.now() - started;
    await alice.call("send", { to: ["carol@one.test"], subject: "to B" });
    await pushOf(carol, "message_new", (d) => d.subject === "to B");
    console.log(`send on B to push on A: ${crossMs.toFixed(1)} ms`);

    const queued = async () => {
      const items: Deno.KvEntry<OutboundItem>[] = [];
      for await (const e of kv.list<OutboundItem>({ prefix: ["outbound"] })) {
        items.push(e);
      }
      return items;
    };
    const sendBatch = async (tag: string, n: number) => {
      await Promise.all([alice, carol].map(async (s) => {
        for (let i = 0; i < n; i++) {
          await s.call("send", {
            to: ["dave@two.test"],
            subject: `${tag} ${s.address} ${i}`,
          });
        }
      }));
    };

    // 1. While two.test is down both instances queue; once it is back,
    // each item is delivered by exactly one of them.
    await two.server!.stop();
    await sendBatch("first", 15);
    assert.equal((await queued()).length, 30);
    await world.start(two);
    await waitFor(async () => (await queued()).length === 0, 30_000, "queue");
    const byFirst = delivered(first.stderr());
    const bySecond = delivered(second.stderr());
    assert.equal(byFirst.length + bySecond.length, 30);
    assert.deepEqual(byFirst.filter((id) => bySecond.includes(id)), []);
    assert.equal(new Set([...byFirst, ...bySecond]).size, 30);

    // 2. two.test stops answering (SIGSTOP): attempts hang, leased. The
    // instance holding leases is SIGKILLed; the other takes them over once
    // they expire, and delivers when two.test answers again.
    two.server!.child.kill("SIGSTOP");
    await sendBatch("second", 10);
    // Each instance's name in its leases: its host and port.
    const ports = [first.port, second.port];
    const portOf = (holder?: string) => Number(holder?.split(":").at(-1));
    let victim = -1;
    await waitFor(
      async () => {
        const now = Date.now();
        for (const e of await queued()) {
          const port = portOf(e.value.lease?.holder);
          if (ports.includes(port) && e.value.lease!.until > now) {
            victim = port;
            return true;
          }
        }
        return false;
      },
      15_000,
      "a leased item",
    );
    const killed = victim === first.port ? first : second;
    const survivor = killed === first ? second : first;
    const leasedByVictim = (await queued()).filter((e) =>
      portOf(e.value.lease?.holder) === victim
    ).map((e) => e.value.id);
    assert.ok(leasedByVictim.length > 0);
    killed.child.kill("SIGKILL");
    await killed.child.status;
    two.server!.child.kill("SIGCONT");
    await waitFor(async () => (await queued()).length === 0, 90_000, "queue");
    // The survivor delivered what the dead one held.
    const bySurvivor = delivered(survivor.stderr());
    for (const id of leasedByVictim) assert.ok(bySurvivor.includes(id), id);

    // Every message exactly once in dave's inbox.
    const dave = await world.mail("dave@two.test");
    const subjects: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await dave.call<
        { messages: { subject: string }[]; cursor?: string }
      >("list", { limit: 200, cursor });
      subjects.push(...page.messages.map((m) => m.subject));
      cursor = page.cursor;
    } while (cursor);
    const expected = ["first", "second"].flatMap((tag) =>
      ["alice@one.test", "carol@one.test"].flatMap((a) =>
        Array.from(
          { length: tag === "first" ? 15 : 10 },
          (_, i) => `${tag} ${a} ${i}`,
        )
      )
    );
    assert.deepEqual(subjects.sort(), expected.sort());
    carol.client.close();
  } finally {
    kv.close();
    try {
      two.server?.child.kill("SIGCONT");
    } catch { /* gone */ }
    await second?.stop("SIGKILL");
    await world.close();
  }
});
