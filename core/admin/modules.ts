/**
 * Module life-cycle commands for admins: list modules with their state and
 * figures, load, unload, reload, enable, disable, set the default version and
 * the isolation — all without a server restart.
 *
 * @module
 */

import {
  type Command,
  defineCommand,
  ErrorCode,
  ProtocolError,
} from "../protocol/mod.ts";

/** What the module commands need of the module host. */
export interface ModuleAdmin {
  /** Every version with state and figures. */
  list(): unknown[];
  /** Load a version from disk. */
  load(name: string, version: string): Promise<unknown>;
  /** Stop and forget a version. */
  unload(name: string, version: string): Promise<unknown>;
  /** Restart a version with the code on disk. */
  reload(name: string, version: string): Promise<unknown>;
  /** Let a version serve. */
  enable(name: string, version: string): Promise<unknown>;
  /** Stop a version serving. */
  disable(name: string, version: string): Promise<unknown>;
  /** Default version of a module. */
  setDefault(name: string, version: string): Promise<unknown>;
  /** Worker, process or remote isolation. */
  setIsolation(
    name: string,
    version: string,
    isolation: "worker" | "process" | "remote",
  ): Promise<unknown>;
  /** Make the previous default version the default again. */
  rollback(name: string): Promise<unknown>;
}

/** What the package commands need of the module host (workers/packages.ts). */
export interface PackageAdmin {
  /** Start an upload of `size` bytes. */
  begin(size: number, admin: string): unknown;
  /** Add bytes at `offset`. */
  chunk(id: string, offset: number, data: Uint8Array, admin: string): unknown;
  /** Verify an upload and install it (or only verify: `dryRun`). */
  install(
    request: {
      upload: string;
      sha256: string;
      authorKey?: string;
      allowUnsigned?: boolean;
      dryRun?: boolean;
      makeDefault?: boolean;
    },
    admin: string,
  ): Promise<unknown>;
}

/** The package commands: upload a signed package in chunks, verify it, install it. */
export function packageCommands(packages: PackageAdmin): Command[] {
  const admin = (caller?: { name: string }) => caller?.name ?? "";
  return [
    defineCommand({
      name: "admin_package_upload",
      auth: "admin",
      params: { size: { type: "int", min: 1 } },
      handler: (p, ctx) => packages.begin(p.size, admin(ctx.caller)),
    }),
    defineCommand({
      name: "admin_package_chunk",
      auth: "admin",
      params: {
        upload: { type: "string", min: 1, max: 64 },
        offset: { type: "int", min: 0 },
        data: { type: "binary", min: 1 },
      },
      handler: (p, ctx) =>
        packages.chunk(p.upload, p.offset, p.data, admin(ctx.caller)),
    }),
    defineCommand({
      name: "admin_package_install",
      auth: "admin",
      params: {
        upload: { type: "string", min: 1, max: 64 },
        sha256: { type: "string", min: 64, max: 64 },
        author_key: { type: "string", optional: true, max: 1024 },
        allow_unsigned: { type: "bool", optional: true },
        dry_run: { type: "bool", optional: true },
        default: { type: "bool", optional: true },
      },
      handler: async (p, ctx) => {
        const result = await packages.install({
          upload: p.upload,
          sha256: p.sha256,
          authorKey: p.author_key,
          allowUnsigned: p.allow_unsigned,
          dryRun: p.dry_run,
          makeDefault: p.default,
        }, admin(ctx.caller));
        return result;
      },
    }),
  ];
}

const TARGET = {
  name: { type: "string", min: 1, max: 64 },
  version: { type: "string", min: 5, max: 32 },
} as const;

/** The `admin_*_module*` commands. */
export function moduleCommands(host: ModuleAdmin): Command[] {
  const verb = (
    name: string,
    action: (n: string, v: string) => Promise<unknown>,
  ) =>
    defineCommand({
      name,
      auth: "admin",
      params: TARGET,
      handler: async (p, ctx) => {
        const result = await action(p.name, p.version);
        ctx.log.info(name.replace(/^admin_/, ""), {
          module: p.name,
          version: p.version,
          by: ctx.caller?.name,
        });
        return result;
      },
    });
  return [
    defineCommand({
      name: "admin_get_modules",
      auth: "admin",
      params: {},
      handler: () => ({ modules: host.list() }),
    }),
    verb("admin_load_module", (n, v) => host.load(n, v)),
    verb("admin_unload_module", (n, v) => host.unload(n, v)),
    verb("admin_reload_module", (n, v) => host.reload(n, v)),
    verb("admin_enable_module", (n, v) => host.enable(n, v)),
    verb("admin_disable_module", (n, v) => host.disable(n, v)),
    verb("admin_set_module_default", (n, v) => host.setDefault(n, v)),
    defineCommand({
      name: "admin_rollback_module",
      auth: "admin",
      params: { name: TARGET.name },
      handler: async (p, ctx) => {
        const result = await host.rollback(p.name);
        ctx.log.info("rollback_module", {
          module: p.name,
          by: ctx.caller?.name,
        });
        return result;
      },
    }),
    defineCommand({
      name: "admin_set_module_isolation",
      auth: "admin",
      params: { ...TARGET, isolation: { type: "string", max: 16 } },
      handler: (p) => {
        if (
          p.isolation !== "worker" && p.isolation !== "process" &&
          p.isolation !== "remote"
        ) {
          throw new ProtocolError(
            ErrorCode.INVALID_PARAMETER,
            'parameter "isolation" is "worker", "process" or "remote"',
            {
              parameter: "isolation",
            },
          );
        }
        return host.setIsolation(p.name, p.version, p.isolation);
      },
    }),
  ];
}
