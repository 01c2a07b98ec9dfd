/**
 * Signed module packages, as authors and admins use them: the CLI against a
 * real server process (init, keygen, pack, install with trust on first use,
 * a user's call, switch default, rollback, install over https and from an
 * npm tarball), and attacks on a running server (tampered after signing,
 * unsigned, another author's key, hostile tarballs).
 */

import assert from "node:assert/strict";
import tar from "tar-stream";
import { runCli, startServerProcess } from "../testing/process.ts";
import { adminCaller, makeKey, startTestServer } from "../testing/helpers.ts";
import { createCertificate } from "../core/tls/cert.ts";
import { takeBackup } from "../core/backup/mod.ts";
import { ErrorCode } from "../shared/errors.ts";
import { packPackage, readPackage } from "../shared/package/format.ts";
import { sha256Hex } from "../shared/pem.ts";
import { toBase64 } from "../shared/login/algorithms.ts";

const text = (s: string) => new TextEncoder().encode(s);

/** The CLI in `cwd` against the server, with one profile. */
function cliIn(cwd: string, extra: Record<string, string> = {}) {
  const env = {
    AMTP_DATA: `${cwd}/data`,
    AMTP_CLI_STATE: `${cwd}/cli.json`,
    ...extra,
  };
  const run = (...args: string[]) => runCli(args, env, cwd);
  const ok = async (...args: string[]) => {
    const result = await run(...args);
    assert.equal(
      result.code,
      0,
      `amtp ${args.join(" ")}\n${result.stdout}\n${result.stderr}`,
    );
    return result.stdout;
  };
  return { run, ok };
}

async function setVersion(dir: string, version: string, greeting: string) {
  const manifest = JSON.parse(await Deno.readTextFile(`${dir}/module.json`));
  manifest.version = version;
  await Deno.writeTextFile(`${dir}/module.json`, JSON.stringify(manifest));
  const code = await Deno.readTextFile(`${dir}/mod.ts`);
  await Deno.writeTextFile(
    `${dir}/mod.ts`,
    code.replace(/greeting: `[^`]*`/, `greeting: \`${greeting}\``),
  );
}

Deno.test("packages: an author packs a signed module, an admin installs it (trust on first use), a user calls it, switch default, rollback", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "amtp-pkg-" });
  const server = await startServerProcess(cwd, { AMTP_PORT: "0" });
  const { run, ok } = cliIn(cwd);
  const call = async (version?: string) => {
    const out = await ok(
      "call",
      JSON.stringify({
        command: "hello_hello",
        module: "hello",
        ...(version ? { version } : {}),
      }),
    );
    return JSON.parse(out).data.greeting as string;
  };
  try {
    await ok(
      "login",
      "--admin",
      "admin",
      "--key",
      "data/admin.key",
      "--server",
      `127.0.0.1:${server.port}`,
    );
    // The author's side, from an empty folder.
    assert.match(await ok("module", "init", "hello"), /module\.json/);
    assert.match(await ok("module", "keygen"), /key id [0-9a-f]{16}/);
    const packed = await ok("module", "pack", "hello", "--key", "author");
    assert.match(packed, /hello-1\.0\.0\.amtp\.tgz.*signed by key/);
    // Deterministic: the same folder and key give the same bytes.
    const first = await Deno.readFile(`${cwd}/hello-1.0.0.amtp.tgz`);
    await ok(
      "module",
      "pack",
      "hello",
      "--key",
      "author",
      "--out",
      "again.tgz",
    );
    assert.deepEqual(await Deno.readFile(`${cwd}/again.tgz`), first);
    // The author's deno.json (editor tooling) is not packed.
    assert.ok(!(await readPackage(first)).files.has("deno.json"));

    // Without --yes and without a terminal: shown, not installed.
    const shown = await run(
      "admin",
      "module",
      "install",
      "hello-1.0.0.amtp.tgz",
    );
    assert.equal(shown.code, 1, shown.stderr);
    assert.match(shown.stdout, /TRUST ON FIRST USE/);
    assert.match(shown.stdout, /commands: hello_hello/);
    assert.match(shown.stdout, /storage quota: 1048576 bytes/);
    assert.match(shown.stdout, /not installed/);
    const installed = await ok(
      "admin",
      "module",
      "install",
      "hello-1.0.0.amtp.tgz",
      "--yes",
    );
    assert.match(installed, /installed hello 1\.0\.0: running/);
    // It lives in the data folder, not in the server's checkout.
    await Deno.stat(`${cwd}/data/packages/hello/1.0.0/module.json`);
    await assert.rejects(
      Deno.stat(new URL("../modules/hello", import.meta.url).pathname),
    );

    // A user calls it.
    await ok("keygen", "alice");
    await ok("admin", "add-domain", "example.org");
    await ok("admin", "add-user", "alice@example.org", "--key", "alice");
    await ok("login", "--user", "alice@example.org", "--key", "alice");
    assert.equal(await call(), "hello world, from alice@example.org");

    // 1.1.0 installs beside 1.0.0, by the key now trusted (no warning).
    await setVersion(`${cwd}/hello`, "1.1.0", "version 1.1");
    await ok("module", "pack", "hello", "--key", "author");
    const second = await ok(
      "admin",
      "module",
      "install",
      "hello-1.1.0.amtp.tgz",
      "--yes",
    );
    assert.match(second, /\(trusted\)/);
    assert.doesNotMatch(second, /WARNING/);
    assert.equal(await call(), "hello world, from alice@example.org");
    assert.equal(await call("1.1.0"), "version 1.1");
    await ok("admin", "module", "default", "hello", "1.1.0");
    assert.equal(await call(), "version 1.1");
    assert.match(
      await ok("admin", "module", "rollback", "hello"),
      /hello 1\.0\.0 is the default/,
    );
    assert.equal(await call(), "hello world, from alice@example.org");
    // --default switches at once, and rolls back to the one that served.
    await setVersion(`${cwd}/hello`, "1.1.1", "version 1.1.1");
    await ok("module", "pack", "hello", "--key", "author");
    assert.match(
      await ok(
        "admin",
        "module",
        "install",
        "hello-1.1.1.amtp.tgz",
        "--yes",
        "--default",
      ),
      /installed hello 1\.1\.1: running, the default/,
    );
    assert.equal(await call(), "version 1.1.1");
    await ok("admin", "module", "rollback", "hello");
    assert.equal(await call(), "hello world, from alice@example.org");

    // The list shows each version's author key and rights.
    const keyId = (await readPackage(first)).author!.key_id;
    const list = await ok("admin", "module", "list");
    assert.match(
      list,
      new RegExp(`hello 1\\.0\\.0 \\(default\\).*package, author key ${keyId}`),
    );
    assert.match(list, /hello 1\.1\.0: running.*author key/);
    assert.match(list, /messages 1\.0\.0.*shipped/);

    // Another author's package of the same module is refused: 232.
    await ok("module", "keygen", "mallory");
    await setVersion(`${cwd}/hello`, "1.2.0", "evil");
    await ok("module", "pack", "hello", "--key", "mallory");
    const evil = await run(
      "admin",
      "module",
      "install",
      "hello-1.2.0.amtp.tgz",
      "--yes",
    );
    assert.equal(evil.code, 1);
    assert.match(
      evil.stderr,
      /error 232 PACKAGE_UNTRUSTED_KEY: .*trusted from key/,
    );

    // A restart keeps the installed versions, the default and the author key.
    await server.stop();
    const again = await startServerProcess(cwd, { AMTP_PORT: "0" });
    try {
      const { ok: ok2 } = cliIn(cwd);
      await ok2(
        "login",
        "--admin",
        "admin",
        "--key",
        "data/admin.key",
        "--server",
        `127.0.0.1:${again.port}`,
      );
      const after = await ok2("admin", "module", "list");
      assert.match(
        after,
        new RegExp(
          `hello 1\\.0\\.0 \\(default\\): running.*author key ${keyId}`,
        ),
      );
      assert.match(after, /hello 1\.1\.0: running/);
    } finally {
      await again.stop();
    }
  } finally {
    await server.stop();
    await Deno.remove(cwd, { recursive: true });
  }
});

/** A package's files, and one signed by a fresh key. */
async function signedHello(version = "1.0.0", name = "hello") {
  const key = await makeKey();
  const files = new Map([
    [
      "module.json",
      text(JSON.stringify({
        name,
        version,
        commands: ["hi"],
        isolation: "process",
      })),
    ],
    [
      "mod.ts",
      text(
        `import { serveModule } from "@amtp/sdk";\nserveModule({ commands: { hi: () => ({ v: "${version}" }) } });\n`,
      ),
    ],
  ]);
  return {
    key,
    files,
    bytes: await packPackage(files, {
      privateKey: key.privateKey,
      publicKey: key.publicKey,
    }),
  };
}

/** Rewrite a package's tarball, changing entries (after signing). */
async function rewrite(
  bytes: Uint8Array,
  change: (name: string, data: Uint8Array) => Uint8Array | null,
  extra: {
    name: string;
    type?: "file" | "symlink";
    linkname?: string;
    body?: string;
  }[] = [],
): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new DecompressionStream("gzip"));
  const raw = new Uint8Array(await new Response(stream).arrayBuffer());
  const extract = tar.extract();
  const entries: [string, Uint8Array][] = [];
  const reading = (async () => {
    for await (const entry of extract) {
      const chunks: Uint8Array[] = [];
      for await (const c of entry) chunks.push(c as Uint8Array);
      entries.push([
        entry.header.name,
        new Uint8Array(
          await new Blob(chunks as Uint8Array<ArrayBuffer>[]).arrayBuffer(),
        ),
      ]);
    }
  })();
  extract.end(raw);
  await reading;
  const pack = tar.pack();
  for (const [name, data] of entries) {
    const changed = change(name, data);
    if (changed) pack.entry({ name, size: changed.length }, changed);
  }
  for (const e of extra) {
    pack.entry(
      { name: e.name, type: e.type ?? "file", linkname: e.linkname },
      e.body ?? "",
    );
  }
  pack.finalize();
  const chunks: Uint8Array[] = [];
  for await (const c of pack) chunks.push(c as Uint8Array);
  const gz = new Blob(chunks as Uint8Array<ArrayBuffer>[]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(gz).arrayBuffer());
}

Deno.test("packages: the server refuses tampered, unsigned, untrusted and hostile packages itself", async () => {
  const t = await startTestServer();
  try {
    const client = await t.connect();
    const admin = await adminCaller(client, t.dataDir);
    const upload = async (bytes: Uint8Array) => {
      const { upload } = await admin("admin_package_upload", {
        size: bytes.length,
      }) as {
        upload: string;
      };
      for (let offset = 0; offset < bytes.length; offset += 512 * 1024) {
        await admin("admin_package_chunk", {
          upload,
          offset,
          data: bytes.subarray(offset, offset + 512 * 1024),
        });
      }
      return upload;
    };
    const install = async (
      bytes: Uint8Array,
      more: Record<string, unknown> = {},
    ) =>
      admin("admin_package_install", {
        upload: await upload(bytes),
        sha256: await sha256Hex(bytes),
        ...more,
      });
    const refused = async (
      bytes: Uint8Array,
      code: number,
      message: RegExp,
      more: Record<string, unknown> = {},
    ) => {
      await assert.rejects(
        install(bytes, more),
        (e: Error & { code?: number }) => {
          assert.equal(e.code, code, e.message);
          assert.match(e.message, message);
          return true;
        },
      );
    };

    const good = await signedHello();
    // A file changed after signing.
    const changedFile = await rewrite(
      good.bytes,
      (name, data) =>
        name === "module/mod.ts"
          ? text(new TextDecoder().decode(data) + "Deno.exit(1);\n")
          : data,
    );
    await refused(
      changedFile,
      ErrorCode.PACKAGE_TAMPERED,
      /module\/mod\.ts does not match its SHA-256 in the signed index: changed after signing/,
    );
    // The index changed after signing (a hash updated to the new file).
    const changedIndex = await rewrite(
      good.bytes,
      (name, data) =>
        name === "amtp-package.json"
          ? text(new TextDecoder().decode(data).replace('"1.0.0"', '"1.0.1"'))
          : data,
    );
    await refused(
      changedIndex,
      ErrorCode.PACKAGE_TAMPERED,
      /the signature does not verify/,
    );
    // A file added after signing.
    const added = await rewrite(good.bytes, (_, d) => d, [{
      name: "module/extra.ts",
      body: "x",
    }]);
    await refused(
      added,
      ErrorCode.PACKAGE_TAMPERED,
      /module\/extra\.ts is not in the signed index/,
    );
    // Hostile tarballs: a symbolic link, a path out of the folder.
    const link = await rewrite(good.bytes, (_, d) => d, [{
      name: "module/key",
      type: "symlink",
      linkname: `${t.dataDir}/admin.key`,
    }]);
    await refused(
      link,
      ErrorCode.PACKAGE_INVALID,
      /a symlink \(a package holds regular files only/,
    );
    const escape = await rewrite(good.bytes, (_, d) => d, [{
      name: "module/../../../evil.ts",
      body: "x",
    }]);
    await refused(
      escape,
      ErrorCode.PACKAGE_INVALID,
      /not a plain file or folder name/,
    );
    // Another admin's upload can be neither added to nor installed.
    const opsKey = await makeKey();
    await admin("admin_add_admin", {
      name: "ops",
      algorithm: opsKey.algorithm,
      public_key: opsKey.publicKey,
    });
    const opsClient = await t.connect();
    const opsToken = (await opsClient.login("admin", "ops", opsKey)).token;
    const theirs = await upload(good.bytes);
    for (
      const [command, params] of [
        ["admin_package_chunk", { offset: 0, data: text("x") }],
        ["admin_package_install", { sha256: await sha256Hex(good.bytes) }],
      ] as const
    ) {
      await assert.rejects(
        opsClient.call(command, {
          admin_token: opsToken,
          upload: theirs,
          ...params,
        }),
        (e: Error & { code?: number }) => e.code === ErrorCode.NOT_FOUND,
      );
    }
    // Too many files; one file too large; a gzip bomb.
    const many = await rewrite(
      good.bytes,
      (_, d) => d,
      Array.from({ length: 1001 }, (_, i) => ({ name: `module/f${i}.ts` })),
    );
    await refused(many, ErrorCode.PACKAGE_INVALID, /more than 1000 files/);
    const huge = await rewrite(good.bytes, (_, d) => d, [{
      name: "module/big.bin",
      body: "\0".repeat(17 * 1024 * 1024),
    }]);
    await refused(huge, ErrorCode.PACKAGE_INVALID, /big\.bin: larger than/);
    const bomb = new Uint8Array(
      await new Response(
        new Blob([new Uint8Array(80 * 1024 * 1024)]).stream().pipeThrough(
          new CompressionStream("gzip"),
        ),
      ).arrayBuffer(),
    );
    await refused(bomb, ErrorCode.PACKAGE_INVALID, /unpacks to more than/);
    // Too large before a byte is sent.
    await assert.rejects(
      admin("admin_package_upload", { size: 16 * 1024 * 1024 + 1 }),
      (e: Error & { code?: number }) => e.code === ErrorCode.LIMIT_EXCEEDED,
    );
    // Bytes other than those the admin checked.
    await assert.rejects(
      admin("admin_package_install", {
        upload: await upload(good.bytes),
        sha256: "0".repeat(64),
      }),
      (e: Error & { code?: number }) => e.code === ErrorCode.PACKAGE_TAMPERED,
    );
    // Unsigned: refused without the override, installed with it.
    const unsigned = await packPackage(
      (await signedHello("1.0.0", "loose")).files,
    );
    await refused(unsigned, ErrorCode.PACKAGE_UNSIGNED, /is not signed/);
    const loose = await install(unsigned, { allow_unsigned: true }) as {
      trust: string;
      warnings: string[];
    };
    assert.equal(loose.trust, "unsigned");
    assert.match(loose.warnings[0], /UNSIGNED/);
    // A pinned key: another key's package is refused.
    const other = await makeKey();
    await refused(
      good.bytes,
      ErrorCode.PACKAGE_UNTRUSTED_KEY,
      /not by the key you pinned/,
      {
        author_key: toBase64(other.publicKey),
      },
    );
    // Nothing refused left a file behind.
    const names = [];
    for await (const e of Deno.readDir(`${t.dataDir}/packages`)) {
      names.push(e.name);
    }
    assert.deepEqual(names.sort(), [".incoming", "loose"]);
    const incoming = [];
    for await (const e of Deno.readDir(`${t.dataDir}/packages/.incoming`)) {
      incoming.push(e.name);
    }
    assert.deepEqual(incoming, []);
    // The good one, pinned to its key, installs and answers.
    const done = await install(good.bytes, {
      author_key: toBase64(good.key.publicKey),
    }) as {
      trust: string;
      status: { state: string };
    };
    assert.equal(done.trust, "pinned");
    assert.equal(done.status.state, "running");
    const list = await admin("admin_get_modules") as {
      modules: Record<string, unknown>[];
    };
    const row = list.modules.find((m) => m.name === "hello")!;
    assert.equal(row.source, "package");
    assert.equal(row.author_key, toBase64(good.key.publicKey));
    assert.deepEqual((row.rights as { services: string[] }).services, []);
    // Installed code is confined like any module's: importing a file out of
    // its folder (here another package's) keeps it from starting.
    const sneaky = await signedHello("1.0.0", "sneaky");
    sneaky.files.set(
      "mod.ts",
      text(`import "../../hello/1.0.0/mod.ts";\n`),
    );
    const sneakyBytes = await packPackage(sneaky.files, {
      privateKey: sneaky.key.privateKey,
      publicKey: sneaky.key.publicKey,
    });
    await assert.rejects(
      install(sneakyBytes),
      (e: Error & { code?: number }) =>
        e.code === ErrorCode.MODULE_UNAVAILABLE &&
        /outside the module's folder/.test(e.message),
    );
    const after = await admin("admin_get_modules") as {
      modules: Record<string, unknown>[];
    };
    assert.equal(
      after.modules.find((m) => m.name === "sneaky")?.state,
      "refused",
    );
    // A backup of the data folder holds the installed packages.
    const backupDir = await Deno.makeTempDir({ prefix: "amtp-pkg-backup-" });
    try {
      const taken = await takeBackup(
        { dataDir: t.dataDir, kvPath: `${t.dataDir}/amtp.kv` },
        `${backupDir}/b`,
      );
      const paths = taken.files.map((f) => f.path);
      assert.ok(paths.includes("packages/hello/1.0.0/mod.ts"), paths.join(" "));
      assert.ok(paths.includes("packages/loose/1.0.0/module.json"));
    } finally {
      await Deno.remove(backupDir, { recursive: true });
    }
  } finally {
    await t.close();
  }
});

Deno.test("packages: install from an https URL and from an npm package (npm pack, served by a local https registry); plain http is refused", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "amtp-pkg-url-" });
  const ca = await createCertificate({
    names: ["Registry CA"],
    days: 2,
    ca: true,
  });
  const leaf = await createCertificate({
    names: ["127.0.0.1"],
    days: 2,
    issuer: ca,
  });
  await Deno.writeTextFile(`${cwd}/ca.pem`, ca.certPem);
  const hello = await signedHello("2.0.0", "greeter");
  const viaNpm = await signedHello("3.0.0", "npmmod");
  // An npm package carrying the signed AMTP package, made by npm itself.
  const npmDir = `${cwd}/npm-package`;
  await Deno.mkdir(npmDir);
  await Deno.writeFile(`${npmDir}/amtp-module.tgz`, viaNpm.bytes);
  await Deno.writeTextFile(
    `${npmDir}/package.json`,
    JSON.stringify({
      name: "@demo/npmmod",
      version: "3.0.0",
      files: ["amtp-module.tgz"],
    }),
  );
  const packed = await new Deno.Command("npm", {
    args: ["pack", "--silent"],
    cwd: npmDir,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(packed.success, new TextDecoder().decode(packed.stderr));
  const npmTgz = await Deno.readFile(
    `${npmDir}/${new TextDecoder().decode(packed.stdout).trim()}`,
  );
  const integrity = `sha512-${
    toBase64(new Uint8Array(await crypto.subtle.digest("SHA-512", npmTgz)))
  }`;
  const seen: string[] = [];
  let port = 0;
  const registry: Deno.HttpServer<Deno.NetAddr> = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: leaf.certPem,
    key: leaf.keyPem,
    onListen: () => {},
  }, (request: Request): Response => {
    const path = new URL(request.url).pathname;
    seen.push(path);
    if (path === "/greeter-2.0.0.amtp.tgz") {
      return new Response(hello.bytes as Uint8Array<ArrayBuffer>);
    }
    if (path === "/@demo%2fnpmmod/3.0.0") {
      return Response.json({
        name: "@demo/npmmod",
        version: "3.0.0",
        dist: {
          tarball: `https://127.0.0.1:${port}/tarballs/npmmod-3.0.0.tgz`,
          integrity,
        },
      });
    }
    if (path === "/@demo%2fnpmmod/3.0.1") {
      // A tarball that is not the one the registry's integrity names.
      return Response.json({
        dist: {
          tarball: `https://127.0.0.1:${port}/tarballs/npmmod-3.0.0.tgz`,
          integrity: `sha512-${toBase64(new Uint8Array(64))}`,
        },
      });
    }
    if (path === "/tarballs/npmmod-3.0.0.tgz") {
      return new Response(npmTgz as Uint8Array<ArrayBuffer>);
    }
    return new Response("no", { status: 404 });
  });
  port = registry.addr.port;
  const base = `https://127.0.0.1:${port}`;
  const server = await startServerProcess(cwd, { AMTP_PORT: "0" });
  const { run, ok } = cliIn(cwd, {
    DENO_CERT: `${cwd}/ca.pem`,
    AMTP_NPM_REGISTRY: base,
  });
  try {
    await ok(
      "login",
      "--admin",
      "admin",
      "--key",
      "data/admin.key",
      "--server",
      `127.0.0.1:${server.port}`,
    );
    const plain = await run(
      "admin",
      "module",
      "install",
      `http://127.0.0.1:${registry.addr.port}/greeter-2.0.0.amtp.tgz`,
      "--yes",
    );
    assert.equal(plain.code, 2);
    assert.match(plain.stderr, /https only/);
    assert.match(
      await ok(
        "admin",
        "module",
        "install",
        `${base}/greeter-2.0.0.amtp.tgz`,
        "--yes",
      ),
      /installed greeter 2\.0\.0: running/,
    );
    assert.match(
      await ok("admin", "module", "install", "npm:@demo/npmmod@3.0.0", "--yes"),
      /TRUST ON FIRST USE[\s\S]*installed npmmod 3\.0\.0: running/,
    );
    assert.ok(seen.includes("/tarballs/npmmod-3.0.0.tgz"));
    const swapped = await run(
      "admin",
      "module",
      "install",
      "npm:@demo/npmmod@3.0.1",
      "--yes",
    );
    assert.equal(swapped.code, 1);
    assert.match(swapped.stderr, /does not match the registry's integrity/);
  } finally {
    await server.stop();
    await registry.shutdown();
    await Deno.remove(cwd, { recursive: true });
  }
});
