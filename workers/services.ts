/**
 * The host's side of the core's services: a module's call is checked
 * against the bridge's declaration (the grant of its manifest, then its
 * arguments) and handed to the one implementation of each service, which the
 * server wires in (server/module_services.ts).
 *
 * @module
 */

import type { Logger } from "../core/log/mod.ts";
import { ErrorCode, ProtocolError } from "../core/protocol/mod.ts";
import {
  CORE_SERVICES,
  type CoreServices,
  type ServiceName,
} from "./bridge/services.ts";
import type { Manifest } from "./manifest.ts";

/** The module calling a service: its manifest, and its log (tagged with it). */
export interface ServiceCaller {
  /** The calling version's manifest. */
  manifest: Manifest;
  /** Its logger (`module=`, `version=`). */
  log: Logger;
}

/**
 * The implementation of every core service: each takes the calling module
 * and the declared arguments, and may throw {@link ProtocolError}s (a module
 * sees their codes by name).
 */
export type ServiceImplementation = {
  [M in ServiceName]: (
    caller: ServiceCaller,
    ...args: Parameters<CoreServices[M]>
  ) => ReturnType<CoreServices[M]>;
};

/**
 * Serve one call of a module: known method, granted to the module (its
 * manifest's `services`; storage through the core only when modules store
 * there), arguments of the declared shape; then the implementation.
 */
export function serveService(
  implementation: ServiceImplementation,
  options: { coreStorage: boolean },
  caller: ServiceCaller,
  method: string,
  args: unknown[],
): unknown {
  if (!Object.hasOwn(CORE_SERVICES, method)) {
    throw new ProtocolError(
      ErrorCode.UNKNOWN_COMMAND,
      `no core service "${method.slice(0, 64)}"`,
    );
  }
  const name = method as ServiceName;
  const spec = CORE_SERVICES[name];
  if (spec.grant === "declared" && !caller.manifest.services.includes(name)) {
    throw new ProtocolError(
      ErrorCode.FORBIDDEN,
      `service "${name}" is not declared in the manifest`,
    );
  }
  if (spec.grant === "core storage" && !options.coreStorage) {
    throw new ProtocolError(
      ErrorCode.FORBIDDEN,
      "module storage is the module's own database, not the core's",
    );
  }
  const checked = spec.args(args, "args");
  const serve = implementation[name] as (
    caller: ServiceCaller,
    ...args: unknown[]
  ) => unknown;
  return serve(caller, ...checked);
}
