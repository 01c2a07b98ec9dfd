/**
 * Module manifests: `modules/<name>/<version>/module.json`.
 *
 * ```json
 * {
 *   "name": "echo",
 *   "version": "1.0.0",
 *   "entry": "mod.ts",
 *   "description": "repeats what it is sent",
 *   "permissions": { "net": ["127.0.0.1:8080"], "read": ["./assets"], "write": [], "env": [], "import": ["esm.sh"] },
 *   "commands": ["echo"],
 *   "events": ["echoed"],
 *   "storage_quota": 1048576,
 *   "isolation": "worker",
 *   "timeout_ms": 5000,
 *   "memory_mb": 128,
 *   "services": ["accounts.resolve"],
 *   "transports": [],
 *   "calls": { "rules": ["rules_evaluate"] },
 *   "exports": ["echo_for"],
 *   "subscribes": { "messages": ["message_delivered"] }
 * }
 * ```
 *
 * Permissions default to none. Relative read/write paths are relative to the
 * module's folder. A permission entry may name the value of an environment
 * variable the manifest also lists in `permissions.env` (in `net`, `read` and
 * `write`), `${NAME}` or
 * `${NAME:-default}` (what the server's admin configured: the port a
 * gateway listens on, its relay); it is filled in at each start, and an
 * entry that comes out empty is left out ({@link expandPermissions}). `import` lists the hosts (`host` or `host:port`) the module
 * may load code from over https; without it, it loads only its own files, the
 * SDK and the server's npm packages (workers/isolation/imports.ts).
 *
 * @module
 */

import { DECLARABLE_SERVICES, type ServiceName } from "./bridge/services.ts";
import type { ModuleIsolation } from "../kv/modules.ts";
import { parseVersion } from "./semver.ts";

/**
 * Isolation of a module: a Web Worker (default), a killable subprocess, or
 * `remote`: its own process anywhere, connected to the server (workers/remote).
 */
export type Isolation = ModuleIsolation;

/** What a module may touch. */
export interface Permissions {
  /** `host:port` or `host` entries. */
  net: string[];
  /** Absolute paths readable. */
  read: string[];
  /** Absolute paths writable. */
  write: string[];
  /** Environment variable names readable. */
  env: string[];
  /** Hosts (`host` or `host:port`) it may import code from over https. */
  import: string[];
}

/** A validated manifest. */
export interface Manifest {
  /** Module name: lowercase letters, digits, `-`, `_`. */
  name: string;
  /** Semantic version. */
  version: string;
  /** Absolute file URL of the entry module. */
  entry: string;
  /** The module's folder (absolute path). */
  dir: string;
  /** One line for admins. */
  description: string;
  /** What it may touch. */
  permissions: Permissions;
  /** Commands it serves. */
  commands: string[];
  /** Events it may push. */
  events: string[];
  /** Storage quota in bytes. */
  storageQuota: number;
  /** Isolation chosen by the manifest. */
  isolation: Isolation;
  /** Deadline of one call in milliseconds. */
  timeoutMs: number;
  /** Memory cap of a process-isolated module in MiB (JS heap, and data beyond a bare Deno's). */
  memoryMb: number;
  /** Core services it may call that need a grant (bridge/services.ts, `declared`). */
  services: ServiceName[];
  /** Outbound routes it carries for the queue (`smtp`): its `transport` is called for them. */
  transports: string[];
  /** Other modules' commands it may call (`modules.call`), by module name. */
  calls: Record<string, string[]>;
  /** Its commands other modules may call; those not in {@link commands} only modules may call. */
  exports: string[];
  /** Other modules' events it takes (`modules.emit`), by module name. */
  subscribes: Record<string, string[]>;
}

/** Every command a module's handlers serve: its `commands`, then the `exports` that are not among them. */
export function handledCommands(manifest: Manifest): string[] {
  return [
    ...manifest.commands,
    ...manifest.exports.filter((c) => !manifest.commands.includes(c)),
  ];
}

/** Where a module may run. */
export const ISOLATIONS = ["worker", "process", "remote"] as const;

/** Routes a module may carry. */
export const TRANSPORT_ROUTES = ["smtp"] as const;

/** A manifest that cannot be used. */
export class ManifestError extends Error {
  /** Stable error code. */
  readonly code = "manifest_invalid";

  /** Create the error for a manifest file. */
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = "ManifestError";
  }
}

const NAME_RE = /^[a-z][a-z0-9_-]{0,62}$/;
const COMMAND_RE = /^[a-z][a-z0-9_]{0,62}$/;
const IMPORT_HOST_RE =
  /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?$/;

function strings(file: string, value: unknown, field: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) {
    throw new ManifestError(file, `"${field}" must be a list of strings`);
  }
  return value as string[];
}

function resolvePath(dir: string, path: string): string {
  if (path.startsWith("/")) return path;
  return `${dir}/${path.replace(/^\.\//, "")}`;
}

/**
 * Validate a parsed manifest found in `dir`.
 *
 * @throws {ManifestError}
 */
export function parseManifest(raw: unknown, dir: string): Manifest {
  const file = `${dir}/module.json`;
  if (!raw || typeof raw !== "object") {
    throw new ManifestError(file, "not a JSON object");
  }
  const m = raw as Record<string, unknown>;
  if (typeof m.name !== "string" || !NAME_RE.test(m.name)) {
    throw new ManifestError(file, '"name" must match [a-z][a-z0-9_-]*');
  }
  if (typeof m.version !== "string") {
    throw new ManifestError(file, '"version" must be a string');
  }
  try {
    parseVersion(m.version);
  } catch {
    throw new ManifestError(
      file,
      `"version" ${m.version} is not MAJOR.MINOR.PATCH`,
    );
  }
  const entry = typeof m.entry === "string" ? m.entry : "mod.ts";
  if (entry.includes("..") || entry.startsWith("/")) {
    throw new ManifestError(
      file,
      '"entry" must be a file inside the module folder',
    );
  }
  const perms = (m.permissions ?? {}) as Record<string, unknown>;
  if (!Array.isArray(m.commands)) {
    throw new ManifestError(
      file,
      '"commands" must list command names ([a-z][a-z0-9_]*)',
    );
  }
  const commands = strings(file, m.commands, "commands");
  if (commands.some((c) => !COMMAND_RE.test(c))) {
    throw new ManifestError(
      file,
      '"commands" must list command names ([a-z][a-z0-9_]*)',
    );
  }
  const transports = strings(file, m.transports, "transports");
  // A module without commands only makes sense carrying a route.
  if (commands.length === 0 && transports.length === 0) {
    throw new ManifestError(
      file,
      '"commands" must list command names ([a-z][a-z0-9_]*)',
    );
  }
  for (const route of transports) {
    if (!(TRANSPORT_ROUTES as readonly string[]).includes(route)) {
      throw new ManifestError(
        file,
        `unknown route "${route}" in "transports" (known: ${
          TRANSPORT_ROUTES.join(", ")
        })`,
      );
    }
  }
  const env = strings(file, perms.env, "permissions.env");
  for (const field of ["net", "read", "write"]) {
    for (const entry of strings(file, perms[field], `permissions.${field}`)) {
      for (const [, name] of entry.matchAll(VARIABLE_RE)) {
        if (!env.includes(name)) {
          throw new ManifestError(
            file,
            `"permissions.${field}": "${entry}" names \${${name}}, which "permissions.env" does not list`,
          );
        }
      }
    }
  }
  const imports = strings(file, perms.import, "permissions.import");
  for (const host of imports) {
    if (!IMPORT_HOST_RE.test(host)) {
      throw new ManifestError(
        file,
        `"permissions.import": "${host}" is not a host or host:port`,
      );
    }
  }
  const services = strings(file, m.services, "services");
  for (const service of services) {
    if (!(DECLARABLE_SERVICES as string[]).includes(service)) {
      throw new ManifestError(
        file,
        `unknown service "${service}" (known: ${
          DECLARABLE_SERVICES.join(", ")
        })`,
      );
    }
  }
  const exports = strings(file, m.exports, "exports");
  if (exports.some((c) => !COMMAND_RE.test(c))) {
    throw new ManifestError(
      file,
      '"exports" must list command names ([a-z][a-z0-9_]*)',
    );
  }
  const calls = namesByModule(file, m.calls, "calls", COMMAND_RE);
  const subscribes = namesByModule(file, m.subscribes, "subscribes", EVENT_RE);
  const events = strings(file, m.events, "events");
  if (events.some((e) => !EVENT_RE.test(e))) {
    throw new ManifestError(
      file,
      '"events" must list event names ([a-z][a-z0-9_]*)',
    );
  }
  const isolation = m.isolation ?? "worker";
  if (!(ISOLATIONS as readonly unknown[]).includes(isolation)) {
    throw new ManifestError(
      file,
      '"isolation" is "worker", "process" or "remote"',
    );
  }
  const number = (
    field: string,
    fallback: number,
    min: number,
    max: number,
  ) => {
    const value = m[field] ?? fallback;
    if (
      typeof value !== "number" || !Number.isInteger(value) || value < min ||
      value > max
    ) {
      throw new ManifestError(
        file,
        `"${field}" must be a whole number from ${min} to ${max}`,
      );
    }
    return value;
  };
  return {
    name: m.name,
    version: m.version,
    entry: new URL(`file://${dir}/${entry}`).href,
    dir,
    description: typeof m.description === "string" ? m.description : "",
    permissions: {
      net: strings(file, perms.net, "permissions.net"),
      // Paths naming a variable are resolved once it is filled in.
      read: strings(file, perms.read, "permissions.read").map((p) =>
        p.includes("${") ? p : resolvePath(dir, p)
      ),
      write: strings(file, perms.write, "permissions.write").map((p) =>
        p.includes("${") ? p : resolvePath(dir, p)
      ),
      env,
      import: imports,
    },
    commands,
    events,
    storageQuota: number("storage_quota", 10 * 1024 * 1024, 0, 1024 ** 4),
    isolation: isolation as Isolation,
    timeoutMs: number("timeout_ms", 5000, 10, 600_000),
    memoryMb: number("memory_mb", 256, 16, 16384),
    services: services as ServiceName[],
    transports,
    calls,
    exports,
    subscribes,
  };
}

const EVENT_RE = /^[a-z][a-z0-9_]{0,63}$/;

/** `{"module": ["name", ...]}` (`calls`, `subscribes`): module names to lists of names. */
function namesByModule(
  file: string,
  value: unknown,
  field: string,
  names: RegExp,
): Record<string, string[]> {
  if (value === undefined) return {};
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    throw new ManifestError(
      file,
      `"${field}" must be an object: module name -> list of names`,
    );
  }
  const out: Record<string, string[]> = {};
  for (const [module, list] of Object.entries(value)) {
    if (!NAME_RE.test(module)) {
      throw new ManifestError(
        file,
        `"${field}": "${module}" is not a module name`,
      );
    }
    const items = strings(file, list, `${field}.${module}`);
    if (items.some((n) => !names.test(n))) {
      throw new ManifestError(
        file,
        `"${field}.${module}" must list names ([a-z][a-z0-9_]*)`,
      );
    }
    out[module] = items;
  }
  return out;
}

/** `${NAME}` or `${NAME:-default}` in a permission entry. */
const VARIABLE_RE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/**
 * A manifest's permissions with their `${NAME}` references filled in from
 * `env` (the server's environment): an unset or empty variable takes its
 * default; an entry that comes out empty (or still names a missing value) is
 * left out, and one holding commas is several entries. Read and write paths
 * come out relative to the module's folder unless absolute.
 */
export function expandPermissions(
  manifest: Manifest,
  env: Record<string, string | undefined>,
): Permissions {
  const expand = (entries: string[], paths: boolean) =>
    entries.flatMap((entry) => {
      let missing = false;
      const value = entry.replace(
        VARIABLE_RE,
        (_, name: string, fallback?: string) => {
          const set = env[name];
          const out = set !== undefined && set !== "" ? set : fallback ?? "";
          if (out === "") missing = true;
          return out;
        },
      );
      if (value === entry) return [entry];
      if (missing) return [];
      const parts = value.split(",").map((v) => v.trim()).filter((v) => v);
      return paths ? parts.map((v) => resolvePath(manifest.dir, v)) : parts;
    });
  const { net, read, write, env: names, import: hosts } = manifest.permissions;
  return {
    net: expand(net, false),
    read: expand(read, true),
    write: expand(write, true),
    env: names,
    import: hosts,
  };
}

/** Read every `<name>/<version>/module.json` under `root`; bad ones are reported, not fatal. */
export async function discoverManifests(
  root: string,
): Promise<{ manifests: Manifest[]; errors: string[] }> {
  const manifests: Manifest[] = [];
  const errors: string[] = [];
  let names: Deno.DirEntry[] = [];
  try {
    names = [...Deno.readDirSync(root)];
  } catch {
    return { manifests, errors };
  }
  // Names starting with a dot are not modules (an install's unfinished folder).
  for (const name of names.filter((e) => e.isDirectory && e.name[0] !== ".")) {
    for (const version of Deno.readDirSync(`${root}/${name.name}`)) {
      if (!version.isDirectory || version.name[0] === ".") continue;
      const dir = `${root}/${name.name}/${version.name}`;
      try {
        const manifest = await loadManifest(dir);
        if (manifest.name !== name.name || manifest.version !== version.name) {
          throw new ManifestError(
            `${dir}/module.json`,
            `name and version must match the folders ${name.name}/${version.name}`,
          );
        }
        manifests.push(manifest);
      } catch (error) {
        errors.push(error instanceof Error ? error.message : String(error));
      }
    }
  }
  return { manifests, errors };
}

/** Read and validate one module folder's manifest. */
export async function loadManifest(dir: string): Promise<Manifest> {
  const file = `${dir}/module.json`;
  let raw: unknown;
  try {
    raw = JSON.parse(await Deno.readTextFile(file));
  } catch (error) {
    throw new ManifestError(
      file,
      `unreadable: ${error instanceof Error ? error.message : error}`,
    );
  }
  return parseManifest(raw, dir);
}
