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
 * and speaks BSON to the core either way. Handlers get the parameters the
 * client sent and a context whose caller the core set from the token.
 *
 * @module
 */

import {
  decodeDocument,
  type Document,
  encodeDocument,
  FrameDecoder,
} from "../../core/wire/mod.ts";
import { type BridgeCaller, MODULE_LIMITS } from "../bridge.ts";
import { TokenBucket } from "../../shared/token_bucket.ts";
import { ModuleError } from "./error.ts";
import { KvStorage, type ModuleStorage } from "./storage.ts";

export { ModuleError } from "./error.ts";

export type {
  AtomicOp,
  ModuleStorage,
  StorageEntry,
  StorageKey,
} from "./storage.ts";
export { StorageError } from "./storage.ts";

/** Where one written address leads (see core/routing). */
export type { Resolution } from "../../core/routing/mod.ts";
import type { Resolution } from "../../core/routing/mod.ts";

/** What a handler knows besides its parameters. */
export interface ModuleContext {
  /** The authenticated caller, set by the core. */
  caller: BridgeCaller;
  /** The module's storage. */
  storage: ModuleStorage;
  /** Push an event (declared in the manifest) to every live session of an address. */
  push(address: string, event: string, data: unknown): Promise<number>;
  /** Resolve recipient addresses (manifest service `accounts.resolve`). */
  resolve(addresses: string[]): Promise<Resolution[]>;
  /** Queue a payload for remote addresses (manifest service `federation.send`). */
  sendRemote(
    delivery: { from: string; to: string[]; id: string; payload: unknown },
  ): Promise<string[]>;
  /** Log through the server's log. */
  log(
    level: "info" | "warn" | "error",
    event: string,
    fields?: Record<string, string | number | boolean>,
  ): void;
}

/** A command handler. */
export type Handler = (
  params: Record<string, unknown>,
  ctx: ModuleContext,
) => unknown;

/** A delivery from another server, or a bounce of one of ours. */
export interface InboundDelivery {
  /** `deliver`: a payload from another server for local recipients; `bounce`: a payload of ours that could not be delivered. */
  kind: "deliver" | "bounce";
  /** Sender address. */
  from: string;
  /** Recipients (`deliver`: local; `bounce`: the remote ones that failed). */
  to: string[];
  /** Delivery id (idempotency). */
  id: string;
  /** The payload the sending module queued. */
  payload: unknown;
  /** `bounce`: why, per recipient. */
  failures?: { address: string; error: number; message: string }[];
  /** `deliver`: the authenticated sending server. */
  peer?: string;
  /** `deliver`: the domain that server authenticated for (the origin of what it delivers). */
  peer_domain?: string;
}

/** Result of an inbound delivery, per recipient. */
export interface InboundResult {
  /** One entry per recipient of `to`. */
  recipients: {
    address: string;
    status: "delivered" | "failed";
    error?: number;
    message?: string;
  }[];
}

/** A module: its command handlers. */
export interface ModuleDefinition {
  /** Handlers by command name (the manifest lists the same names). */
  commands: Record<string, Handler>;
  /**
   * Deliveries from other servers and bounces (modules that federate). The
   * context's caller is the sender (`deliver`) or the local sender of the
   * bounced payload (`bounce`).
   */
  inbound?: (
    delivery: InboundDelivery,
    ctx: ModuleContext,
  ) => Promise<InboundResult>;
}

interface Port {
  send(doc: Document): void;
  listen(handler: (doc: Document) => void): void;
}

function workerPort(): Port {
  const scope = globalThis as unknown as {
    postMessage(data: unknown, transfer?: Transferable[]): void;
    onmessage: ((event: MessageEvent) => void) | null;
  };
  return {
    send: (doc) => {
      // An exact buffer, moved (BSON's output views a shared 8 KiB pool).
      const bytes = new Uint8Array(encodeDocument(doc));
      scope.postMessage(bytes, [bytes.buffer]);
    },
    listen: (handler) => {
      scope.onmessage = (event) =>
        handler(decodeDocument(new Uint8Array(event.data)));
    },
  };
}

function processPort(): Port {
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

/** Start serving a module definition (call once, from the module's entry file). */
export function serveModule(definition: ModuleDefinition): void {
  const port = inWorker() ? workerPort() : processPort();
  let nextId = 1;
  const waiting = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: Error) => void }
  >();
  // At most MODULE_LIMITS.requests requests are outstanding; more wait here
  // (the host counts any past the cap as a violation).
  const queued: (() => void)[] = [];
  const request = (op: string, fields: Document): Promise<unknown> => {
    return new Promise((resolve, reject) => {
      const send = () => {
        const id = nextId++;
        waiting.set(id, { resolve, reject });
        port.send({ ...fields, t: "request", id, op });
      };
      if (waiting.size < MODULE_LIMITS.requests) send();
      else queued.push(send);
    });
  };
  // Log lines past the rate are dropped here, and counted in a later line.
  const logBudget = new TokenBucket(
    MODULE_LIMITS.logPerSecond,
    MODULE_LIMITS.logBurst,
  );
  let logsDropped = 0;
  const log: ModuleContext["log"] = (level, event, fields = {}) => {
    if (logsDropped > 0 && logBudget.take(2)) {
      port.send({
        t: "log",
        level: "warn",
        event: "log_dropped",
        fields: { lines: logsDropped },
      });
      logsDropped = 0;
    } else if (logsDropped > 0 || !logBudget.take()) {
      logsDropped++;
      return;
    }
    port.send({ t: "log", level, event, fields });
  };
  // The host names the module's own database in `init`, before any call;
  // without one, storage goes through the core (`storage.*` requests).
  let opened: (store: ModuleStorage) => void;
  const store = new Promise<ModuleStorage>((resolve) => opened = resolve);
  const bridged: ModuleStorage = {
    get: async (key) =>
      ((await request("storage.get", { key })) as { entry: never }).entry,
    getMany: async (keys) =>
      ((await request("storage.getMany", { keys })) as { entries: never })
        .entries,
    set: async (key, value) => {
      await request("storage.set", { key, value });
    },
    delete: async (key) => {
      await request("storage.delete", { key });
    },
    list: async (prefix, options = {}) =>
      await request("storage.list", { prefix, ...options }) as never,
    atomic: async (ops) => (await bridged.commit(ops)) !== null,
    commit: async (ops) =>
      ((await request("storage.commit", { ops })) as {
        versionstamp: string | null;
      }).versionstamp,
  };
  const storage: ModuleStorage = {
    get: async (key) => await (await store).get(key),
    getMany: async (keys) => await (await store).getMany(keys),
    set: async (key, value) => await (await store).set(key, value),
    delete: async (key) => await (await store).delete(key),
    list: async (prefix, options) => await (await store).list(prefix, options),
    atomic: async (ops) => await (await store).atomic(ops),
    commit: async (ops) => await (await store).commit(ops),
  };
  port.listen(async (doc) => {
    switch (doc.t) {
      case "init": {
        const init = doc.storage as {
          path?: string;
          name: string;
          quota: number;
        };
        opened(
          init.path
            ? new KvStorage(await Deno.openKv(init.path), init.name, init.quota)
            : bridged,
        );
        port.send({ t: "initialized" });
        return;
      }
      case "ping":
        port.send({ t: "pong", id: doc.id });
        return;
      case "reply": {
        const entry = waiting.get(doc.id as number);
        if (!entry) return;
        waiting.delete(doc.id as number);
        queued.shift()?.();
        if (doc.error) {
          entry.reject(
            new ModuleError(String(doc.error), String(doc.message ?? "")),
          );
        } else entry.resolve(doc.data);
        return;
      }
      case "call": {
        const inbound = doc.command === "$inbound"
          ? definition.inbound
          : undefined;
        const handler: Handler | undefined = inbound
          ? (params, ctx) => inbound(params as unknown as InboundDelivery, ctx)
          : Object.hasOwn(definition.commands, doc.command as string)
          ? definition.commands[doc.command as string]
          : undefined;
        if (!handler) {
          port.send({
            t: "error",
            id: doc.id,
            code: "unknown_command",
            message: `no command ${doc.command}`,
          });
          return;
        }
        const caller = doc.caller as BridgeCaller;
        const ctx: ModuleContext = {
          caller,
          storage,
          push: async (address, event, data) =>
            ((await request("push", { address, event, data })) as {
              delivered: number;
            }).delivered,
          resolve: async (addresses) =>
            ((await request("accounts.resolve", { addresses })) as {
              resolutions: Resolution[];
            }).resolutions,
          sendRemote: async (delivery) =>
            ((await request("federation.send", {
              from: delivery.from,
              to: delivery.to,
              delivery_id: delivery.id,
              payload: delivery.payload,
            })) as { queued: string[] }).queued,
          log,
        };
        try {
          const data = await handler(
            (doc.params ?? {}) as Record<string, unknown>,
            ctx,
          );
          port.send({
            t: "result",
            id: doc.id,
            data: data === undefined ? null : data,
          });
        } catch (error) {
          const err = error as Error & { code?: string; data?: unknown };
          const code = err?.name === "NotCapable"
            ? "not_capable"
            : error instanceof ModuleError
            ? err.code
            : "handler_failed";
          port.send({
            t: "error",
            id: doc.id,
            code,
            message: String(err?.message ?? error).slice(0, 500),
            data: error instanceof ModuleError ? err.data ?? null : null,
          });
        }
        return;
      }
    }
  });
  port.send({ t: "ready", commands: Object.keys(definition.commands) });
}
