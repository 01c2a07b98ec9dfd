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
