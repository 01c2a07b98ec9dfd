/**
 * The router: which version of a module serves a call (a client's semver
 * range, else the admin's default, else the highest enabled version), and
 * handing it the call with the caller the core set from the token.
 *
 * @module
 */

import {
  type Caller,
  ErrorCode,
  type HandlerContext,
  ProtocolError,
} from "../core/protocol/mod.ts";
import type { Document } from "../core/wire/mod.ts";
import type {
  ComposeRequest,
  InboundDelivery,
  InboundResult,
  TransportRequest,
  TransportResult,
} from "../core/federation/delivery.ts";
import {
  compareVersions,
  maxSatisfying,
  parseVersion,
  SemverError,
} from "./semver.ts";
import type { ModuleCopy } from "./instance.ts";
import type { ModuleTable, Slot } from "./table.ts";
import { inSpan } from "../core/trace/mod.ts";

/** Told of what modules do (the server's metrics). */
export interface ModuleObserver {
  /** A call (`call` or `inbound`) answered, well or not. */
  called(module: string, method: "call" | "inbound", ok: boolean): void;
  /** A copy restarted after it went down. */
  restarted(module: string): void;
  /** A service or an operation the module has no grant or permission for. */
  denied(module: string): void;
}

/** Request fields that belong to the envelope, not to the module. */
const ENVELOPE = new Set([
  "command",
  "requestID",
  "module",
  "version",
  "user_token",
  "admin_token",
]);
/** Latency samples kept per version. */
const SAMPLES = 512;

function unavailable(message: string): ProtocolError {
  return new ProtocolError(ErrorCode.MODULE_UNAVAILABLE, message);
}

/** A module usable by clients, as `info` lists it. */
export interface AvailableModule {
  /** Module name. */
  name: string;
  /** Enabled versions. */
  versions: string[];
  /** The admin's default version, if any. */
  default?: string;
}

/** Routes calls to module versions. */
export class ModuleRouter {
  readonly #table: ModuleTable;
  readonly #observer?: ModuleObserver;

  /** Route over the versions of `table`. */
  constructor(table: ModuleTable, observer?: ModuleObserver) {
    this.#table = table;
    this.#observer = observer;
  }

  /** The version that serves `range` (or the default) of module `name`. */
  pick(name: string, range?: string): Slot {
    const versions = this.#table.versions(name);
    if (versions.length === 0) {
      throw unavailable(`no module "${name.slice(0, 64)}"`);
    }
    const usable = versions.filter((s) => s.enabled && s.loaded);
    if (usable.length === 0) throw unavailable(`module "${name}" is disabled`);
    const numbers = usable.map((s) => s.manifest.version);
    let chosen: string | undefined;
    if (range !== undefined) {
      try {
        chosen = maxSatisfying(numbers, range);
      } catch (error) {
        if (error instanceof SemverError) {
          throw new ProtocolError(
            ErrorCode.INVALID_PARAMETER,
            `parameter "version": ${error.message}`,
            { parameter: "version" },
          );
        }
        throw error;
      }
      if (!chosen) {
        throw unavailable(
          `module "${name}" has no enabled version matching ${range}`,
        );
      }
    } else {
      const preferred = this.#table.defaultOf(name);
      chosen = preferred && numbers.includes(preferred)
        ? preferred
        : numbers.sort((a, b) =>
          compareVersions(parseVersion(b), parseVersion(a))
        )[0];
    }
    return usable.find((s) => s.manifest.version === chosen)!;
  }

  /** Route a client request naming a module (the dispatcher's module router). */
  async route(request: Document, ctx: HandlerContext): Promise<unknown> {
    const name = String(request.module);
    if (request.version !== undefined && typeof request.version !== "string") {
      throw new ProtocolError(
        ErrorCode.INVALID_PARAMETER,
        'parameter "version" must be of type string',
        { parameter: "version" },
      );
    }
    const slot = this.pick(name, request.version as string | undefined);
    const command = String(request.command);
    if (!slot.manifest.commands.includes(command)) {
      throw new ProtocolError(
        ErrorCode.UNKNOWN_COMMAND,
        `module ${name} ${slot.manifest.version} has no command "${
          command.slice(0, 64)
        }"`,
      );
    }
    const instance = this.#running(
      slot,
      `module ${name} ${slot.manifest.version} is ${slot.state}; try again shortly`,
    );
    const params: Document = {};
    for (const [key, value] of Object.entries(request)) {
      if (!ENVELOPE.has(key)) params[key] = value;
    }
    const caller = ctx.caller as Caller;
    const started = performance.now();
    slot.calls++;
    let ok = false;
    try {
      const data = await inSpan("amtp.module.call", {
        attributes: {
          "amtp.module": name,
          "amtp.module.version": slot.manifest.version,
          "amtp.command": command,
          "amtp.isolation": slot.isolation,
        },
      }, () =>
        instance.call(command, {
          address: caller.name,
          session: ctx.session.id,
        }, params));
      ok = true;
      return data;
    } catch (error) {
      slot.errors++;
      throw error;
    } finally {
      slot.latencies.push(performance.now() - started);
      if (slot.latencies.length > SAMPLES) slot.latencies.shift();
      this.#observer?.called(name, "call", ok);
    }
  }

  /**
   * Hand a delivery from another server (or a bounce) to a module's
   * `inbound` handler, on its default version.
   */
  async inbound(
    name: string,
    delivery: InboundDelivery,
  ): Promise<InboundResult> {
    const slot = this.pick(name);
    const instance = this.#running(slot, `module ${name} is ${slot.state}`);
    if (!instance.federates) {
      throw unavailable(
        `module ${name} takes no deliveries from other servers`,
      );
    }
    let ok = false;
    try {
      const result = await inSpan("amtp.module.inbound", {
        attributes: {
          "amtp.module": name,
          "amtp.module.version": slot.manifest.version,
        },
      }, () =>
        instance.inbound({
          address: delivery.from,
          session: `peer:${delivery.peer ?? "local"}`,
        }, delivery));
      ok = true;
      return result;
    } finally {
      this.#observer?.called(name, "inbound", ok);
    }
  }

  /** Have a module compose one of its queued payloads as an Internet message (its default version). */
  async compose(
    name: string,
    request: ComposeRequest,
  ): Promise<{ raw: Uint8Array }> {
    const slot = this.pick(name);
    const instance = this.#running(slot, `module ${name} is ${slot.state}`);
    if (!instance.composes) {
      throw unavailable(`module ${name} does not compose email`);
    }
    return await instance.compose(
      { address: request.from, session: "queue" },
      request,
    );
  }

  /**
   * The module that carries `route` (its manifest names it in `transports`):
   * the first by name with a running version; undefined when none does.
   */
  carrier(route: string): string | undefined {
    for (const name of [...this.#table.names()].sort()) {
      const carries = this.#table.versions(name).some((s) =>
        s.enabled && s.loaded && s.manifest.transports.includes(route)
      );
      if (carries) return name;
    }
    return undefined;
  }

  /** Hand a message to the module that carries `request.route`. */
  async transport(request: TransportRequest): Promise<TransportResult> {
    const name = this.carrier(request.route);
    if (!name) throw unavailable(`no module carries ${request.route}`);
    const slot = this.pick(name);
    const instance = this.#running(slot, `module ${name} is ${slot.state}`);
    if (
      !instance.carries || !slot.manifest.transports.includes(request.route)
    ) {
      throw unavailable(
        `module ${name} ${slot.manifest.version} does not carry ${request.route}`,
      );
    }
    return await instance.transport(request);
  }

  /** Modules and versions clients may use, for `info`. */
  available(): AvailableModule[] {
    const out: AvailableModule[] = [];
    for (const name of this.#table.names()) {
      const versions = this.#table.versions(name).filter((s) =>
        s.enabled && s.loaded
      ).map((s) => s.manifest.version);
      if (versions.length === 0) continue;
      out.push({ name, versions, default: this.#table.defaultOf(name) });
    }
    return out;
  }

  #running(slot: Slot, message: string): ModuleCopy {
    const instance = slot.instance;
    if (!instance || instance.state !== "ready") {
      throw unavailable(
        slot.isolation === "remote" && slot.state === "waiting"
          ? `module ${slot.manifest.name} ${slot.manifest.version} runs remote and no instance of it is connected`
          : message,
      );
    }
    return instance;
  }
}
