import assert from "node:assert/strict";
import tar from "tar-stream";
import { ErrorCode } from "../errors.ts";
import { generateLoginKeyPair } from "../login/algorithms.ts";
import { PACKAGE_LIMITS, packPackage, readPackage } from "./format.ts";

const text = (s: string) => new TextEncoder().encode(s);

async function signer() {
  const pair = await generateLoginKeyPair("Ed25519");
  const privateKey = await crypto.subtle.importKey(
    "pkcs8",
    pair.privateKey as Uint8Array<ArrayBuffer>,
    { name: "Ed25519" },
    false,
    ["sign"],
  );
  return { privateKey, publicKey: pair.publicKey };
}

function files(): Map<string, Uint8Array> {
  return new Map([
    [
      "module.json",
      text('{"name":"hello","version":"1.0.0","commands":["hi"]}'),
    ],
    ["mod.ts", text("export {};\n")],
    ["lib/util.ts", text("export const x = 1;\n")],
  ]);
}

/** A gzip tarball of raw entries, as an attacker makes it. */
async function rawTarball(
  entries: {
    name: string;
    type?: tar.Header["type"];
    body?: string;
    linkname?: string;
  }[],
): Promise<Uint8Array> {
  const pack = tar.pack();
  for (const e of entries) {
    pack.entry(
      { name: e.name, type: e.type ?? "file", linkname: e.linkname },
      e.body ?? "",
    );
  }
  pack.finalize();
  const chunks: Uint8Array[] = [];
  for await (const c of pack) chunks.push(c as Uint8Array);
  const stream = new Blob(chunks as Uint8Array<ArrayBuffer>[]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

Deno.test("package: packing is deterministic and reads back verified", async () => {
  const key = await signer();
  const a = await packPackage(files(), key);
  const b = await packPackage(files(), key);
  assert.deepEqual(a, b);
  const pkg = await readPackage(a);
  assert.equal(pkg.index.name, "hello");
  assert.equal(pkg.files.size, 3);
  assert.ok(pkg.author?.key_id.match(/^[0-9a-f]{16}$/));
  assert.equal((await readPackage(await packPackage(files()))).author, null);
});

Deno.test("package: hostile tarballs are refused with PACKAGE_INVALID", async () => {
  const cases: [string, Parameters<typeof rawTarball>[0]][] = [
    ["traversal", [{ name: "amtp-package.json", body: "{}" }, {
      name: "module/../../etc/x",
    }]],
    ["absolute", [{ name: "/etc/passwd" }]],
    ["symlink", [{
      name: "module/a",
      type: "symlink",
      linkname: "/etc/passwd",
    }]],
    ["hard link", [{ name: "module/a", type: "link", linkname: "module/b" }]],
    ["directory", [{ name: "module/d/", type: "directory" }]],
    ["outside module/", [{ name: "other.txt" }]],
    ["hidden", [{ name: "module/.env" }]],
    ["database name", [{ name: "module/x.kv" }]],
  ];
  for (const [what, entries] of cases) {
    await assert.rejects(
      readPackage(await rawTarball(entries)),
      (e: Error & { code?: number }) => {
        assert.equal(
          e.code,
          ErrorCode.PACKAGE_INVALID,
          `${what}: ${e.message}`,
        );
        return true;
      },
      what,
    );
  }
  const clash = new Map([...files(), ["mod.ts/x.ts", text("")]]);
  await assert.rejects(
    readPackage(await packPackage(clash)),
    /mod\.ts\/x\.ts is inside a file/,
  );
  const many = Array.from(
    { length: PACKAGE_LIMITS.files + 3 },
    (_, i) => ({ name: `module/f${i}` }),
  );
  await assert.rejects(
    readPackage(await rawTarball(many)),
    /more than 1000 files/,
  );
  // A gzip bomb: 70 MiB of zeros compress to little, and are refused unpacking.
  const bomb = new Blob([new Uint8Array(70 * 1024 * 1024)]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  await assert.rejects(
    readPackage(new Uint8Array(await new Response(bomb).arrayBuffer())),
    /unpacks to more than/,
  );
  await assert.rejects(
    readPackage(new Uint8Array(PACKAGE_LIMITS.packageBytes + 1)),
    /over the limit/,
  );
});
