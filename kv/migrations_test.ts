import assert from "node:assert/strict";
import {
  migrate,
  type Migration,
  MigrationError,
  MIGRATIONS,
  SchemaTooNewError,
  schemaVersion,
} from "./migrations.ts";
import { openStore } from "./mod.ts";

async function tempKv(): Promise<{ kv: Deno.Kv; path: string; dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "amtp-kv-" });
  const path = `${dir}/test.kv`;
  return { kv: await Deno.openKv(path), path, dir };
}

Deno.test("migrations: a fresh database reaches the newest schema, twice without change", async () => {
  const { kv, dir } = await tempKv();
  try {
    assert.equal(await schemaVersion(kv), 0);
    const version = await migrate(kv);
    assert.equal(version, MIGRATIONS.at(-1)!.version);
    const created = (await kv.get(["meta", "created"])).value;
    assert.ok(created instanceof Date);
    // Running again is a no-op and keeps the first creation time.
    assert.equal(await migrate(kv), version);
    assert.deepEqual((await kv.get(["meta", "created"])).value, created);
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("migrations: a failing migration leaves the version and the data where they were", async () => {
  const { kv, dir } = await tempKv();
  try {
    await kv.set(["domain", "example.org"], { name: "example.org" });
    const known = MIGRATIONS.at(-1)!.version;
    const next = known + 1;
    const migrations: Migration[] = [
      ...MIGRATIONS,
      {
        version: next,
        description: "rename domains (fails half way)",
        run: async (db) => {
          await db.set(["domain_v2", "example.org"], { name: "example.org" });
          throw new Error("disk full");
        },
      },
    ];
    await assert.rejects(() => migrate(kv, { migrations }), MigrationError);
    assert.equal(await schemaVersion(kv), known);
    assert.deepEqual((await kv.get(["domain", "example.org"])).value, {
      name: "example.org",
    });
    // Fixed migration, run again: idempotent over the half-done state.
    migrations[MIGRATIONS.length] = {
      version: next,
      description: "rename domains",
      run: async (db) => {
        for await (const e of db.list({ prefix: ["domain"] })) {
          await db.atomic().set(["domain_v2", e.key[1]], e.value).delete(e.key)
            .commit();
        }
      },
    };
    assert.equal(await migrate(kv, { migrations }), next);
    assert.deepEqual((await kv.get(["domain_v2", "example.org"])).value, {
      name: "example.org",
    });
    assert.equal((await kv.get(["domain", "example.org"])).value, null);
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("migrations: data newer than the server is refused, untouched", async () => {
  const { kv, path, dir } = await tempKv();
  try {
    await kv.set(["meta", "schema"], 99);
    kv.close();
    await assert.rejects(() => openStore(path), SchemaTooNewError);
    const again = await Deno.openKv(path);
    assert.equal((await again.get(["meta", "schema"])).value, 99);
    again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("migrations: old shard usage counters become one add counter", async () => {
  const { kv, dir } = await tempKv();
  try {
    await kv.set(["meta", "schema"], 1);
    await kv.set(["mod_usage", "messages", 0], 100);
    await kv.set(["mod_usage", "messages", 5], 23);
    await migrate(kv);
    assert.equal(
      (await kv.get<Deno.KvU64>(["mod_usage", "messages", "add"])).value?.value,
      123n,
    );
    assert.equal((await kv.get(["mod_usage", "messages", 0])).value, null);
    // Again: nothing changes.
    await migrate(kv);
    assert.equal(
      (await kv.get<Deno.KvU64>(["mod_usage", "messages", "add"])).value?.value,
      123n,
    );
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("migrations: queued outbound items get their due entries; the by-domain index goes", async () => {
  const { kv, dir } = await tempKv();
  try {
    await migrate(kv, { migrations: MIGRATIONS.slice(0, 2) });
    // Written the way a server of schema 2 queued them.
    for (const [id, due] of [["m:1:a.test", 5], ["m:2:b.test", 9]] as const) {
      await kv.set(["outbound", id], { id, next_attempt: due });
      await kv.set(["outbound_by_domain", id.split(":")[2], id], true);
    }
    assert.equal(await migrate(kv), MIGRATIONS.at(-1)!.version);
    const due = [];
    for await (const e of kv.list({ prefix: ["outbound_due"] })) {
      due.push(e.key);
    }
    assert.deepEqual(due, [
      ["outbound_due", 5, "m:1:a.test"],
      ["outbound_due", 9, "m:2:b.test"],
    ]);
    const left = await kv.list({ prefix: ["outbound_by_domain"] }).next();
    assert.equal(left.done, true);
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});
