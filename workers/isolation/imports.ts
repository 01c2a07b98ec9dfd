/**
 * What a module may load: its own files, the SDK's files, the npm packages of
 * the server's import map, Node's built-in modules, and https modules from the
 * hosts its manifest grants (`permissions.import`). Nothing else: not the
 * server's data folder, not `/etc/passwd`, not another module.
 *
 * Deno loads the modules of a program's graph (static imports, literal
 * dynamic imports, and theirs) without checking read permission, in a Worker
 * and in a process alike. So before a module starts, whatever its placement,
 * its whole graph is listed with `deno info --json` under the same import map
 * it runs with, and each module in it is checked (files by their real path, so
 * a symbolic link cannot lead out). A module that imports anything else is
 * refused with the offending import named ({@link ImportRefusedError}).
 *
 * At run time, in a process, the same import map maps every `file:` URL
 * outside the module's folder and the SDK's files to an unsupported scheme,
 * so a computed dynamic import of any other file fails at resolution;
 * `--cached-only` and `--no-remote` (or `--allow-import` with the granted
 * hosts) keep it from fetching code that was not checked. In a Worker the
 * runtime's read check refuses computed imports of files it may not read.
 *
 * @module
 */

import { cappedDeno } from "./limits.ts";
import type { Manifest } from "../manifest.ts";

/** Longest a `deno info` run on a module's code may take. */
const CHECK_MS = 30_000;
/** Memory of a `deno info` run beyond a bare Deno's, in MiB. */
const CHECK_MEMORY_MB = 512;

/** A module imports something it may not load: it does not start. */
export class ImportRefusedError extends Error {
  /** Stable error code. */
  readonly code = "module_import_refused";
  /** Each refused import, in words. */
  readonly imports: string[];

  /** The refusal of a module for `imports` (each in words). */
  constructor(imports: string[]) {
    super(
      `it imports what it may not load (a module loads its own files, the SDK, the server's npm packages and hosts granted in "permissions.import"): ${
        imports.slice(0, 3).join("; ")
      }${imports.length > 3 ? ` (and ${imports.length - 3} more)` : ""}`,
    );
    this.name = "ImportRefusedError";
    this.imports = imports;
  }
}

/** How a checked module is to be run. */
export interface ModuleImports {
  /** The import map (a `data:` URL) that blocks every other file. */
  importMap: string;
  /** `deno run` flags that enforce the policy in a process. */
  flags: string[];
}

interface InfoDependency {
  specifier: string;
  code?: { specifier?: string; error?: string };
  type?: { specifier?: string; error?: string };
}

interface InfoModule {
  specifier: string;
  error?: string;
  dependencies?: InfoDependency[];
}

interface Info {
  modules: InfoModule[];
}

/**
 * The name a module may import the SDK by, wherever its folder is (an
 * installed package lives in the data folder): also in the server's
 * deno.json, for modules in Workers.
 */
export const SDK_SPECIFIER = "@amtp/sdk";

/** The scheme the import map sends forbidden files to (Deno cannot load it). */
const BLOCKED = "blocked:";

function pathOf(fileUrl: string): string {
  return decodeURIComponent(new URL(fileUrl).pathname);
}

function dataUrl(json: unknown): string {
  const bytes = new TextEncoder().encode(JSON.stringify(json));
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return `data:application/json;base64,${btoa(text)}`;
}

async function denoInfo(
  entry: string,
  flags: string[],
  cwd: string,
): Promise<Info> {
  const { program, args } = await cappedDeno(
    ["info", "--json", "--no-config", "--no-lock", "--no-npm", ...flags, entry],
    CHECK_MEMORY_MB,
  );
  const out = await new Deno.Command(program, {
    args,
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(CHECK_MS),
  }).output();
  if (!out.success) {
    const error = new TextDecoder().decode(out.stderr).replace(
      // deno-lint-ignore no-control-regex
      /\x1b\[[0-9;]*m/g,
      "",
    ).trim().split("\n")[0];
    throw new Error(`deno info failed: ${error || `code ${out.code}`}`);
  }
  return JSON.parse(new TextDecoder().decode(out.stdout)) as Info;
}

/** What the server allows every module to load, and the check of one module. */
export class ImportPolicy {
  /** The npm entries of the server's import map (bare name -> `npm:` specifier). */
  readonly #npm: Record<string, string>;
  /** Real paths of the SDK's files. */
  readonly #sdkPaths: Set<string>;
  /** File URLs of the SDK's files, as modules import them. */
  readonly #sdkUrls: string[];
  /** The SDK's entry (what {@link SDK_SPECIFIER} names). */
  readonly #sdkEntry: string;
  /** Modules whose last check passed, with the files it saw. */
  readonly #passed = new Map<string, { stamp: string; files: string[] }>();
  /** Entries whose npm packages are in Deno's cache. */
  readonly #fetched = new Set<string>();

  private constructor(
    npm: Record<string, string>,
    sdkUrls: string[],
    sdkPaths: Set<string>,
    sdkEntry: string,
  ) {
    this.#npm = npm;
    this.#sdkEntry = sdkEntry;
    this.#sdkUrls = sdkUrls;
    this.#sdkPaths = sdkPaths;
  }

  /**
   * The policy of a server whose `deno.json` is `denoConfig`, with the SDK's
   * graph listed from `sdk` (its entry file URL).
   */
  static async create(
    denoConfig: string,
    sdk: string = new URL("../sdk/mod.ts", import.meta.url).href,
  ): Promise<ImportPolicy> {
    const config = JSON.parse(await Deno.readTextFile(denoConfig)) as {
      imports?: Record<string, string>;
    };
    const npm: Record<string, string> = {};
    for (const [name, target] of Object.entries(config.imports ?? {})) {
      if (target.startsWith("npm:")) npm[name] = target;
    }
    const info = await denoInfo(sdk, [
      `--import-map=${dataUrl({ imports: npm })}`,
      "--no-remote",
    ], pathOf(new URL(".", sdk).href));
    const urls = info.modules.map((m) => m.specifier).filter((s) =>
      s.startsWith("file:")
    );
    const paths = new Set(
      await Promise.all(urls.map((u) => Deno.realPath(pathOf(u)))),
    );
    return new ImportPolicy(npm, urls, paths, sdk);
  }

  /** The import map of a module: the server's npm names, its folder, the SDK. */
  #importMap(dirs: string[]): string {
    const imports: Record<string, string> = {
      ...this.#npm,
      [SDK_SPECIFIER]: this.#sdkEntry,
      "file:///": `${BLOCKED}/`,
    };
    for (const dir of dirs) {
      const url = new URL(`file://${dir}/`).href;
      imports[url] = url;
    }
    for (const url of this.#sdkUrls) imports[url] = url;
    return dataUrl({ imports });
  }

  /** Flags that keep a process from loading code that was not checked. */
  #remoteFlags(manifest: Manifest): string[] {
    const hosts = manifest.permissions.import;
    return hosts.length === 0
      ? ["--no-remote"]
      : [`--allow-import=${hosts.join(",")}`];
  }

  /**
   * Check a module's graph; resolves to how it is to be run.
   *
   * @throws {ImportRefusedError} when it imports anything it may not load
   */
  async check(manifest: Manifest): Promise<ModuleImports> {
    const realDir = await Deno.realPath(manifest.dir);
    const importMap = this.#importMap([...new Set([manifest.dir, realDir])]);
    const remote = this.#remoteFlags(manifest);
    const plan = {
      importMap,
      flags: [
        "--no-config",
        "--no-lock",
        `--import-map=${importMap}`,
        "--cached-only",
        ...remote,
      ],
    };
    const key = `${manifest.entry} ${remote.join(" ")}`;
    const passed = this.#passed.get(key);
    if (passed && passed.stamp === await stamp(passed.files)) return plan;
    const info = await denoInfo(
      pathOf(manifest.entry),
      [`--import-map=${importMap}`, ...remote],
      manifest.dir,
    );
    const refused: string[] = [];
    const files: string[] = [];
    for (const module of info.modules) {
      const why = await this.#refusal(module, manifest, realDir);
      if (why) refused.push(`${describe(module.specifier, info)}: ${why}`);
      else if (module.specifier.startsWith("file:")) {
        files.push(pathOf(module.specifier));
      }
    }
    if (refused.length > 0) {
      this.#passed.delete(key);
      throw new ImportRefusedError(refused);
    }
    this.#passed.set(key, { stamp: await stamp(files), files });
    return plan;
  }

  /**
   * Bring the npm packages of a checked module's graph into Deno's cache,
   * where a process (which runs `--cached-only`) finds them: its graph was
   * checked, so these are packages of the server's import map only. Once
   * per entry and server.
   */
  async fetchPackages(manifest: Manifest, plan: ModuleImports): Promise<void> {
    if (this.#fetched.has(manifest.entry)) return;
    const flags = plan.flags.filter((f) => f !== "--cached-only");
    const { program, args } = await cappedDeno(
      ["cache", "--quiet", ...flags, pathOf(manifest.entry)],
      CHECK_MEMORY_MB,
    );
    const out = await new Deno.Command(program, {
      args,
      cwd: manifest.dir,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      signal: AbortSignal.timeout(CHECK_MS * 4),
    }).output();
    if (!out.success) {
      throw new Error(
        `fetching its npm packages failed: ${
          new TextDecoder().decode(out.stderr).trim().split("\n")[0]
        }`,
      );
    }
    this.#fetched.add(manifest.entry);
  }

  /** Why one module of the graph may not be loaded, or undefined. */
  async #refusal(
    module: InfoModule,
    manifest: Manifest,
    realDir: string,
  ): Promise<string | undefined> {
    const specifier = module.specifier;
    const scheme = specifier.slice(0, specifier.indexOf(":") + 1);
    switch (scheme) {
      case "file:": {
        let real: string;
        try {
          real = await Deno.realPath(pathOf(specifier));
        } catch {
          return "not found";
        }
        if (real.startsWith(`${realDir}/`) || this.#sdkPaths.has(real)) {
          return undefined;
        }
        return `outside the module's folder (${real})`;
      }
      case BLOCKED:
        return "outside the module's folder and not part of the SDK";
      case "node:":
        return undefined;
      case "npm:": {
        // `name/` entries map a package's subpaths (`npm:/name@1.0.0/`).
        const allowed = Object.values(this.#npm).some((target) =>
          specifier === target ||
          specifier.startsWith(target.endsWith("/") ? target : `${target}/`)
        );
        return allowed ? undefined : "not an npm package of the server";
      }
      case "https:": {
        const url = new URL(specifier);
        const port = url.port || "443";
        const granted = manifest.permissions.import.some((host) =>
          host === url.hostname || host === `${url.hostname}:${port}`
        );
        if (!granted) {
          return `its host is not granted in "permissions.import"`;
        }
        return module.error ? `cannot be loaded: ${module.error}` : undefined;
      }
      default:
        return "not a file of the module, the SDK, an npm package of the server or a granted https URL";
    }
  }
}

/** An import in words: what the code wrote, where it leads, who wrote it. */
function describe(specifier: string, info: Info): string {
  const shown = specifier.startsWith(BLOCKED)
    ? `file://${specifier.slice(BLOCKED.length)}`
    : specifier;
  for (const module of info.modules) {
    for (const dep of module.dependencies ?? []) {
      if (
        dep.code?.specifier === specifier || dep.type?.specifier === specifier
      ) {
        const file = module.specifier.replace(/^.*\//, "");
        const target = shown.length > 120 ? `${shown.slice(0, 117)}...` : shown;
        return dep.specifier === shown
          ? `${file} imports "${target}"`
          : `${file} imports "${dep.specifier.slice(0, 120)}" (${target})`;
      }
    }
  }
  return `"${shown.slice(0, 120)}"`;
}

/** What changes when a file's content or identity changes (ctime cannot be set back). */
async function stamp(files: string[]): Promise<string> {
  const parts = await Promise.all(files.map(async (file) => {
    try {
      const info = await Deno.stat(file);
      return `${file}:${await Deno.realPath(
        file,
      )}:${info.ino}:${info.size}:${info.mtime?.getTime()}:${info.ctime?.getTime()}`;
    } catch {
      return `${file}:gone`;
    }
  }));
  return parts.join("\n");
}
