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
import type { Manifest } from "./manifest.ts";
import type { BridgeCaller } from "./bridge/services.ts";
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
/** Module-to-module calls one client call may nest (A calls B calls C ...). */
export const MAX_CALL_DEPTH = 4;

/** A call in progress, as its ticket names it (BridgeCaller.ticket). */
interface Ticket {
  /** The user on whose behalf ("" for a module calling as itself). */
  address: string;
  /** The client session, or `module:NAME`. */
  session: string;
  /** The module the ticket was given to: only it may hand it back. */
  module: string;
  /** Module-to-module calls above this one. */
  depth: number;
}

function forbidden(message: string): ProtocolError {
  return new ProtocolError(ErrorCode.FORBIDDEN, message);
}

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
  /** Tickets of calls in progress (unguessable; removed when the call ends). */
  readonly #tickets = new Map<string, Ticket>();

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
    const ticket = this.#issue({
      address: caller.name,
      session: ctx.session.id,
      module: name,
      depth: 0,
    });
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
          ticket,
        }, params));
      ok = true;
      return data;
    } catch (error) {
      slot.errors++;
      throw error;
    } finally {
      this.#tickets.delete(ticket);
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

  /**
   * A module's call of another module's command (`modules.call`): `from`'s
   * `calls` must name it and the callee's `exports` list it. The callee's
   * caller is set here: the user of the ticket `from` was given for the call
   * it serves, or `from` itself without one; `module` is always `from`.
   */
  async callFrom(
    from: Manifest,
    target: string,
    command: string,
    params: Document,
    ticket?: string,
  ): Promise<unknown> {
    if (!from.calls[target]?.includes(command)) {
      throw forbidden(
        `module ${from.name} may not call ${target}.${command}: its manifest's "calls" does not name it`,
      );
    }
    const slot = this.pick(target);
    if (!slot.manifest.exports.includes(command)) {
      throw forbidden(
        `module ${target} ${slot.manifest.version} does not export "${command}"`,
      );
    }
    let on: Ticket | undefined;
    if (ticket !== undefined) {
      on = this.#tickets.get(ticket);
      // A ticket is good only in the hands of the module it was given to.
      if (!on || on.module !== from.name) {
        throw forbidden("unknown or finished caller ticket");
      }
    }
    const depth = (on?.depth ?? 0) + 1;
    if (depth > MAX_CALL_DEPTH) {
      throw new ProtocolError(
        ErrorCode.LIMIT_EXCEEDED,
        `module calls nest at most ${MAX_CALL_DEPTH} deep`,
      );
    }
    const instance = this.#running(
      slot,
      `module ${target} ${slot.manifest.version} is ${slot.state}`,
    );
    const caller: BridgeCaller = {
      address: on?.address ?? "",
      session: on?.session ?? `module:${from.name}`,
      module: from.name,
    };
    const own = this.#issue({
      address: caller.address,
      session: caller.session,
      module: target,
      depth,
    });
    slot.calls++;
    let ok = false;
    try {
      const data = await instance.call(
        command,
        { ...caller, ticket: own },
        params,
      );
      ok = true;
      return data;
    } catch (error) {
      slot.errors++;
      throw error;
    } finally {
      this.#tickets.delete(own);
      this.#observer?.called(target, "call", ok);
    }
  }

  /**
   * A module's event (`modules.emit`), declared in its `events`, handed to
   * the default version of every module whose `subscribes` names it; not
   * waited for (a subscriber's failure is its own, told to `failed`).
   */
  emit(
    from: Manifest,
    event: string,
    data: unknown,
    failed: (module: string, error: unknown) => void,
  ): number {
    if (!from.events.includes(event)) {
      throw forbidden(`event "${event}" is not declared in the manifest`);
    }
    let reached = 0;
    for (const name of this.#table.names()) {
      let slot: Slot;
      try {
        slot = this.pick(name);
      } catch {
        continue;
      }
      if (!slot.manifest.subscribes[from.name]?.includes(event)) continue;
      const instance = slot.instance;
      if (!instance || instance.state !== "ready") {
        failed(name, unavailable(`module ${name} is ${slot.state}`));
        continue;
      }
      reached++;
      instance.event(
        { address: "", session: `module:${from.name}`, module: from.name },
        event,
        data,
      ).catch((error) => failed(name, error));
    }
    return reached;
  }

  /** A new ticket for a call in progress. */
  #issue(ticket: Ticket): string {
    const id = crypto.randomUUID();
    this.#tickets.set(id, ticket);
    return id;
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
