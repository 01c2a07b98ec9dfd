import assert from "node:assert/strict";
import { AccountStore, keys } from "../../kv/mod.ts";
import { generateLoginKeyPair } from "../../shared/login/algorithms.ts";
import {
  className,
  Decoys,
  type KeyClass,
  MAX_RSA_SIZES,
  mergeRareRsaSizes,
} from "./decoy.ts";
import { encryptSecret } from "./server_crypto.ts";

Deno.test("decoys: algorithms follow the real accounts' first keys, per account and for good", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const accounts = new AccountStore(kv);
    const now = new Date();
    await accounts.addDomain({
      name: "example.org",
      created: now,
      registration_open: false,
      description: "",
    });
    const rsa = await generateLoginKeyPair("RSA-OAEP-256");
    const plan = [
      ...Array(60).fill("Ed25519"),
      ...Array(30).fill("HPKE-X25519"),
      ...Array(10).fill("RSA-OAEP-256"),
    ];
    for (const [i, algorithm] of plan.entries()) {
      await accounts.addUser({
        address: `u${i}@example.org`,
        name: "",
        keys: [{
          id: `${i}`.padStart(16, "0"),
          label: "",
          algorithm,
          public_key: algorithm === "RSA-OAEP-256"
            ? rsa.publicKey
            : new Uint8Array(44),
          created: now,
        }],
        public_keys: [],
        disabled: false,
        quota: 0,
        created: now,
        updated: now,
      });
    }
    // A disabled account's key does not count.
    await accounts.addUser({
      address: "off@example.org",
      name: "",
      keys: [{
        id: "f".repeat(16),
        label: "",
        algorithm: "RSA-OAEP-256",
        public_key: rsa.publicKey,
        created: now,
      }],
      public_keys: [],
      disabled: true,
      quota: 0,
      created: now,
      updated: now,
    });
    const secret = new Uint8Array(32).fill(7);
    const decoys = new Decoys({ kv, accounts, secret });
    const seen: Record<string, number> = {};
    for (let i = 0; i < 3000; i++) {
      const decoy = await decoys.decoy("user", `nobody${i}@example.org`);
      seen[decoy.algorithm] = (seen[decoy.algorithm] ?? 0) + 1;
      if (decoy.key && decoy.key.algorithm !== "Ed25519") {
        const length =
          atob(encryptSecret(decoy.key, "x".repeat(48), new Uint8Array(1)))
            .length;
        // RSA decoys have the size of the real RSA keys (3072 bits), HPKE ones 32 + 48 + 16 bytes.
        assert.equal(length, decoy.algorithm === "RSA-OAEP-256" ? 384 : 96);
      }
    }
    assert.ok(
      Math.abs(seen["Ed25519"] / 3000 - 0.6) < 0.04,
      JSON.stringify(seen),
    );
    assert.ok(
      Math.abs(seen["HPKE-X25519"] / 3000 - 0.3) < 0.04,
      JSON.stringify(seen),
    );
    assert.ok(
      Math.abs(seen["RSA-OAEP-256"] / 3000 - 0.1) < 0.03,
      JSON.stringify(seen),
    );
    // The same account, the same decoy; another server secret, other key ids.
    const a = await decoys.decoy("admin", "root");
    assert.deepEqual(
      { ...(await decoys.decoy("admin", "root")), key: undefined },
      { ...a, key: undefined },
    );
    assert.match(a.keyId, /^[0-9a-f]{16}$/);
    const again = new Decoys({ kv, accounts, secret });
    assert.equal((await again.decoy("admin", "root")).keyId, a.keyId);
    assert.equal((await again.decoy("admin", "root")).algorithm, a.algorithm);
    const other = new Decoys({ kv, accounts, secret: new Uint8Array(32) });
    assert.notEqual((await other.decoy("admin", "root")).keyId, a.keyId);
    // An asked key id is echoed.
    assert.equal((await decoys.decoy("admin", "root", "abc")).keyId, "abc");
    // The RSA decoy key is kept in the database.
    assert.ok((await kv.get(keys.decoyKey("RSA-OAEP-256", 3072))).value);
  } finally {
    kv.close();
  }
});

Deno.test("decoys: with no account, decoys are Ed25519 (the default for new keys)", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const decoys = new Decoys({
      kv,
      accounts: new AccountStore(kv),
      secret: new Uint8Array(32),
    });
    assert.equal((await decoys.decoy("user", "a@b.org")).algorithm, "Ed25519");
  } finally {
    kv.close();
  }
});

Deno.test("decoys: at most eight RSA sizes are imitated, rare ones count for the nearest", () => {
  const counts = new Map<string, [KeyClass, number]>();
  const add = (c: KeyClass, n: number) => counts.set(className(c), [c, n]);
  add({ algorithm: "Ed25519" }, 50);
  add({ algorithm: "RSA-OAEP-256", bits: 2048 }, 20);
  add({ algorithm: "RSA-OAEP-256", bits: 3072 }, 30);
  add({ algorithm: "RSA-OAEP-256", bits: 4096 }, 10);
  for (let bits = 2049; bits < 2049 + 20; bits++) {
    add({ algorithm: "RSA-OAEP-256", bits }, 1);
  }
  add({ algorithm: "RSA-OAEP-256", bits: 4000 }, 1);
  mergeRareRsaSizes(counts);
  const rsa = [...counts.values()].filter(([c]) => c.bits);
  assert.equal(rsa.length, MAX_RSA_SIZES);
  const total = [...counts.values()].reduce((n, [, c]) => n + c, 0);
  assert.equal(total, 50 + 20 + 30 + 10 + 20 + 1, "no account lost");
  assert.equal(
    counts.get("RSA-OAEP-256/4096")![1],
    11,
    "4000 bits counts as 4096",
  );
  assert.equal(counts.get("Ed25519")![1], 50);
});
