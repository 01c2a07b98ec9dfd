import assert from "node:assert/strict";
import {
  bccMessageId,
  localMessageId,
  mainMessageId,
  parseGlobalId,
} from "./ids.ts";

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(text),
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

Deno.test("ids: a received message's local id is the hash the protocol names; a local one keeps its id", async () => {
  const global = parseGlobalId("0123456789abcdef01234567@Alpha.Test")!;
  assert.equal(global.global, "0123456789abcdef01234567@alpha.test");
  assert.equal(
    localMessageId(global, false),
    (await sha256Hex("AMTP message\n0123456789abcdef01234567@alpha.test"))
      .slice(0, 24),
  );
  assert.equal(localMessageId(global, true), "0123456789abcdef01234567");
  // The same id from two origins: two messages.
  assert.notEqual(
    localMessageId(parseGlobalId("x@alpha.test")!, false),
    localMessageId(parseGlobalId("x@evil.test")!, false),
  );
});

Deno.test("ids: a global id from a payload is checked; anything else is no reference", () => {
  for (
    const bad of [
      undefined,
      42,
      "",
      "no-at",
      "@alpha.test",
      "x@",
      "x@localhost",
      "x y@alpha.test",
      `${"a".repeat(129)}@alpha.test`,
      "x@-alpha.test",
      "x@alpha..test",
    ]
  ) assert.equal(parseGlobalId(bad), null, String(bad));
  // Split at the last "@": an id may hold one.
  assert.deepEqual(parseGlobalId("a@b@alpha.test"), {
    id: "a@b",
    domain: "alpha.test",
    global: "a@b@alpha.test",
  });
});

Deno.test("ids: a Bcc recipient's message id is derived, per address, and leads back to its message", async () => {
  const id = bccMessageId("0123456789abcdef01234567", "carol@alpha.test");
  assert.equal(
    id,
    `0123456789abcdef01234567-${
      (await sha256Hex(
        "AMTP bcc\n0123456789abcdef01234567\ncarol@alpha.test",
      )).slice(0, 16)
    }`,
  );
  assert.notEqual(
    id,
    bccMessageId("0123456789abcdef01234567", "dave@alpha.test"),
  );
  assert.equal(mainMessageId(id), "0123456789abcdef01234567");
  assert.equal(
    mainMessageId("0123456789abcdef01234567"),
    "0123456789abcdef01234567",
  );
});
