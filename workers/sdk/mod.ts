/**
 * The module SDK: what a module author imports.
 *
 * ```ts
 * import { ModuleError, serveModule } from "../../../workers/sdk/mod.ts";
 *
 * serveModule({
 *   commands: {
 *     async echo(params, ctx) {
 *       await ctx.storage.set(["last", ctx.caller.address], params.text);
 *       await ctx.push(ctx.caller.address, "echoed", { text: params.text });
 *       return { text: params.text, caller: ctx.caller.address };
 *     },
 *   },
 * });
 * ```
 *
 * The same code runs in a Worker or in a subprocess; the SDK finds out which
 * and speaks the bridge (workers/bridge) to the core either way. Handlers get
 * the parameters the client sent and a context built from the bridge's
 * declaration of the core's services, whose caller the core set from the
 * token. At start the SDK checks its handlers against the manifest's
 * `commands` and refuses to start when they differ.
 *
 * @module
 */

import {
  decodeDocument,
  type Document,
  encodeDocument,
  FrameDecoder,
} from "../../core/wire/mod.ts";
import { TokenBucket } from "../../shared/token_bucket.ts";
import { Endpoint, RemoteError } from "../bridge/endpoint.ts";
import { MODULE_LIMITS } from "../bridge/envelope.ts";
import { postDocument, receivedDocument } from "../bridge/post.ts";
import {
  type BridgeCaller,
  type ComposeRequest,
  CORE_SERVICES,
  type CoreServices,
  type InboundDelivery,
  type InboundResult,
  type ModuleOffers,
  READY,
  type ServiceName,
  type TransportRequest,
  type TransportResult,
} from "../bridge/services.ts";
import { ModuleError } from "./error.ts";
import { KvStorage } from "./storage.ts";

export { ModuleError } from "./error.ts";
export {
  GroupCommit,
  type GroupHooks,
  type Verdict,
} from "../../shared/group_commit.ts";
export { ErrorCode } from "../../shared/errors.ts";
export type {
  AtomicOp,
  ModuleStorage,
  StorageEntry,
  StorageKey,
} from "./storage.ts";
export { StorageError } from "./storage.ts";
export type {
  BridgeCaller,
  ComposeRequest,
  EmailAuth,
  EmailIn,
  EmailPayload,
  InboundDelivery,
  InboundResult,
  MailHost,
  RemoteDelivery,
  Resolution,
  Route,
  TlsCertificate,
  TransportRecipient,
  TransportRequest,
  TransportResult,
} from "../bridge/services.ts";
export { MAX_MESSAGE_BYTES } from "../bridge/services.ts";

type Group<K> = K extends `${infer G}.${string}` ? G : never;
type Member<K, G extends string> = K extends `${G}.${infer M}` ? M : never;

/**
 * The core's services as a handler's context holds them: a dotted name is a
 * member of its group (`accounts.resolve` is `ctx.accounts.resolve`).
 */
export type Services =
  & {
    [K in keyof CoreServices as K extends `${string}.${string}` ? never : K]:
      CoreServices[K];
  }
  & {
    [G in Group<keyof CoreServices>]: {
      [K in keyof CoreServices as Member<K, G>]: CoreServices[K];
    };
  };

/**
 * What a handler knows besides its parameters: the caller, and every core
 * service of the bridge (`push`, `log`, `storage`, `accounts.resolve`,
 * `federation.send`, ...; those the manifest must grant say so in
 * docs/MODULES.md).
 */
export type ModuleContext = Services & {
  /** The authenticated caller, set by the core. */
  caller: BridgeCaller;
};

/** A command handler. */
export type Handler = (
  params: Record<string, unknown>,
  ctx: ModuleContext,
) => unknown;

/** A handler of another module's event; `ctx.caller.module` names the emitter. */
export type EventHandler = (
  data: unknown,
  ctx: ModuleContext,
) => Promise<void> | void;

/** A module: its command handlers, and its handler of deliveries if it federates. */
export interface ModuleDefinition {
  /**
   * Handlers by command name: exactly the manifest's `commands` and
   * `exports`. A command another module calls sees that module in
   * `ctx.caller.module` (set by the core), and in `ctx.caller.address` the
   * user on whose behalf it calls, or "" when it calls as itself.
   */
  commands: Record<string, Handler>;
  /**
   * Handlers of other modules' events, by `"module.event"` (what the
   * manifest's `subscribes` names); an event without a handler is ignored.
   */
  events?: Record<string, EventHandler>;
  /**
   * Deliveries from other servers, bounces and email (modules that
   * federate). The context's caller is the sender (`deliver`, `email`) or
   * the local sender of the bounced payload (`bounce`).
   */
  inbound?: (
    delivery: InboundDelivery,
    ctx: ModuleContext,
  ) => Promise<InboundResult>;
  /**
   * Compose a payload this module queued (`federation.send`) as an Internet
   * message (RFC 5322), when its destination is reached by email. The
   * context's caller is the sender.
   */
  compose?: (
    request: ComposeRequest,
    ctx: ModuleContext,
  ) => Promise<{ raw: Uint8Array }>;
  /**
   * Carry a message over a route the manifest names in `transports` (a
   * gateway's outbound side); answers per recipient.
   */
  transport?: (
    request: TransportRequest,
    ctx: ModuleContext,
  ) => Promise<TransportResult>;
  /**
   * Run once the core started the module (its services usable), before it
   * counts as ready: a gateway starts listening here. A failure fails the
   * start (the copy is restarted with backoff).
   */
  start?: (ctx: ModuleContext) => Promise<void>;
}

/** The caller of what a module does on its own (`start`, `transport`). */
const MODULE_CALLER: BridgeCaller = { address: "", session: "module" };

/**
 * Where the module's documents go and come from: a Worker's messages or a
 * process's standard input and output (found by {@link serveModule}), or any
 * other carrier of BSON documents.
 */
export interface ModulePort {
  /** Send one document to the core. */
  send(doc: Document): void;
  /** Receive the core's documents. */
  listen(handler: (doc: Document) => void): void;
}

function workerPort(): ModulePort {
  const scope = globalThis as unknown as {
    postMessage(data: unknown, transfer?: Transferable[]): void;
    onmessage: ((event: MessageEvent) => void) | null;
  };
  return {
    send: (doc) =>
      postDocument(
        (bytes, transfer) => scope.postMessage(bytes, transfer),
        doc,
      ),
    listen: (handler) => {
      scope.onmessage = (event) => handler(receivedDocument(event.data));
    },
  };
}

function processPort(): ModulePort {
  // stdout carries frames: keep console output off it.
  console.log = console.error;
  console.info = console.error;
  const out = Deno.stdout;
  let chain = Promise.resolve();
  return {
    send: (doc) => {
      const frame = encodeDocument(doc);
      chain = chain.then(async () => {
        let written = 0;
        while (written < frame.length) {
          written += await out.write(frame.subarray(written));
        }
      });
    },
    listen: (handler) => {
      (async () => {
        const decoder = new FrameDecoder(64 * 1024 * 1024);
        for await (const chunk of Deno.stdin.readable) {
          for (const frame of decoder.pushOrThrow(chunk)) {
            handler(decodeDocument(frame));
          }
        }
        Deno.exit(0);
      })();
    },
  };
}

function inWorker(): boolean {
  return typeof (globalThis as { WorkerGlobalScope?: unknown })
    .WorkerGlobalScope !== "undefined";
}

/** An error of the core, rethrown as the module's own (same code). */
function asModuleError(error: unknown): never {
  throw error instanceof RemoteError
    ? new ModuleError(error.code, error.message, error.data)
    : error;
}

/** The core's services over `endpoint`, grouped as the context holds them. */
function services(endpoint: Endpoint): Services {
  const out: Record<string, Record<string, unknown> | unknown> = {};
  for (const name of Object.keys(CORE_SERVICES) as ServiceName[]) {
    const method = CORE_SERVICES[name].notify
      ? (...args: unknown[]) => endpoint.notify(name, args)
      : (...args: unknown[]) => endpoint.call(name, args).catch(asModuleError);
    const dot = name.indexOf(".");
    if (dot < 0) out[name] = method;
    else {
      const group = (out[name.slice(0, dot)] ??= {}) as Record<string, unknown>;
      group[name.slice(dot + 1)] = method;
    }
  }
  return out as Services;
}

/** Log lines past the rate are dropped here, and counted in a later line. */
function rateLimited(log: CoreServices["log"]): CoreServices["log"] {
  const budget = new TokenBucket(
    MODULE_LIMITS.logPerSecond,
    MODULE_LIMITS.logBurst,
  );
  let dropped = 0;
  return (level, event, fields = {}) => {
    if (dropped > 0 && budget.take(2)) {
      log("warn", "log_dropped", { lines: dropped });
      dropped = 0;
    } else if (dropped > 0 || !budget.take()) {
      dropped++;
      return;
    }
    log(level, event, fields);
  };
}

/** Why the handlers do not match the manifest's commands, or undefined when they do. */
function mismatch(
  listed: string[],
  commands: Record<string, Handler>,
): string | undefined {
  const handled = Object.keys(commands);
  const missing = listed.filter((c) => !Object.hasOwn(commands, c));
  const extra = handled.filter((c) => !listed.includes(c));
  if (missing.length === 0 && extra.length === 0) return undefined;
  const names = (list: string[]) => list.map((c) => `"${c}"`).join(", ");
  return [
    missing.length &&
    `module.json lists ${names(missing)} but serveModule has no handler for ${
      missing.length > 1 ? "them" : "it"
    }`,
    extra.length &&
    `serveModule handles ${names(extra)} that module.json does not list`,
  ].filter(Boolean).join("; ");
}

/**
 * Start serving a module definition (call once, from the module's entry
 * file). The port is the Worker's or the process's, unless one is given.
 */
export function serveModule(
  definition: ModuleDefinition,
  port: ModulePort = inWorker() ? workerPort() : processPort(),
): void {
  let base: Services | undefined;
  const context = (caller: BridgeCaller): ModuleContext => {
    if (!base) {
      throw new ModuleError("handler_failed", "the module has not started");
    }
    const call = base.modules.call;
    // Calls to other modules go on this caller's behalf (its ticket); ""
    // calls as the module itself.
    return {
      ...base,
      caller,
      modules: {
        ...base.modules,
        call: (module, command, params, ticket = caller.ticket) =>
          call(module, command, params ?? {}, ticket || undefined),
      },
    };
  };
  const offers: ModuleOffers = {
    start: async (init) => {
      const wrong = mismatch(init.commands, definition.commands);
      if (wrong) throw new ModuleError("manifest_mismatch", wrong);
      const core = services(endpoint);
      // The host names the module's own database, or none: storage then
      // goes through the core.
      const storage = init.storage.path
        ? new KvStorage(
          await Deno.openKv(init.storage.path),
          init.storage.name,
          init.storage.quota,
        )
        : core.storage;
      base = { ...core, storage, log: rateLimited(core.log) };
      await definition.start?.(context(MODULE_CALLER));
      return {
        inbound: definition.inbound !== undefined,
        compose: definition.compose !== undefined,
        transport: definition.transport !== undefined,
      };
    },
    call: async (command, caller, params) => {
      if (!Object.hasOwn(definition.commands, command)) {
        throw new ModuleError("unknown_command", `no command ${command}`);
      }
      return await definition.commands[command](
        (params ?? {}) as Record<string, unknown>,
        context(caller),
      );
    },
    inbound: async (caller, delivery) => {
      if (!definition.inbound) {
        throw new ModuleError("unknown_command", "no inbound handler");
      }
      return await definition.inbound(delivery, context(caller));
    },
    compose: async (caller, request) => {
      if (!definition.compose) {
        throw new ModuleError("unknown_command", "no compose handler");
      }
      return await definition.compose(request, context(caller));
    },
    transport: async (request) => {
      if (!definition.transport) {
        throw new ModuleError("unknown_command", "no transport handler");
      }
      return await definition.transport(request, context(MODULE_CALLER));
    },
    event: async (caller, event, data) => {
      const handler = definition.events?.[`${caller.module}.${event}`];
      if (handler) await handler(data, context(caller));
      return null;
    },
    ping: () => Promise.resolve(null),
  };
  const endpoint: Endpoint = new Endpoint(port.send, {
    serve: (method, args) => {
      if (!Object.hasOwn(offers, method)) {
        throw new ModuleError("unknown_command", `no method ${method}`);
      }
      const offer = offers[method as keyof ModuleOffers] as (
        ...args: unknown[]
      ) => Promise<unknown>;
      return offer(...args);
    },
    // The SDK keeps within the host's cap: calls past it wait here.
    maxOutstanding: MODULE_LIMITS.requests,
  });
  port.listen((doc) => endpoint.receive(doc));
  endpoint.notify(READY, []);
}
