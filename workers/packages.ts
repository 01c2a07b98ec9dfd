/**
 * Installing signed module packages (shared/package/format.ts) on the
 * server: an admin uploads a package in chunks, the server verifies it on
 * its own (the shape and bounds of the tarball, every file's SHA-256, the
 * author's Ed25519 signature, the manifest) and against the author key it
 * trusts for that module (pinned by an admin, or trusted on first use, with
 * a warning), shows what the module asks for, and on confirmation writes it
 * to `<AMTP_DATA>/packages/<name>/<version>/` — a new version beside the
 * running ones, which it does not replace as the default unless asked —
 * and starts it. Nothing the client says about a package is believed: the
 * client only carries the bytes.
 *
 * Installed packages live in the data folder, so a git checkout of the
 * server stays clean and a backup of the data folder holds them.
 *
 * @module
 */

import type { Logger } from "../core/log/mod.ts";
import { ErrorCode, ProtocolError } from "../core/protocol/mod.ts";
import type { ModuleAuthorRecord, PackageStore } from "../kv/packages.ts";
import {
  type ModuleAsks,
  moduleAsks,
  PACKAGE_LIMITS,
  type PackageAuthor,
  PackageError,
  readPackage,
  type VerifiedPackage,
} from "../shared/package/format.ts";
import { fromBase64, toBase64 } from "../shared/login/algorithms.ts";
import type { ModuleLifecycle, ModuleStatus } from "./lifecycle.ts";
import { ManifestError, parseManifest } from "./manifest.ts";
import type { ModuleTable } from "./table.ts";

/** Bytes of one upload chunk the server asks for (within the 1 MiB frame). */
export const UPLOAD_CHUNK_BYTES = 512 * 1024;
/** Uploads kept at once (each at most {@link PACKAGE_LIMITS}.packageBytes). */
const MAX_UPLOADS = 4;
/** How long an unfinished or uninstalled upload is kept. */
const UPLOAD_TTL_MS = 10 * 60 * 1000;

/** Answers that end an upload. */
const REFUSALS = new Set<number>([
  ErrorCode.PACKAGE_INVALID,
  ErrorCode.PACKAGE_TAMPERED,
  ErrorCode.PACKAGE_UNTRUSTED_KEY,
  ErrorCode.PACKAGE_UNSIGNED,
  ErrorCode.ALREADY_EXISTS,
]);

interface Upload {
  bytes: Uint8Array;
  received: number;
  admin: string;
  expires: number;
}

/** How the server trusts a package's signer. */
export type PackageTrust =
  | "trusted"
  | "pinned"
  | "first_use"
  | "unsigned";

/** What an admin sees of a package before (and after) installing it. */
export interface PackageSummary {
  /** Module name. */
  name: string;
  /** Version. */
  version: string;
  /** SHA-256 of the package. */
  sha256: string;
  /** The signer, or null. */
  author: PackageAuthor | null;
  /** `trusted` (the key trusted for this module), `pinned` (the key the admin gave), `first_use` or `unsigned`. */
  trust: PackageTrust;
  /** What the admin must read before confirming. */
  warnings: string[];
  /** What the module asks for. */
  asks: ModuleAsks;
  /** Files in the package. */
  files: number;
  /** Bytes unpacked. */
  bytes: number;
  /** Whether it would become (or became) the default version. */
  default: boolean;
  /** The installed version's status (absent for a dry run). */
  status?: ModuleStatus;
}

/** An install request (`admin_package_install`). */
export interface InstallRequest {
  /** The upload's id. */
  upload: string;
  /** SHA-256 of the package the admin checked: the upload must be exactly it. */
  sha256: string;
  /** A pinned author key (SPKI base64): the package must be signed by it. */
  authorKey?: string;
  /** Install an unsigned package. */
  allowUnsigned?: boolean;
  /** Only verify and answer the summary. */
  dryRun?: boolean;
  /** Make it the default version. */
  makeDefault?: boolean;
}

/** Options of {@link PackageInstaller}. */
export interface PackageInstallerOptions {
  /** The installed packages' folder (absolute). */
  dir: string;
  /** The folder of modules put on disk (a version there cannot be installed again). */
  modulesDir: string;
  /** Trusted keys and installed packages. */
  store: PackageStore;
  /** The versions. */
  table: ModuleTable;
  /** Loads and sets defaults. */
  lifecycle: ModuleLifecycle;
  /** The version a request without one gets now, if any. */
  serving(name: string): string | undefined;
  /** Logger. */
  log: Logger;
  /** Clock (epoch ms). */
  now?: () => number;
}

function refuse(error: PackageError): ProtocolError {
  return new ProtocolError(error.code, error.message);
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Uploads, verifies and installs module packages. */
export class PackageInstaller {
  readonly #options: PackageInstallerOptions;
  readonly #uploads = new Map<string, Upload>();
  readonly #now: () => number;
  /** Versions being installed now (one install of a version at a time). */
  readonly #installing = new Set<string>();

  /** An installer writing into `options.dir`. */
  constructor(options: PackageInstallerOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** Record where the installed versions came from (at start, before their slots are added). */
  async restoreOrigins(): Promise<void> {
    for (const [id, record] of await this.#options.store.packages()) {
      const [name, version] = id.split(" ");
      this.#options.table.setOrigin(name, version, {
        public_key: record.public_key,
        key_id: record.key_id,
        sha256: record.sha256,
      });
    }
  }

  #prune(): void {
    const now = this.#now();
    for (const [id, upload] of this.#uploads) {
      if (upload.expires <= now) this.#uploads.delete(id);
    }
  }

  /** Start an upload of `size` bytes. */
  begin(
    size: number,
    admin: string,
  ): { upload: string; chunk_bytes: number; expires: string } {
    this.#prune();
    if (size < 1 || size > PACKAGE_LIMITS.packageBytes) {
      throw new ProtocolError(
        ErrorCode.LIMIT_EXCEEDED,
        `a package is 1 to ${PACKAGE_LIMITS.packageBytes} bytes`,
      );
    }
    if (this.#uploads.size >= MAX_UPLOADS) {
      throw new ProtocolError(
        ErrorCode.LIMIT_EXCEEDED,
        `${MAX_UPLOADS} package uploads are under way: finish or wait for one (they expire after 10 minutes)`,
      );
    }
    const id = toBase64(crypto.getRandomValues(new Uint8Array(18)))
      .replace(/\+/g, "-").replace(/\//g, "_");
    const expires = this.#now() + UPLOAD_TTL_MS;
    this.#uploads.set(id, {
      bytes: new Uint8Array(size),
      received: 0,
      admin,
      expires,
    });
    return {
      upload: id,
      chunk_bytes: UPLOAD_CHUNK_BYTES,
      expires: new Date(expires).toISOString(),
    };
  }

  #upload(id: string, admin: string): Upload {
    this.#prune();
    const upload = this.#uploads.get(id);
    if (!upload || upload.admin !== admin) {
      throw new ProtocolError(
        ErrorCode.NOT_FOUND,
        "no such upload (unknown, another admin's, or expired)",
      );
    }
    return upload;
  }

  /** Add the bytes at `offset` (the next expected byte) of an upload. */
  chunk(
    id: string,
    offset: number,
    data: Uint8Array,
    admin: string,
  ): { received: number; size: number } {
    const upload = this.#upload(id, admin);
    if (offset !== upload.received) {
      throw new ProtocolError(
        ErrorCode.INVALID_PARAMETER,
        `parameter "offset" must be ${upload.received}, the next byte expected`,
        { parameter: "offset", expected: upload.received },
      );
    }
    if (
      data.length > UPLOAD_CHUNK_BYTES ||
      upload.received + data.length > upload.bytes.length
    ) {
      throw new ProtocolError(
        ErrorCode.LIMIT_EXCEEDED,
        `a chunk is at most ${UPLOAD_CHUNK_BYTES} bytes and the upload ${upload.bytes.length}`,
      );
    }
    upload.bytes.set(data, upload.received);
    upload.received += data.length;
    return { received: upload.received, size: upload.bytes.length };
  }

  /**
   * Verify an uploaded package and (unless a dry run) install it.
   *
   * @throws {ProtocolError} 230-233 for a package refused, 202 for a version already there
   */
  async install(
    request: InstallRequest,
    admin: string,
  ): Promise<PackageSummary> {
    try {
      return await this.#install(request, admin);
    } catch (error) {
      // A refused package is not kept: the upload slot is free again.
      if (error instanceof ProtocolError && REFUSALS.has(error.code)) {
        this.#uploads.delete(request.upload);
      }
      throw error;
    }
  }

  async #install(
    request: InstallRequest,
    admin: string,
  ): Promise<PackageSummary> {
    const upload = this.#upload(request.upload, admin);
    if (upload.received !== upload.bytes.length) {
      throw new ProtocolError(
        ErrorCode.INVALID_PARAMETER,
        `the upload has ${upload.received} of ${upload.bytes.length} bytes`,
        { parameter: "upload" },
      );
    }
    let pkg: VerifiedPackage;
    try {
      pkg = await readPackage(upload.bytes);
    } catch (error) {
      if (error instanceof PackageError) throw refuse(error);
      throw error;
    }
    if (pkg.sha256 !== request.sha256.toLowerCase()) {
      throw new ProtocolError(
        ErrorCode.PACKAGE_TAMPERED,
        `the uploaded package's SHA-256 is ${pkg.sha256}, not ${request.sha256}: not the package you checked`,
      );
    }
    const { name, version } = pkg.index;
    const target = `${this.#options.dir}/${name}/${version}`;
    try {
      parseManifest(pkg.manifest, target);
    } catch (error) {
      if (error instanceof ManifestError) {
        throw new ProtocolError(ErrorCode.PACKAGE_INVALID, error.message);
      }
      throw error;
    }
    const { trust, warnings, author } = await this.#trust(pkg, request);
    if (
      this.#options.table.get(name, version) || exists(target) ||
      exists(`${this.#options.modulesDir}/${name}/${version}`)
    ) {
      throw new ProtocolError(
        ErrorCode.ALREADY_EXISTS,
        `module ${name} ${version} is already there: a package installs a new version`,
      );
    }
    const serving = this.#options.serving(name);
    const summary: PackageSummary = {
      name,
      version,
      sha256: pkg.sha256,
      author: pkg.author,
      trust,
      warnings,
      asks: moduleAsks(pkg.manifest),
      files: pkg.files.size,
      bytes: [...pkg.files.values()].reduce((n, f) => n + f.length, 0),
      default: Boolean(request.makeDefault) || serving === undefined,
    };
    if (request.dryRun) return summary;
    const key = `${name} ${version}`;
    if (this.#installing.has(key)) {
      throw new ProtocolError(
        ErrorCode.ALREADY_EXISTS,
        `module ${name} ${version} is being installed`,
      );
    }
    this.#installing.add(key);
    try {
      await this.#write(pkg, target);
      this.#uploads.delete(request.upload);
      await this.#options.store.installed(name, version, {
        public_key: pkg.author?.public_key ?? null,
        key_id: pkg.author?.key_id ?? null,
        sha256: pkg.sha256,
        by: admin,
        installed: new Date(this.#now()).toISOString(),
      }, author);
      this.#options.table.setOrigin(name, version, {
        public_key: pkg.author?.public_key ?? null,
        key_id: pkg.author?.key_id ?? null,
        sha256: pkg.sha256,
      });
      const { lifecycle } = this.#options;
      // A new version installs beside the one serving: requests without a
      // version keep getting that one until an admin switches (and a switch
      // at once can be rolled back to it).
      if (serving !== undefined) {
        await lifecycle.setDefault(name, serving);
      }
      this.#options.log[warnings.length > 0 ? "warn" : "info"](
        "module_installed",
        {
          module: name,
          version,
          sha256: pkg.sha256,
          author_key: pkg.author?.key_id ?? "unsigned",
          trust,
          by: admin,
          ...(warnings.length > 0 ? { warning: warnings.join(" ") } : {}),
        },
      );
      const status = await lifecycle.load(name, version);
      summary.status = request.makeDefault
        ? await lifecycle.setDefault(name, version)
        : lifecycle.status(name, version) ?? status;
      return summary;
    } finally {
      this.#installing.delete(key);
    }
  }

  /** How the signer is trusted; throws when it is not. */
  async #trust(
    pkg: VerifiedPackage,
    request: InstallRequest,
  ): Promise<
    {
      trust: PackageTrust;
      warnings: string[];
      author?: ModuleAuthorRecord;
    }
  > {
    const { name } = pkg.index;
    const since = new Date(this.#now()).toISOString();
    if (!pkg.author) {
      if (!request.allowUnsigned) {
        throw new ProtocolError(
          ErrorCode.PACKAGE_UNSIGNED,
          `${name} ${pkg.index.version} is not signed: no author vouches for its code. Install it only if you trust where it came from, with allow_unsigned (--allow-unsigned)`,
        );
      }
      return {
        trust: "unsigned",
        warnings: [
          "UNSIGNED: no author signed this package; anyone who could change it on its way could have.",
        ],
      };
    }
    const signer = pkg.author;
    const trusted = await this.#options.store.author(name);
    if (request.authorKey !== undefined) {
      let pinned: string;
      try {
        pinned = toBase64(fromBase64(request.authorKey));
      } catch {
        throw new ProtocolError(
          ErrorCode.INVALID_PARAMETER,
          'parameter "author_key" must be a public key (SPKI) in base64',
          { parameter: "author_key" },
        );
      }
      if (pinned !== signer.public_key) {
        throw new ProtocolError(
          ErrorCode.PACKAGE_UNTRUSTED_KEY,
          `${name} ${pkg.index.version} is signed by key ${signer.key_id}, not by the key you pinned`,
          { author_key_id: signer.key_id },
        );
      }
      const warnings = trusted && trusted.public_key !== signer.public_key
        ? [
          `KEY CHANGE: packages of ${name} were trusted from key ${trusted.key_id}; from now on key ${signer.key_id} (the one you pinned) is.`,
        ]
        : [];
      return {
        trust: trusted?.public_key === signer.public_key ? "trusted" : "pinned",
        warnings,
        author: { ...signer, trust: "pinned", since },
      };
    }
    if (trusted) {
      if (trusted.public_key !== signer.public_key) {
        throw new ProtocolError(
          ErrorCode.PACKAGE_UNTRUSTED_KEY,
          `${name} ${pkg.index.version} is signed by key ${signer.key_id}, but packages of ${name} are trusted from key ${trusted.key_id} (since ${trusted.since}): if its author really changed keys, pin the new one (--key)`,
          { author_key_id: signer.key_id, trusted_key_id: trusted.key_id },
        );
      }
      return { trust: "trusted", warnings: [] };
    }
    return {
      trust: "first_use",
      warnings: [
        `TRUST ON FIRST USE: no key is trusted for module ${name} yet. Key ${signer.key_id} signed this package and will be trusted for ${name}'s future packages; compare the key id with its author before you confirm (or pin the key with --key).`,
      ],
      author: { ...signer, trust: "first_use", since },
    };
  }

  /** Write a verified package's files into a new folder, then move it in place. */
  async #write(pkg: VerifiedPackage, target: string): Promise<void> {
    const incoming = `${this.#options.dir}/.incoming`;
    await Deno.mkdir(incoming, { recursive: true, mode: 0o700 });
    const temp = await Deno.makeTempDir({ dir: incoming });
    try {
      for (const [path, data] of pkg.files) {
        // Paths were checked (format.ts checkPath): plain names, no "..",
        // in a folder made just now, so nothing leads outside it.
        const file = `${temp}/${path}`;
        await Deno.mkdir(file.slice(0, file.lastIndexOf("/")), {
          recursive: true,
        });
        await Deno.writeFile(file, data, { createNew: true, mode: 0o644 });
      }
      await Deno.chmod(temp, 0o755);
      await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), {
        recursive: true,
      });
      await Deno.rename(temp, target);
    } catch (error) {
      await Deno.remove(temp, { recursive: true }).catch(() => {});
      throw error;
    }
  }
}
