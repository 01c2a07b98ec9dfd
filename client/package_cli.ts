/**
 * Module packages in the CLI: `amtp module init|keygen|pack` for authors, and
 * `amtp admin module install|list|default|rollback` for admins. An install
 * reads the package (a file, an https URL, or `npm:NAME@VERSION` from the
 * npm registry), verifies it here, uploads it in chunks, lets the server
 * verify it again (the server believes nothing the CLI says), shows the
 * admin the server's account of what the module asks for and how its author
 * key is trusted, and installs only after the admin confirms (`--yes`).
 *
 * @module
 */

import type { AmtpClient } from "./mod.ts";
import { type Args, type FlagSpec, UsageError } from "./cli_args.ts";
import { keyBase, keyFile, userPath } from "./cli_config.ts";
import { asJson } from "./format.ts";
import {
  readPrivateKey,
  readPublicKey,
  writeKeyPair,
} from "../shared/login/keyfile.ts";
import { toBase64 } from "../shared/login/algorithms.ts";
import {
  checkPath,
  type ModuleAsks,
  PACKAGE_LIMITS,
  packPackage,
  readPackage,
} from "../shared/package/format.ts";
import { sha256Hex } from "../shared/pem.ts";
import tar from "tar-stream";

/** What the package commands need of the CLI. */
export interface PackageCliContext {
  /** The arguments (`module VERB ...` or `admin module VERB ...`). */
  args: Args;
  /** Print a line. */
  out(text: string): void;
  /** The admin's token (throws when not logged in). */
  adminToken(): string;
  /** Connect, run, close. */
  withClient<T>(body: (client: AmtpClient) => Promise<T>): Promise<T>;
  /** Ask the admin a yes/no question (false without a terminal). */
  confirm(question: string): Promise<boolean>;
}

/** Flags of `amtp module ...`. */
export const MODULE_FLAGS: Record<string, FlagSpec> = {
  key: {
    value: "KEY",
    help:
      "pack: the author's private key (a file, or a NAME of amtp module keygen)",
  },
  out: { value: "FILE", help: "pack: where to write the package" },
  unsigned: { help: "pack: make an unsigned package (admins must override)" },
  name: {
    value: "NAME",
    help: "init: the module's name (default: the folder's)",
  },
};

/** Flags of `amtp admin module ...`. */
export const ADMIN_MODULE_FLAGS: Record<string, FlagSpec> = {
  key: {
    value: "KEY",
    help:
      "install: pin the author's public key (a .pub file): the package must be signed by it",
  },
  yes: { help: "install: do not ask before installing (scripts)" },
  "allow-unsigned": { help: "install: accept a package no author signed" },
  default: { help: "install: make the new version the default at once" },
};

/** `amtp module init|keygen|pack`. */
export async function moduleCommand(ctx: PackageCliContext): Promise<number> {
  const [, verb, target] = ctx.args.positional;
  const flags = ctx.args.flags;
  switch (verb) {
    case "init":
      return await init(ctx, target, flags.get("name"));
    case "keygen": {
      const base = keyBase(target ?? "author");
      await Deno.mkdir(base.slice(0, base.lastIndexOf("/")), {
        recursive: true,
        mode: 0o700,
      });
      const made = await writeKeyPair(base, "Ed25519");
      ctx.out(
        `wrote ${made.keyFile} (private: keep it) and ${made.pubFile} (give it to admins)\nkey id ${made.keyId}`,
      );
      return 0;
    }
    case "pack": {
      if (!target) {
        throw new UsageError("usage: amtp module pack DIR --key KEY");
      }
      const dir = userPath(target);
      const keyArg = flags.get("key");
      if (!keyArg && !flags.has("unsigned")) {
        throw new UsageError(
          "amtp module pack signs with --key KEY (amtp module keygen makes one), or --unsigned",
        );
      }
      const files = await moduleFiles(dir);
      let signer;
      let keyId = "";
      if (keyArg && !flags.has("unsigned")) {
        const key = await readPrivateKey(
          await keyFile(
            keyArg.includes("/") ? userPath(keyArg) : keyArg,
            "private",
          ),
        );
        if (key.algorithm !== "Ed25519") {
          throw new UsageError(`${keyArg} is not an Ed25519 key`);
        }
        signer = { privateKey: key.privateKey, publicKey: key.publicKey };
        keyId = key.keyId;
      }
      const bytes = await packPackage(files, signer);
      const manifest = JSON.parse(
        new TextDecoder().decode(files.get("module.json")),
      );
      const out = userPath(
        flags.get("out") ?? `${manifest.name}-${manifest.version}.amtp.tgz`,
      );
      await Deno.writeFile(out, bytes);
      ctx.out(
        `wrote ${out}: ${manifest.name} ${manifest.version}, ${files.size} files, ${bytes.length} bytes, ${
          signer ? `signed by key ${keyId}` : "UNSIGNED"
        }\nsha256 ${await sha256Hex(bytes)}`,
      );
      return 0;
    }
    default:
      throw new UsageError(
        "usage: amtp module init DIR | keygen [NAME] | pack DIR --key KEY [--out FILE]",
      );
  }
}

/** Files an author's folder packs: everything but dot-files and the author's Deno tooling. */
const LEFT_OUT = new Set([
  "deno.json",
  "deno.jsonc",
  "deno.lock",
  "node_modules",
]);

async function moduleFiles(dir: string): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  const visit = async (folder: string, prefix: string) => {
    const entries = [];
    for await (const entry of Deno.readDir(folder)) entries.push(entry);
    for (const entry of entries) {
      const path = prefix ? `${prefix}/${entry.name}` : entry.name;
      if (entry.name.startsWith(".") || (!prefix && LEFT_OUT.has(entry.name))) {
        continue;
      }
      if (!prefix && /\.amtp\.tgz$/.test(entry.name)) continue;
      if (entry.isSymlink) {
        throw new UsageError(
          `${path} is a symbolic link: a package holds regular files only`,
        );
      }
      if (entry.isDirectory) await visit(`${folder}/${entry.name}`, path);
      else if (entry.isFile) {
        const why = checkPath(path);
        if (why) throw new UsageError(`${path}: ${why}`);
        files.set(path, await Deno.readFile(`${folder}/${entry.name}`));
      }
    }
  };
  try {
    await visit(dir, "");
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new UsageError(`no folder ${dir}`);
    }
    throw error;
  }
  if (!files.has("module.json")) {
    throw new UsageError(
      `${dir} has no module.json (amtp module init makes one)`,
    );
  }
  return files;
}

async function init(
  ctx: PackageCliContext,
  target: string | undefined,
  given: string | undefined,
): Promise<number> {
  if (!target) {
    throw new UsageError("usage: amtp module init DIR [--name NAME]");
  }
  const dir = userPath(target);
  const name = given ?? dir.replace(/\/+$/, "").replace(/^.*\//, "");
  if (!/^[a-z][a-z0-9_-]{0,62}$/.test(name)) {
    throw new UsageError(
      `"${name}" is not a module name ([a-z][a-z0-9_-]*): choose one with --name`,
    );
  }
  await Deno.mkdir(dir, { recursive: true });
  const write = async (file: string, text: string) => {
    try {
      await Deno.writeTextFile(`${dir}/${file}`, text, { createNew: true });
      ctx.out(`wrote ${dir}/${file}`);
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
      ctx.out(`kept ${dir}/${file} (it exists)`);
    }
  };
  const command = `${name.replace(/-/g, "_")}_hello`;
  await write(
    "module.json",
    JSON.stringify(
      {
        name,
        version: "1.0.0",
        entry: "mod.ts",
        description: `${name}: says hello`,
        commands: [command],
        storage_quota: 1048576,
        isolation: "process",
      },
      null,
      2,
    ) + "\n",
  );
  await write(
    "mod.ts",
    `import { serveModule } from "@amtp/sdk";

serveModule({
  commands: {
    // The caller is set by the server from the user's token.
    ${command}(params, ctx) {
      const name = typeof params.name === "string" ? params.name : "world";
      return { greeting: \`hello \${name}, from \${ctx.caller.address}\` };
    },
  },
});
`,
  );
  // For the author's editor and deno check only: not packed.
  await write(
    "deno.json",
    JSON.stringify(
      {
        imports: {
          "@amtp/sdk": new URL("../workers/sdk/mod.ts", import.meta.url).href,
        },
      },
      null,
      2,
    ) + "\n",
  );
  return 0;
}

/** `amtp admin module install|list|default|rollback`. */
export async function adminModuleCommand(
  ctx: PackageCliContext,
): Promise<number> {
  const [, , verb, ...rest] = ctx.args.positional;
  const flags = ctx.args.flags;
  switch (verb) {
    case "install": {
      if (!rest[0]) {
        throw new UsageError(
          "usage: amtp admin module install FILE|https://URL|npm:NAME@VERSION [--key PUB] [--yes]",
        );
      }
      return await install(ctx, rest[0]);
    }
    case "list": {
      const token = ctx.adminToken();
      return await ctx.withClient(async (client) => {
        const { modules } = await client.call<{ modules: ModuleRow[] }>(
          "admin_get_modules",
          { admin_token: token },
        );
        ctx.out(flags.has("json") ? asJson(modules) : formatModules(modules));
        return 0;
      });
    }
    case "default":
    case "rollback": {
      const token = ctx.adminToken();
      const [name, version] = rest;
      if (!name || (verb === "default" && !version)) {
        throw new UsageError(
          verb === "default"
            ? "usage: amtp admin module default NAME VERSION"
            : "usage: amtp admin module rollback NAME",
        );
      }
      return await ctx.withClient(async (client) => {
        const status = verb === "default"
          ? await client.call<ModuleRow>("admin_set_module_default", {
            admin_token: token,
            name,
            version,
          })
          : await client.call<ModuleRow>("admin_rollback_module", {
            admin_token: token,
            name,
          });
        ctx.out(`${status.name} ${status.version} is the default`);
        return 0;
      });
    }
    default:
      throw new UsageError(
        "usage: amtp admin module install SOURCE | list | default NAME VERSION | rollback NAME",
      );
  }
}

/** One row of `admin_get_modules`. */
interface ModuleRow {
  name: string;
  version: string;
  state: string;
  default: boolean;
  isolation: string;
  source?: string;
  author_key_id?: string | null;
  rights?: {
    permissions: Record<string, string[]>;
    services: string[];
    events: string[];
    calls?: unknown;
    exports?: unknown;
  };
}

function formatModules(modules: ModuleRow[]): string {
  const lines: string[] = [];
  for (const m of modules) {
    lines.push(
      `${m.name} ${m.version}${
        m.default ? " (default)" : ""
      }: ${m.state}, ${m.isolation}, ${m.source ?? "folder"}${
        m.source === "package"
          ? m.author_key_id ? `, author key ${m.author_key_id}` : ", UNSIGNED"
          : ""
      }`,
    );
    if (m.rights) lines.push(...rightsLines(m.rights).map((l) => `    ${l}`));
  }
  return lines.join("\n");
}

function rightsLines(r: {
  permissions: Record<string, string[]>;
  services: string[];
  events?: string[];
  calls?: unknown;
  exports?: unknown;
}): string[] {
  const lines: string[] = [];
  const perms = Object.entries(r.permissions)
    .filter(([, v]) => v.length > 0)
    .map(([k, v]) => `${k}: ${v.join(", ")}`);
  lines.push(`permissions: ${perms.length ? perms.join("; ") : "none"}`);
  lines.push(`services: ${r.services.length ? r.services.join(", ") : "none"}`);
  if (r.events?.length) lines.push(`events: ${r.events.join(", ")}`);
  if (r.calls !== undefined) lines.push(`calls: ${JSON.stringify(r.calls)}`);
  if (r.exports !== undefined) {
    lines.push(`exports: ${JSON.stringify(r.exports)}`);
  }
  return lines;
}

/** The package's bytes from a file, an https URL, or `npm:NAME@VERSION`. */
async function fetchSource(source: string): Promise<Uint8Array> {
  if (source.startsWith("npm:")) return await fromNpm(source.slice(4));
  if (/^[a-z]+:\/\//i.test(source)) {
    if (!source.toLowerCase().startsWith("https://")) {
      throw new UsageError(
        `${source}: packages are fetched over https only (a package from plain http could be changed on its way, and its signature would only tell)`,
      );
    }
    return await download(source, PACKAGE_LIMITS.packageBytes);
  }
  try {
    const path = userPath(source);
    const info = await Deno.stat(path);
    if (info.size > PACKAGE_LIMITS.packageBytes) {
      throw new UsageError(`${source} is larger than a package may be`);
    }
    return await Deno.readFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new UsageError(`no file ${source}`);
    }
    throw error;
  }
}

/** GET an https URL, at most `limit` bytes. */
async function download(url: string, limit: number): Promise<Uint8Array> {
  const response = await fetch(url, {
    redirect: "follow",
    signal: AbortSignal.timeout(60_000),
  });
  if (!response.url.startsWith("https://")) {
    await response.body?.cancel();
    throw new Error(`${url} redirected to ${response.url}: https only`);
  }
  if (!response.ok || !response.body) {
    await response.body?.cancel();
    throw new Error(`${url}: HTTP ${response.status}`);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of response.body) {
    total += chunk.length;
    if (total > limit) {
      await response.body.cancel().catch(() => {});
      throw new Error(`${url}: more than ${limit} bytes`);
    }
    chunks.push(chunk);
  }
  return new Uint8Array(
    await new Blob(chunks as Uint8Array<ArrayBuffer>[]).arrayBuffer(),
  );
}

/** The npm registry (`AMTP_NPM_REGISTRY`, default npm's own). */
function registry(): string {
  return (Deno.env.get("AMTP_NPM_REGISTRY") || "https://registry.npmjs.org")
    .replace(/\/+$/, "");
}

/** The file an npm package carries its AMTP module package in. */
export const NPM_PACKAGE_FILE = "amtp-module.tgz";

/**
 * An npm package's tarball (checked against the registry's `integrity`),
 * and the signed AMTP package inside it (`package/amtp-module.tgz`).
 */
async function fromNpm(spec: string): Promise<Uint8Array> {
  const at = spec.lastIndexOf("@");
  if (at <= 0) {
    throw new UsageError("usage: npm:NAME@VERSION (an exact version)");
  }
  const name = spec.slice(0, at);
  const version = spec.slice(at + 1);
  if (!/^(@[a-z0-9._~-]+\/)?[a-z0-9._~-]+$/.test(name)) {
    throw new UsageError(`"${name}" is not an npm package name`);
  }
  const base = registry();
  if (!base.startsWith("https://")) {
    throw new UsageError("AMTP_NPM_REGISTRY must be an https URL");
  }
  const meta = JSON.parse(
    new TextDecoder().decode(
      await download(
        `${base}/${name.replace("/", "%2f")}/${encodeURIComponent(version)}`,
        4 * 1024 * 1024,
      ),
    ),
  ) as { dist?: { tarball?: string; integrity?: string } };
  const tarball = meta.dist?.tarball;
  if (!tarball) throw new Error(`npm:${spec}: the registry names no tarball`);
  const bytes = await download(tarball, PACKAGE_LIMITS.packageBytes * 2);
  const integrity = meta.dist?.integrity?.match(/^sha512-(.+)$/)?.[1];
  if (!integrity) {
    throw new Error(`npm:${spec}: the registry gives no sha512 integrity`);
  }
  const digest = toBase64(
    new Uint8Array(
      await crypto.subtle.digest("SHA-512", bytes as Uint8Array<ArrayBuffer>),
    ),
  );
  if (digest !== integrity) {
    throw new Error(
      `npm:${spec}: the tarball does not match the registry's integrity`,
    );
  }
  return await entryOf(bytes, `package/${NPM_PACKAGE_FILE}`, spec);
}

/** One file of a gzip tarball (npm's), bounded. */
async function entryOf(
  gz: Uint8Array,
  wanted: string,
  spec: string,
): Promise<Uint8Array> {
  const stream = new Blob([gz as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new DecompressionStream("gzip"));
  const extract = tar.extract();
  let found: Uint8Array | undefined;
  const reading = (async () => {
    for await (const entry of extract) {
      if (
        entry.header.name === wanted && entry.header.type === "file" &&
        (entry.header.size ?? 0) <= PACKAGE_LIMITS.packageBytes
      ) {
        const chunks: Uint8Array[] = [];
        for await (const c of entry) chunks.push(c as Uint8Array);
        found = new Uint8Array(
          await new Blob(chunks as Uint8Array<ArrayBuffer>[]).arrayBuffer(),
        );
      } else entry.resume();
    }
  })();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of stream) {
    total += chunk.length;
    if (total > PACKAGE_LIMITS.unpackedBytes) {
      throw new Error(`npm:${spec}: the tarball unpacks to too much`);
    }
    chunks.push(chunk);
  }
  extract.end(
    new Uint8Array(
      await new Blob(chunks as Uint8Array<ArrayBuffer>[]).arrayBuffer(),
    ),
  );
  await reading;
  if (!found) {
    throw new Error(
      `npm:${spec} holds no ${NPM_PACKAGE_FILE}: not an AMTP module package`,
    );
  }
  return found;
}

/** The server's account of a package (`admin_package_install`). */
interface Summary {
  name: string;
  version: string;
  sha256: string;
  author: { key_id: string } | null;
  trust: string;
  warnings: string[];
  asks: ModuleAsks;
  files: number;
  bytes: number;
  default: boolean;
  status?: { state: string; last_error: string };
}

function formatSummary(s: Summary): string {
  const a = s.asks;
  const lines = [
    `${s.name} ${s.version}: ${s.files} files, ${s.bytes} bytes, sha256 ${s.sha256}`,
    `author key: ${
      s.author
        ? `${s.author.key_id} (${s.trust.replace("_", " ")})`
        : "none: UNSIGNED"
    }`,
    `it asks for:`,
    `  commands: ${a.commands.join(", ") || "none"}`,
    ...rightsLines(a).map((l) => `  ${l}`),
    `  transports: ${a.transports.join(", ") || "none"}`,
    `  storage quota: ${a.storage_quota} bytes`,
    `  isolation: ${a.isolation} (a module not shipped with the server runs in a capped process), ${a.timeout_ms} ms a call, ${a.memory_mb} MiB`,
    s.default
      ? `it becomes the default version of ${s.name}`
      : `it installs beside the version serving now; make it the default with amtp admin module default ${s.name} ${s.version}`,
  ];
  for (const w of s.warnings) lines.push(``, `WARNING: ${w}`);
  return lines.join("\n");
}

async function install(
  ctx: PackageCliContext,
  source: string,
): Promise<number> {
  const flags = ctx.args.flags;
  const token = ctx.adminToken();
  const bytes = await fetchSource(source);
  // Checked here first, so a broken package is not even uploaded; the
  // server checks everything again.
  const local = await readPackage(bytes);
  let authorKey: string | undefined;
  const pin = flags.get("key");
  if (pin) {
    const pub = await readPublicKey(
      await keyFile(pin.includes("/") ? userPath(pin) : pin, "public"),
    );
    authorKey = toBase64(pub.spki);
  }
  const sha256 = local.sha256;
  return await ctx.withClient(async (client) => {
    const started = await client.call<{ upload: string; chunk_bytes: number }>(
      "admin_package_upload",
      { admin_token: token, size: bytes.length },
    );
    for (let offset = 0; offset < bytes.length; offset += started.chunk_bytes) {
      await client.call("admin_package_chunk", {
        admin_token: token,
        upload: started.upload,
        offset,
        data: bytes.subarray(offset, offset + started.chunk_bytes),
      });
    }
    const request = {
      admin_token: token,
      upload: started.upload,
      sha256,
      author_key: authorKey,
      allow_unsigned: flags.has("allow-unsigned") || undefined,
      default: flags.has("default") || undefined,
    };
    const checked = await client.call<Summary>("admin_package_install", {
      ...request,
      dry_run: true,
    });
    ctx.out(formatSummary(checked));
    // Comparing key ids with the author takes a while: the session stays up.
    client.keepAlive(5_000);
    if (
      !flags.has("yes") &&
      !(await ctx.confirm(`\nInstall ${checked.name} ${checked.version}?`))
    ) {
      ctx.out("not installed");
      return 1;
    }
    const done = await client.call<Summary>("admin_package_install", request);
    ctx.out(
      `installed ${done.name} ${done.version}: ${done.status?.state ?? "?"}${
        done.status?.last_error ? ` (${done.status.last_error})` : ""
      }${done.default ? ", the default" : ""}`,
    );
    return 0;
  });
}
