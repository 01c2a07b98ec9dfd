import assert from "node:assert/strict";
import {
  decryptMessage,
  type DeviceKeys,
  deviceRecord,
  devicesOf,
  E2eError,
  encryptMessage,
  generateDeviceKeys,
  judgeSender,
  MemoryTrustStore,
  type PublishedDevice,
} from "./e2e.ts";
import { BSON } from "bson";

async function device(label: string, id: string): Promise<DeviceKeys> {
  return { ...(await generateDeviceKeys(label)), keyId: id };
}

function published(d: DeviceKeys): PublishedDevice {
  const record = deviceRecord(d);
  return devicesOf({
    public_keys: [{
      key_id: d.keyId!,
      label: d.label,
      algorithm: record.algorithm,
      key: record.key,
    }],
  })[0];
}

Deno.test("e2e: every recipient device and the sender's other device read it; others cannot", async () => {
  const laptop = await device("laptop", "a1");
  const phone = await device("phone", "a2");
  const bob = await device("bob", "b1");
  const bea1 = await device("bea-1", "c1");
  const bea2 = await device("bea-2", "c2");
  const eve = await device("eve", "e1");
  const envelope = await encryptMessage({
    subject: "secret plan",
    body: "MARKER-42 meet at noon",
    format: "text",
  }, {
    sender: "alice@alpha.test",
    device: laptop,
    recipients: [
      { address: "bob@beta.test", devices: [published(bob)] },
      { address: "bea@beta.test", devices: [published(bea1), published(bea2)] },
      {
        address: "alice@alpha.test",
        devices: [published(laptop), published(phone)],
      },
    ],
  });
  assert.ok(!new TextDecoder("latin1").decode(envelope).includes("MARKER-42"));
  for (
    const [address, d] of [["bob@beta.test", bob], ["bea@beta.test", bea1], [
      "bea@beta.test",
      bea2,
    ], ["alice@alpha.test", phone]] as const
  ) {
    const opened = await decryptMessage(envelope, { address, device: d });
    assert.equal(opened.content.body, "MARKER-42 meet at noon");
    assert.equal(opened.content.subject, "secret plan");
    assert.equal(opened.signatureValid, true);
    assert.equal(opened.sender, "alice@alpha.test");
  }
  await assert.rejects(
    () => decryptMessage(envelope, { address: "eve@evil.test", device: eve }),
    (e: unknown) => e instanceof E2eError && e.code === "not_a_recipient",
  );
  // Eve claiming to be bob's device does not open bob's sealed key.
  await assert.rejects(
    () =>
      decryptMessage(envelope, {
        address: "bob@beta.test",
        device: { ...eve, keyId: "b1" },
      }),
    (e: unknown) => e instanceof E2eError && e.code === "tampered",
  );
});

Deno.test("e2e: a changed byte in the ciphertext, a sealed key or the signature is detected", async () => {
  const alice = await device("laptop", "a1");
  const bob = await device("bob", "b1");
  const envelope = await encryptMessage({
    subject: "s",
    body: "hello",
    format: "text",
  }, {
    sender: "alice@alpha.test",
    device: alice,
    recipients: [{ address: "bob@beta.test", devices: [published(bob)] }],
  });
  const mutate = (change: (env: Record<string, unknown>) => void) => {
    const env = BSON.deserialize(envelope, { promoteBuffers: true }) as Record<
      string,
      unknown
    >;
    change(env);
    return new Uint8Array(BSON.serialize(env));
  };
  const flip = (bytes: Uint8Array, at = 5) => {
    const copy = new Uint8Array(bytes);
    copy[at] ^= 1;
    return copy;
  };
  const open = (bytes: Uint8Array) =>
    decryptMessage(bytes, { address: "bob@beta.test", device: bob });
  await assert.rejects(
    () => open(mutate((e) => e.ciphertext = flip(e.ciphertext as Uint8Array))),
    (e: unknown) => e instanceof E2eError && e.code === "tampered",
  );
  await assert.rejects(
    () =>
      open(
        mutate((e) =>
          (e.recipients as { sealed_key: Uint8Array }[])[0].sealed_key = flip(
            (e.recipients as { sealed_key: Uint8Array }[])[0].sealed_key,
          )
        ),
      ),
    (e: unknown) => e instanceof E2eError && e.code === "tampered",
  );
  const badSignature = await open(
    mutate((e) => e.signature = flip(e.signature as Uint8Array)),
  );
  assert.equal(badSignature.signatureValid, false);
  // A sender name changed after signing: content opens, the signature does not verify.
  const renamed = await open(mutate((e) => e.sender = "mallory@alpha.test"));
  assert.equal(renamed.signatureValid, false);
  await assert.rejects(() => open(new Uint8Array([1, 2, 3])), E2eError);
});

Deno.test("e2e: trust on first use, then a changed key is pointed out", async () => {
  const first = await device("laptop", "a1");
  const second = await device("new", "a3");
  const bob = await device("bob", "b1");
  const trust = new MemoryTrustStore();
  const send = async (from: DeviceKeys) =>
    await decryptMessage(
      await encryptMessage({ subject: "", body: "x", format: "text" }, {
        sender: "alice@alpha.test",
        device: from,
        recipients: [{ address: "bob@beta.test", devices: [published(bob)] }],
      }),
      { address: "bob@beta.test", device: bob },
    );
  const o1 = await send(first);
  assert.equal(await judgeSender(o1, [published(first)], trust), "first-use");
  assert.equal(await judgeSender(o1, [published(first)], trust), "known");
  const o2 = await send(second);
  assert.equal(await judgeSender(o2, [published(first)], trust), "unpublished");
  assert.equal(
    await judgeSender(o2, [published(first), published(second)], trust),
    "changed",
  );
  await trust.set(
    "alice@alpha.test",
    (await trust.get("alice@alpha.test")).map((k) => ({
      ...k,
      confirmed: true,
    })),
  );
  assert.equal(
    await judgeSender(o2, [published(first), published(second)], trust),
    "confirmed",
  );
});
