import assert from "node:assert/strict";
import { BSON } from "bson";
import {
  accountKeys,
  confirmContact,
  decryptMessage,
  deviceCode,
  type DeviceKeys,
  type DeviceList,
  E2eError,
  encryptMessage,
  generateDeviceKeys,
  generateMasterKeys,
  headerMismatches,
  judgeContact,
  listed,
  type MasterKeys,
  MemoryTrustStore,
  type Opened,
  parseDeviceList,
  pendingRecord,
  type ProfileKey,
  safetyCode,
  signDeviceList,
  type Target,
} from "./e2e.ts";

const HEADERS = {
  to: ["bob@beta.test", "bea@beta.test"],
  cc: [],
  date: new Date("2026-11-28T10:00:00Z"),
  message_id: "0123456789abcdef01234567@alpha.test",
  in_reply_to: null,
};

function target(address: string, ...devices: DeviceKeys[]): Target {
  return { address, devices: devices.map((d) => listed(d)) };
}

async function send(
  from: DeviceKeys,
  recipients: Target[],
  sender = "alice@alpha.test",
): Promise<Uint8Array> {
  return await encryptMessage(
    { subject: "secret plan", body: "MARKER-42 meet at noon", format: "text" },
    { sender, device: from, recipients, headers: HEADERS },
  );
}

function mutate(
  envelope: Uint8Array,
  change: (env: Record<string, unknown>) => void,
): Uint8Array {
  const env = BSON.deserialize(envelope, { promoteBuffers: true });
  change(env);
  return new Uint8Array(BSON.serialize(env));
}

function flip(bytes: Uint8Array, at = 5): Uint8Array {
  const copy = new Uint8Array(bytes);
  copy[at] ^= 1;
  return copy;
}

const tampered = (e: unknown) => e instanceof E2eError && e.code === "tampered";

Deno.test("e2e: every recipient device and the sender's other device read it, with its signed headers; others cannot", async () => {
  const laptop = await generateDeviceKeys("laptop");
  const phone = await generateDeviceKeys("phone");
  const bob = await generateDeviceKeys("bob");
  const bea1 = await generateDeviceKeys("bea-1");
  const bea2 = await generateDeviceKeys("bea-2");
  const eve = await generateDeviceKeys("eve");
  const envelope = await send(laptop, [
    target("bob@beta.test", bob),
    target("bea@beta.test", bea1, bea2),
    target("alice@alpha.test", laptop, phone),
  ]);
  assert.ok(!new TextDecoder("latin1").decode(envelope).includes("MARKER-42"));
  for (
    const [address, d] of [
      ["bob@beta.test", bob],
      ["bea@beta.test", bea1],
      ["bea@beta.test", bea2],
      ["alice@alpha.test", phone],
    ] as const
  ) {
    const opened = await decryptMessage(envelope, { address, device: d });
    assert.equal(opened.content.body, "MARKER-42 meet at noon");
    assert.equal(opened.content.subject, "secret plan");
    assert.equal(opened.signatureValid, true);
    assert.equal(opened.sender, "alice@alpha.test");
    assert.deepEqual(opened.content.headers, {
      ...HEADERS,
      from: "alice@alpha.test",
      sender_device: laptop.id,
    });
  }
  await assert.rejects(
    () => decryptMessage(envelope, { address: "eve@evil.test", device: eve }),
    (e: unknown) => e instanceof E2eError && e.code === "not_a_recipient",
  );
  // Eve's keys under bob's device id do not open bob's sealed key.
  await assert.rejects(
    () =>
      decryptMessage(envelope, {
        address: "bob@beta.test",
        device: { ...eve, id: bob.id },
      }),
    tampered,
  );
});

Deno.test("e2e: a changed byte, a re-signed or re-claimed envelope and a split content key are detected", async () => {
  const alice = await generateDeviceKeys("laptop");
  const bob = await generateDeviceKeys("bob");
  const carol = await generateDeviceKeys("carol");
  const eve = await generateDeviceKeys("eve");
  const envelope = await send(alice, [
    target("bob@beta.test", bob),
    target("carol@gamma.test", carol),
  ]);
  const open = (bytes: Uint8Array, device = bob, address = "bob@beta.test") =>
    decryptMessage(bytes, { address, device });
  await assert.rejects(
    () =>
      open(
        mutate(
          envelope,
          (e) => e.ciphertext = flip(e.ciphertext as Uint8Array),
        ),
      ),
    tampered,
  );
  await assert.rejects(
    () =>
      open(mutate(envelope, (e) => {
        const r = (e.recipients as { sealed_key: Uint8Array }[])[0];
        r.sealed_key = flip(r.sealed_key);
      })),
    tampered,
  );
  assert.equal(
    (await open(
      mutate(envelope, (e) => e.signature = flip(e.signature as Uint8Array)),
    ))
      .signatureValid,
    false,
  );
  // Another name as sender: the seals are bound to the sender, they do not open.
  await assert.rejects(
    () => open(mutate(envelope, (e) => e.sender = "mallory@alpha.test")),
    tampered,
  );
  // Eve (a recipient who knows nothing more than the envelope) re-signs it as hers: no seal opens.
  const reclaimed = mutate(envelope, (e) => {
    e.sender = "eve@evil.test";
    e.sender_device = eve.id;
    e.sender_sign = eve.signPublic;
  });
  await assert.rejects(() => open(reclaimed), tampered);
  // A sender sealing a different key to carol under the same commitment and signature.
  const other = crypto.getRandomValues(new Uint8Array(32));
  const forCarol = await encryptMessage(
    { subject: "other", body: "other", format: "text" },
    {
      sender: "alice@alpha.test",
      device: alice,
      recipients: [target("carol@gamma.test", carol)],
      headers: HEADERS,
      contentKey: other,
    },
  );
  const split = mutate(envelope, (e) => {
    const carolSeal = (BSON.deserialize(forCarol, { promoteBuffers: true })
      .recipients as Record<string, unknown>[])[0];
    (e.recipients as Record<string, unknown>[])[1] = carolSeal;
  });
  await assert.rejects(
    () => open(split, carol, "carol@gamma.test"),
    tampered,
  );
  await assert.rejects(() => open(new Uint8Array([1, 2, 3])), E2eError);
});

async function profileOf(
  address: string,
  master: MasterKeys,
  counter: number,
  devices: DeviceKeys[],
  pending: DeviceKeys[] = [],
): Promise<ProfileKey[]> {
  const list = await signDeviceList(master, {
    address,
    counter,
    devices: devices.map((d) => listed(d)),
  });
  return [
    { key_id: `list${counter}`, ...list },
    ...pending.map((d, i) => ({ key_id: `p${i}`, ...pendingRecord(d) })),
  ];
}

Deno.test("e2e: device lists verify with their master key; forged, foreign or older lists and pending devices are not used", async () => {
  const master = await generateMasterKeys();
  const laptop = await generateDeviceKeys("laptop");
  const phone = await generateDeviceKeys("phone");
  const ghost = await generateDeviceKeys("ghost");
  const keys = await accountKeys("alice@alpha.test", [
    ...(await profileOf("alice@alpha.test", master, 1, [laptop])),
    ...(await profileOf("alice@alpha.test", master, 2, [laptop, phone], [
      ghost,
    ])),
  ]);
  assert.equal(keys.list?.counter, 2);
  assert.deepEqual(keys.list?.devices.map((d) => d.label), ["laptop", "phone"]);
  assert.deepEqual(keys.staleRecords, ["list1"]);
  assert.deepEqual(keys.pending.map((p) => p.label), ["ghost"]);
  // The server forges a list (its own master key) with a higher counter: it verifies, as a
  // different master, which the trust check below reports as a change.
  const forged = await profileOf(
    "alice@alpha.test",
    await generateMasterKeys(),
    9,
    [ghost],
  );
  const withForged = await accountKeys("alice@alpha.test", [...forged]);
  assert.notDeepEqual(withForged.list?.master, master.public);
  // A changed byte in a list, or a list of another account, is not a list.
  const record = (await profileOf("alice@alpha.test", master, 3, [laptop]))[0];
  await assert.rejects(
    () =>
      parseDeviceList(
        flip(record.key, record.key.length - 10),
        "alice@alpha.test",
      ),
    E2eError,
  );
  await assert.rejects(
    () => parseDeviceList(record.key, "bob@beta.test"),
    tampered,
  );
  assert.equal(
    (await accountKeys("alice@alpha.test", [{
      ...record,
      key: flip(record.key, record.key.length - 10),
    }])).invalid,
    1,
  );
});

Deno.test("e2e: a master key is pinned on first use; a new one stays flagged until confirmed; an older list is a rollback", async () => {
  const trust = new MemoryTrustStore();
  const list = (master: MasterKeys, counter: number): DeviceList => ({
    address: "alice@alpha.test",
    master: master.public,
    counter,
    created: new Date(),
    devices: [],
  });
  const first = await generateMasterKeys();
  const second = await generateMasterKeys();
  assert.equal(await judgeContact(list(first, 1), trust), "first-use");
  assert.equal(await judgeContact(list(first, 2), trust), "known");
  assert.equal(await judgeContact(list(first, 1), trust), "rolled-back");
  assert.equal(await judgeContact(list(second, 1), trust), "changed");
  // Still changed, however often it is seen.
  assert.equal(await judgeContact(list(second, 1), trust), "changed");
  assert.equal(await judgeContact(list(second, 5), trust), "changed");
  await confirmContact(list(second, 5), trust);
  assert.equal(await judgeContact(list(second, 5), trust), "confirmed");
  assert.equal(await judgeContact(list(first, 7), trust), "changed");
  // The safety code is the same on both sides and differs for another key.
  const a = { address: "alice@alpha.test", master: first.public };
  const b = { address: "bob@beta.test", master: second.public };
  assert.match(await safetyCode(a, b), /^(\d{5} ){5}\d{5}$/);
  assert.equal(await safetyCode(a, b), await safetyCode(b, a));
  assert.notEqual(
    await safetyCode(a, { ...b, master: (await generateMasterKeys()).public }),
    await safetyCode(a, b),
  );
  const d = await generateDeviceKeys("x");
  assert.match(
    await deviceCode("alice@alpha.test", {
      enc: d.encryptPublic,
      sign: d.signPublic,
    }),
    /^(\d{5} ){5}\d{5}$/,
  );
});

Deno.test("e2e: a server's copy that differs from the signed headers or attachment list is pointed out", async () => {
  const alice = await generateDeviceKeys("laptop");
  const bob = await generateDeviceKeys("bob");
  const envelope = await encryptMessage(
    {
      subject: "s",
      body: "b",
      format: "text",
      attachments: [{
        attachment_id: "att1",
        name: "plan.pdf",
        type: "application/pdf",
        nonce: new Uint8Array(12),
        sha256: "aa",
        stored_sha256: "bb",
      }],
    },
    {
      sender: "alice@alpha.test",
      device: alice,
      recipients: [target("bob@beta.test", bob)],
      headers: { ...HEADERS, in_reply_to: "parent1@alpha.test" },
    },
  );
  const opened: Opened = await decryptMessage(envelope, {
    address: "bob@beta.test",
    device: bob,
  });
  const outer = {
    global_id: HEADERS.message_id,
    from: "alice@alpha.test",
    to: ["bea@beta.test", "bob@beta.test"],
    cc: [],
    date: new Date(HEADERS.date.getTime() + 60_000),
    attachments: [{ id: "att1", sha256: "bb" }],
  };
  assert.deepEqual(headerMismatches(opened, outer, "parent1@alpha.test"), []);
  const problems = headerMismatches(opened, {
    ...outer,
    global_id: "ffffffffffffffffffffffff@alpha.test",
    to: ["bob@beta.test"],
    date: new Date("2027-01-01T00:00:00Z"),
    attachments: [{ id: "att2", sha256: "cc" }],
  }, "other@alpha.test");
  for (
    const pattern of [
      /shows To bob@beta\.test/,
      /dates it 2027-01-01/,
      /delivered it as ffff/,
      /threads it under other@alpha\.test/,
      /att2 is not signed/,
      /plan\.pdf signed by the sender is missing/,
    ]
  ) {
    assert.ok(problems.some((p) => pattern.test(p)), `${pattern}: ${problems}`);
  }
});
