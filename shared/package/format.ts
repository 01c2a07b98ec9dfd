/**
 * Signed module packages (docs/MODULES.md "Packages", docs/PROTOCOL.md
 * section 12.8): one gzip-compressed tarball holding
 *
 * - `amtp-package.json`, the index: `{format, name, version, files: [{path,
 *   size, sha256}]}`, every file of the module with its SHA-256;
 * - `amtp-package.sig` (absent when unsigned): `{algorithm: "Ed25519",
 *   public_key, signature}`, the author's Ed25519 signature over
 *   `"AMTP-PACKAGE-1\n"` followed by the index's exact bytes;
 * - `module/<path>`, the module's files (its `module.json` among them).
 *
 * The tar format is npm's `tar-stream`: a parser and generator only, it never
 * touches the file system, so nothing in a tarball is written anywhere before
 * every header and every byte has been checked here. Packing is
 * deterministic: entries in path order, times, owners and modes fixed, and
 * Ed25519 signatures are deterministic too, so the same folder and key give
 * the same bytes.
 *
 * The same code reads a package in the CLI (to show the admin what it asks
 * for) and on the server (which verifies again and trusts nothing the client
 * says).
 *
 * @module
 */

import tar from "tar-stream";
import { ErrorCode, type ErrorCodeValue } from "../errors.ts";
import { keyId, toBase64 } from "../login/algorithms.ts";
import { sha256Hex } from "../pem.ts";

/** The `format` of a package's index. */
export const PACKAGE_FORMAT = "amtp-package/1";
/** What an author's signature covers, before the index's bytes. */
export const SIGNATURE_CONTEXT = "AMTP-PACKAGE-1\n";
/** The index's name in the tarball. */
export const INDEX_FILE = "amtp-package.json";
/** The signature's name in the tarball. */
export const SIGNATURE_FILE = "amtp-package.sig";
/** The folder of the module's files in the tarball. */
export const MODULE_FOLDER = "module/";

/** Bounds of a package, checked before anything is kept. */
export const PACKAGE_LIMITS = {
  /** The compressed tarball. */
  packageBytes: 16 * 1024 * 1024,
  /** All files unpacked (tar headers included). */
  unpackedBytes: 64 * 1024 * 1024,
  /** One file. */
  fileBytes: 16 * 1024 * 1024,
  /** Files of the module. */
  files: 1000,
  /** Characters of one path inside the module. */
  pathLength: 255,
  /** Folders deep. */
  depth: 16,
} as const;

/** One part of a path: no leading dot (no `.`, `..` or hidden file), no slash, no control character. */
const SEGMENT_RE = /^[A-Za-z0-9_][A-Za-z0-9._+@-]{0,127}$/;
/**
 * Names the server's backup treats specially (databases, SQLite side files,
 * half-written files): a package may not hold them, so a backup of the data
 * folder copies an installed package as plain files.
 */
const RESERVED_RE = /(\.kv|-wal|-shm|-journal|\.tmp)$/;
const NAME_RE = /^[a-z][a-z0-9_-]{0,62}$/;
const VERSION_RE =
  /^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})$/;

/** A package that cannot be installed; `code` is the protocol's. */
export class PackageError extends Error {
  /** `PACKAGE_INVALID`, `PACKAGE_TAMPERED`, `PACKAGE_UNTRUSTED_KEY` or `PACKAGE_UNSIGNED`. */
  readonly code: ErrorCodeValue;

  /** A refusal with its protocol code. */
  constructor(code: ErrorCodeValue, message: string) {
    super(message);
    this.name = "PackageError";
    this.code = code;
  }
}

function invalid(message: string): PackageError {
  return new PackageError(ErrorCode.PACKAGE_INVALID, message);
}

function tampered(message: string): PackageError {
  return new PackageError(ErrorCode.PACKAGE_TAMPERED, message);
}

/** One file of the index. */
export interface IndexFile {
  /** Path inside the module folder. */
  path: string;
  /** Bytes. */
  size: number;
  /** SHA-256, lowercase hex. */
  sha256: string;
}

/** The signed index. */
export interface PackageIndex {
  /** {@link PACKAGE_FORMAT}. */
  format: string;
  /** The module's name. */
  name: string;
  /** Its version. */
  version: string;
  /** Every file, in path order. */
  files: IndexFile[];
}

/** The author of a signed package. */
export interface PackageAuthor {
  /** The author's Ed25519 public key, SPKI DER in base64. */
  public_key: string;
  /** Its id: the first 16 hex digits of SHA-256 over the SPKI (as login keys). */
  key_id: string;
}

/** A package read and verified: every file matches the index, the signature holds. */
export interface VerifiedPackage {
  /** The index. */
  index: PackageIndex;
  /** The module's files by path. */
  files: Map<string, Uint8Array>;
  /** The parsed `module.json`. */
  manifest: Record<string, unknown>;
  /** The signer, or null for an unsigned package. */
  author: PackageAuthor | null;
  /** SHA-256 of the whole package, lowercase hex. */
  sha256: string;
}

/** Check a path inside the module folder. */
export function checkPath(path: string): string | undefined {
  if (path.length === 0 || path.length > PACKAGE_LIMITS.pathLength) {
    return `its path is empty or longer than ${PACKAGE_LIMITS.pathLength} characters`;
  }
  const parts = path.split("/");
  if (parts.length > PACKAGE_LIMITS.depth) {
    return `it is more than ${PACKAGE_LIMITS.depth} folders deep`;
  }
  for (const part of parts) {
    if (!SEGMENT_RE.test(part)) {
      return `"${part}" is not a plain file or folder name (letters, digits, "._+@-", no leading dot: no "..", no absolute path)`;
    }
  }
  if (RESERVED_RE.test(path)) {
    return "its name ends like a database or temporary file (.kv, -wal, -shm, -journal, .tmp)";
  }
  return undefined;
}

const encoder = new TextEncoder();

async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Gunzip at most `limit` bytes; more is refused before it is kept. */
async function gunzip(bytes: Uint8Array, limit: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
      .pipeThrough(new DecompressionStream("gzip"));
    for await (const chunk of stream) {
      total += chunk.length;
      if (total > limit) {
        throw invalid(
          `it unpacks to more than ${limit} bytes (the limit of a package)`,
        );
      }
      chunks.push(chunk);
    }
  } catch (error) {
    if (error instanceof PackageError) throw error;
    throw invalid(
      `not a gzip-compressed tarball (${
        error instanceof Error ? error.message : error
      })`,
    );
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** An Ed25519 signing key and its public key (SPKI DER). */
export interface PackageSigner {
  /** The private key (usage `sign`). */
  privateKey: CryptoKey;
  /** The public key, SPKI DER. */
  publicKey: Uint8Array;
}

/**
 * Make a package of a module's files (`module.json` among them), signed by
 * `signer` (absent: unsigned). Deterministic.
 *
 * @throws {PackageError} for a file the format cannot hold
 */
export async function packPackage(
  files: Map<string, Uint8Array>,
  signer?: PackageSigner,
): Promise<Uint8Array> {
  const manifest = files.get("module.json");
  if (!manifest) throw invalid("the folder has no module.json");
  const { name, version } = manifestIdentity(manifest);
  const paths = [...files.keys()].sort();
  if (paths.length > PACKAGE_LIMITS.files) {
    throw invalid(`more than ${PACKAGE_LIMITS.files} files`);
  }
  const entries: IndexFile[] = [];
  for (const path of paths) {
    const why = checkPath(path);
    if (why) throw invalid(`${path}: ${why}`);
    const bytes = files.get(path)!;
    if (bytes.length > PACKAGE_LIMITS.fileBytes) {
      throw invalid(`${path}: larger than ${PACKAGE_LIMITS.fileBytes} bytes`);
    }
    entries.push({ path, size: bytes.length, sha256: await sha256Hex(bytes) });
  }
  const index: PackageIndex = {
    format: PACKAGE_FORMAT,
    name,
    version,
    files: entries,
  };
  const indexBytes = encoder.encode(JSON.stringify(index, null, 2) + "\n");
  const pack = tar.pack();
  const add = (name: string, bytes: Uint8Array) =>
    pack.entry({
      name,
      size: bytes.length,
      mode: 0o644,
      mtime: new Date(0),
      uid: 0,
      gid: 0,
      uname: "",
      gname: "",
      type: "file",
    }, bytes);
  add(INDEX_FILE, indexBytes);
  if (signer) {
    const signature = new Uint8Array(
      await crypto.subtle.sign(
        "Ed25519",
        signer.privateKey,
        signedBytes(indexBytes),
      ),
    );
    add(
      SIGNATURE_FILE,
      encoder.encode(
        JSON.stringify({
          algorithm: "Ed25519",
          public_key: toBase64(signer.publicKey),
          signature: toBase64(signature),
        }) + "\n",
      ),
    );
  }
  for (const path of paths) add(`${MODULE_FOLDER}${path}`, files.get(path)!);
  pack.finalize();
  const chunks: Uint8Array[] = [];
  for await (const chunk of pack) chunks.push(chunk as Uint8Array);
  const tarball = await new Blob(chunks as Uint8Array<ArrayBuffer>[])
    .arrayBuffer();
  const out = await gzip(new Uint8Array(tarball));
  if (out.length > PACKAGE_LIMITS.packageBytes) {
    throw invalid(
      `the package is ${out.length} bytes, over the limit of ${PACKAGE_LIMITS.packageBytes}`,
    );
  }
  return out;
}

function signedBytes(index: Uint8Array): Uint8Array<ArrayBuffer> {
  const context = encoder.encode(SIGNATURE_CONTEXT);
  const out = new Uint8Array(context.length + index.length);
  out.set(context);
  out.set(index, context.length);
  return out;
}

/** `name` and `version` of a `module.json`'s bytes. */
function manifestIdentity(bytes: Uint8Array): {
  name: string;
  version: string;
  raw: Record<string, unknown>;
} {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw invalid("module.json is not JSON");
  }
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
    throw invalid("module.json is not a JSON object");
  }
  const m = raw as Record<string, unknown>;
  if (typeof m.name !== "string" || !NAME_RE.test(m.name)) {
    throw invalid('module.json: "name" must match [a-z][a-z0-9_-]*');
  }
  if (typeof m.version !== "string" || !VERSION_RE.test(m.version)) {
    throw invalid('module.json: "version" must be MAJOR.MINOR.PATCH');
  }
  return { name: m.name, version: m.version, raw: m };
}

/** The entries of a tarball, each checked before its bytes are kept. */
async function untar(tarball: Uint8Array): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  const extract = tar.extract();
  let failure: PackageError | undefined;
  const reading = (async () => {
    for await (const entry of extract) {
      const header = entry.header as {
        name: string;
        type: string;
        size: number;
      };
      const name = String(header.name);
      if (!failure) {
        if (header.type !== "file") {
          failure = invalid(
            `${
              name.slice(0, 200)
            }: a ${header.type} (a package holds regular files only: no links, folders or devices)`,
          );
        } else if (out.has(name)) {
          failure = invalid(`${name.slice(0, 200)}: twice in the tarball`);
        } else if (out.size >= PACKAGE_LIMITS.files + 2) {
          failure = invalid(
            `more than ${PACKAGE_LIMITS.files} files (the limit of a package)`,
          );
        } else if (header.size > PACKAGE_LIMITS.fileBytes) {
          failure = invalid(
            `${
              name.slice(0, 200)
            }: larger than ${PACKAGE_LIMITS.fileBytes} bytes`,
          );
        } else if (name !== INDEX_FILE && name !== SIGNATURE_FILE) {
          const path = name.startsWith(MODULE_FOLDER)
            ? name.slice(MODULE_FOLDER.length)
            : undefined;
          const why = path === undefined
            ? `outside "${MODULE_FOLDER}"`
            : checkPath(path);
          if (why) failure = invalid(`${name.slice(0, 200)}: ${why}`);
        }
      }
      if (failure) {
        entry.resume();
        continue;
      }
      const chunks: Uint8Array[] = [];
      for await (const chunk of entry) chunks.push(chunk as Uint8Array);
      out.set(
        name,
        new Uint8Array(
          await new Blob(chunks as Uint8Array<ArrayBuffer>[]).arrayBuffer(),
        ),
      );
    }
  })();
  extract.end(tarball);
  try {
    await reading;
  } catch (error) {
    throw invalid(
      `not a readable tarball (${
        error instanceof Error ? error.message : error
      })`,
    );
  }
  if (failure) throw failure;
  return out;
}

/**
 * Read a package and verify it: its shape and bounds, the signature over the
 * index (when signed), and every file against the index. Whether the signer
 * is trusted is the caller's decision.
 *
 * @throws {PackageError} `PACKAGE_INVALID` or `PACKAGE_TAMPERED`
 */
export async function readPackage(bytes: Uint8Array): Promise<VerifiedPackage> {
  if (bytes.length > PACKAGE_LIMITS.packageBytes) {
    throw invalid(
      `the package is ${bytes.length} bytes, over the limit of ${PACKAGE_LIMITS.packageBytes}`,
    );
  }
  const sha256 = await sha256Hex(bytes);
  const entries = await untar(
    await gunzip(bytes, PACKAGE_LIMITS.unpackedBytes),
  );
  const indexBytes = entries.get(INDEX_FILE);
  if (!indexBytes) {
    throw invalid(`no ${INDEX_FILE}: not an AMTP module package`);
  }
  const index = parseIndex(indexBytes);
  let author: PackageAuthor | null = null;
  const signature = entries.get(SIGNATURE_FILE);
  if (signature) author = await checkSignature(signature, indexBytes);
  const files = new Map<string, Uint8Array>();
  for (const [name, data] of entries) {
    if (!name.startsWith(MODULE_FOLDER)) continue;
    files.set(name.slice(MODULE_FOLDER.length), data);
  }
  const listed = new Set(index.files.map((f) => f.path));
  for (const path of files.keys()) {
    if (!listed.has(path)) {
      throw tampered(
        `module/${path} is not in the ${
          author ? "signed " : ""
        }index: added after packing`,
      );
    }
  }
  for (const file of index.files) {
    const data = files.get(file.path);
    if (!data) {
      throw tampered(
        `module/${file.path} is in the index but not in the package`,
      );
    }
    if (data.length !== file.size || await sha256Hex(data) !== file.sha256) {
      throw tampered(
        `module/${file.path} does not match its SHA-256 in the ${
          author ? "signed " : ""
        }index: changed after ${author ? "signing" : "packing"}`,
      );
    }
  }
  const manifestBytes = files.get("module.json");
  if (!manifestBytes) throw invalid("the package has no module.json");
  const identity = manifestIdentity(manifestBytes);
  if (identity.name !== index.name || identity.version !== index.version) {
    throw invalid(
      `module.json says ${identity.name} ${identity.version}, the index ${index.name} ${index.version}`,
    );
  }
  return { index, files, manifest: identity.raw, author, sha256 };
}

function parseIndex(bytes: Uint8Array): PackageIndex {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw invalid(`${INDEX_FILE} is not JSON`);
  }
  const index = raw as Partial<PackageIndex>;
  if (!index || typeof index !== "object" || index.format !== PACKAGE_FORMAT) {
    throw invalid(`${INDEX_FILE}: "format" is not "${PACKAGE_FORMAT}"`);
  }
  if (
    typeof index.name !== "string" || !NAME_RE.test(index.name) ||
    typeof index.version !== "string" || !VERSION_RE.test(index.version)
  ) {
    throw invalid(`${INDEX_FILE}: no valid "name" and "version"`);
  }
  if (
    !Array.isArray(index.files) || index.files.length > PACKAGE_LIMITS.files
  ) {
    throw invalid(
      `${INDEX_FILE}: "files" must list at most ${PACKAGE_LIMITS.files} files`,
    );
  }
  const seen = new Set<string>();
  for (const file of index.files) {
    if (
      !file || typeof file.path !== "string" ||
      typeof file.size !== "number" || typeof file.sha256 !== "string" ||
      !/^[0-9a-f]{64}$/.test(file.sha256) || checkPath(file.path) ||
      seen.has(file.path)
    ) {
      throw invalid(`${INDEX_FILE}: a malformed or repeated file entry`);
    }
    seen.add(file.path);
  }
  // A path that is also another's folder could not be written.
  for (const path of seen) {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      if (seen.has(parts.slice(0, i).join("/"))) {
        throw invalid(`${INDEX_FILE}: ${path} is inside a file`);
      }
    }
  }
  return index as PackageIndex;
}

async function checkSignature(
  bytes: Uint8Array,
  index: Uint8Array,
): Promise<PackageAuthor> {
  let sig: { algorithm?: unknown; public_key?: unknown; signature?: unknown };
  try {
    sig = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw invalid(`${SIGNATURE_FILE} is not JSON`);
  }
  if (
    sig?.algorithm !== "Ed25519" || typeof sig.public_key !== "string" ||
    typeof sig.signature !== "string"
  ) {
    throw invalid(
      `${SIGNATURE_FILE}: needs "algorithm": "Ed25519", "public_key" and "signature"`,
    );
  }
  let spki: Uint8Array;
  let signature: Uint8Array;
  let key: CryptoKey;
  try {
    spki = Uint8Array.from(atob(sig.public_key), (c) => c.charCodeAt(0));
    signature = Uint8Array.from(atob(sig.signature), (c) => c.charCodeAt(0));
    key = await crypto.subtle.importKey(
      "spki",
      spki as Uint8Array<ArrayBuffer>,
      { name: "Ed25519" },
      true,
      ["verify"],
    );
  } catch {
    throw invalid(`${SIGNATURE_FILE}: "public_key" is not an Ed25519 key`);
  }
  const ok = await crypto.subtle.verify(
    "Ed25519",
    key,
    signature as Uint8Array<ArrayBuffer>,
    signedBytes(index),
  );
  if (!ok) {
    throw tampered(
      `the signature does not verify: ${INDEX_FILE} changed after signing, or the signature is not the key's`,
    );
  }
  return { public_key: toBase64(spki), key_id: await keyId(spki) };
}

/** What a module asks for, as its manifest says (defaults filled in): shown to the admin before an install. */
export interface ModuleAsks {
  /** Commands it serves. */
  commands: string[];
  /** `net`, `read`, `write`, `env`, `import`. */
  permissions: Record<string, string[]>;
  /** Core services it may call (`services`). */
  services: string[];
  /** Push events it may send. */
  events: string[];
  /** Routes it carries for the queue. */
  transports: string[];
  /** Other modules' commands it may call (`calls`), when the manifest names any. */
  calls?: unknown;
  /** Its commands other modules may call (`exports`), when the manifest names any. */
  exports?: unknown;
  /** Storage quota, bytes. */
  storage_quota: number;
  /** The placement it asks for (a module not shipped with the server runs in a process regardless). */
  isolation: string;
  /** Deadline of one call, ms. */
  timeout_ms: number;
  /** Memory cap in a process, MiB. */
  memory_mb: number;
}

/** What a manifest (as parsed JSON) asks for. */
export function moduleAsks(manifest: Record<string, unknown>): ModuleAsks {
  const list = (value: unknown) =>
    Array.isArray(value) ? value.filter((v) => typeof v === "string") : [];
  const perms = (manifest.permissions ?? {}) as Record<string, unknown>;
  const num = (value: unknown, fallback: number) =>
    typeof value === "number" ? value : fallback;
  const asks: ModuleAsks = {
    commands: list(manifest.commands),
    permissions: Object.fromEntries(
      ["net", "read", "write", "env", "import"].map((k) => [k, list(perms[k])]),
    ),
    services: list(manifest.services),
    events: list(manifest.events),
    transports: list(manifest.transports),
    storage_quota: num(manifest.storage_quota, 10 * 1024 * 1024),
    isolation: typeof manifest.isolation === "string"
      ? manifest.isolation
      : "worker",
    timeout_ms: num(manifest.timeout_ms, 5000),
    memory_mb: num(manifest.memory_mb, 256),
  };
  if (manifest.calls !== undefined) asks.calls = manifest.calls;
  if (manifest.exports !== undefined) asks.exports = manifest.exports;
  return asks;
}
