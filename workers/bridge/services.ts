/**
 * The bridge between the core and a module, declared once: what the core
 * offers a module ({@link CoreServices}, {@link CORE_SERVICES}) and what a
 * module offers the core ({@link ModuleOffers}, {@link MODULE_OFFERS}), with
 * the types of their arguments and results. Both sides are built from this
 * file: the host checks a module's calls against it and serves them through
 * one implementation (server/module_services.ts), the SDK builds a
 * handler's context from it, and the manifest's `services` are the grants it
 * names. Every call travels in the envelope of envelope.ts.
 *
 * Adding a core service: a method in {@link CoreServices}, its entry in
 * {@link CORE_SERVICES}, and its implementation. Nothing else changes: the
 * SDK's context, the host's checks and the manifest's grants follow.
 *
 * @module
 */

import type { Resolution } from "../../core/routing/mod.ts";
import type {
  BlobRef,
  ComposeRequest,
  EmailAuth,
  EmailIn,
  EmailPayload,
  InboundDelivery,
  InboundResult,
  MailHost,
  TransportRecipient,
  TransportRequest,
  TransportResult,
} from "../../core/federation/delivery.ts";
import type { Document } from "../../core/wire/mod.ts";
import type { AtomicOp, ModuleStorage, StorageKey } from "../sdk/storage.ts";
import {
  any,
  args,
  boolean,
  bytes,
  type Check,
  list,
  number,
  object,
  oneOf,
  optional,
  record,
  string,
} from "./checks.ts";

export type {
  ComposeRequest,
  EmailAuth,
  EmailIn,
  EmailPayload,
  InboundDelivery,
  InboundResult,
  MailHost,
  Resolution,
  TransportRecipient,
  TransportRequest,
  TransportResult,
};

/** Largest message that crosses the bridge in one call (an email, raw). */
export const MAX_MESSAGE_BYTES = 15 * 1024 * 1024;

/** A gateway's checks of a received message, each field bounded (a gateway is not trusted blindly). */
const emailAuth: Check<EmailAuth> = object({
  client_ip: string(64),
  helo: string(255),
  tls: boolean,
  spf: object({ result: string(32), domain: string(255) }),
  dkim: list(
    object({ result: string(32), domain: string(255), selector: string(255) }),
    10,
  ),
  dmarc: object({
    result: string(32),
    domain: string(255),
    policy: string(32),
  }),
  arc: object({ result: string(32) }),
  summary: string(2000),
});

/** How a remote address is reached (`federation.routes`): `unknown` when DNS failed. */
export type Route = "amtp" | "email" | "none" | "unknown";

/** The server's certificate, for a module that serves TLS (`tls.certificate`). */
export interface TlsCertificate {
  /** The PEM chain. */
  cert: string;
  /** The PEM private key. */
  key: string;
  /** SHA-256 of the leaf (hex): changes when the certificate is renewed. */
  sha256: string;
}

/**
 * The caller of a module command, set by the core: from the token for a
 * client's call, from the calling module's identity for a call or an event
 * of another module (`modules.call`, `modules.emit`). Nothing a module sends
 * can set it.
 */
export interface BridgeCaller {
  /**
   * The user's address (a delivery's sender for `inbound`); for a call from
   * another module, the user on whose behalf it calls (the core checked it
   * serves a call of that user), or "" when the module calls as itself.
   */
  address: string;
  /** The client session the request came on (`peer:HOST` for `inbound`, `module:NAME` for a module calling as itself). */
  session: string;
  /** For a call or an event from another module: that module's name. Absent for clients and the core. */
  module?: string;
  /**
   * Opaque, valid while this call runs: handed back with `modules.call`, it
   * lets the module call another on this same caller's behalf (the SDK does
   * so by itself). Absent where there is no user (deliveries, events).
   */
  ticket?: string;
}

/** What a module queues for remote addresses (`federation.send`). */
export interface RemoteDelivery {
  /** Sender address (a local user). */
  from: string;
  /** Remote recipients, on any number of domains. */
  to: string[];
  /** Delivery id chosen by the module (idempotency across retries). */
  id: string;
  /** The payload the receiving server's module gets. */
  payload: unknown;
  /** Blobs (attachments) the receiving server must hold before the payload is delivered. */
  blobs?: BlobRef[];
}

/** Log levels a module may use. */
export type ModuleLogLevel = "info" | "warn" | "error";

/** Fields of a module's log line. */
export type ModuleLogFields = Record<string, string | number | boolean>;

/**
 * What the core offers a module. A dotted name is a member of a group in
 * the handler's context (`storage.get` is `ctx.storage.get`); the name is
 * also the method on the wire and, for a {@link Grant} of `declared`, what
 * the manifest's `services` lists.
 */
export interface CoreServices {
  /** Push an event (declared in the manifest) to every live session of an address; resolves to the sessions reached. */
  push(address: string, event: string, data: unknown): Promise<number>;
  /** A line in the server log (no answer; past the rate it is dropped). */
  log(level: ModuleLogLevel, event: string, fields?: ModuleLogFields): void;
  /** Resolve written addresses: local mailboxes (aliases, catch-all applied), remote addresses, or why not. */
  "accounts.resolve"(addresses: string[]): Promise<Resolution[]>;
  /** The public profile of a local user (what `user_userinfo` answers), or null when there is none. */
  "accounts.profile"(address: string): Promise<Record<string, unknown> | null>;
  /** Queue a payload durably for remote recipients, one item per domain; resolves to the item ids. */
  "federation.send"(delivery: RemoteDelivery): Promise<string[]>;
  /** How each remote address would be reached: AMTP, ordinary email (SMTP), not at all (`none`), or `unknown`. */
  "federation.routes"(addresses: string[]): Promise<Route[]>;
  /** Hand a message received by email to the local mailboxes; durable when it resolves. */
  "mail.deliver"(message: EmailIn): Promise<InboundResult>;
  /** The server's current TLS certificate and key (renewed ones included). */
  "tls.certificate"(): Promise<TlsCertificate>;
  /**
   * Call another module's command: allowed when this manifest's `calls`
   * names it and the other's `exports` lists it. With the ticket of the
   * handler's caller, the callee sees that user as its caller; without, the
   * calling module itself. The callee's `caller.module` is always this
   * module's name. (The SDK's `ctx.modules.call(module, command, params)`
   * passes the ticket by itself.)
   */
  "modules.call"(
    module: string,
    command: string,
    params: Document,
    ticket?: string,
  ): Promise<unknown>;
  /**
   * Emit an event (declared in this manifest's `events`) to every module
   * whose `subscribes` names it; not answered, not waited for.
   */
  "modules.emit"(event: string, data: unknown): void;
  /** Storage through the core (`AMTP_MODULE_STORAGE=core`): the module's namespace in the core's database. */
  "storage.get": ModuleStorage["get"];
  /** See {@link ModuleStorage.getMany}. */
  "storage.getMany": ModuleStorage["getMany"];
  /** See {@link ModuleStorage.set}. */
  "storage.set": ModuleStorage["set"];
  /** See {@link ModuleStorage.delete}. */
  "storage.delete": ModuleStorage["delete"];
  /** See {@link ModuleStorage.list}. */
  "storage.list": ModuleStorage["list"];
  /** See {@link ModuleStorage.atomic}. */
  "storage.atomic": ModuleStorage["atomic"];
  /** See {@link ModuleStorage.commit}. */
  "storage.commit": ModuleStorage["commit"];
}

/**
 * Who may call a core service: `always` every module; `declared` a module
 * whose manifest lists the service in `services`; `core storage` a module
 * whose storage goes through the core.
 */
export type Grant = "always" | "declared" | "core storage";

/** How one method is called: who may, its arguments, and whether it is answered. */
export interface ServiceSpec<A extends unknown[]> {
  /** Who may call it. */
  grant: Grant;
  /** The arguments, checked before the implementation runs. */
  args: Check<A>;
  /** A notification: sent with id 0, never answered. */
  notify?: true;
}

const address = string(320);
const key: Check<StorageKey> = list(any<string | number>(), 8);
const storage = <A extends unknown[]>(check: Check<A>): ServiceSpec<A> => ({
  grant: "core storage",
  args: check,
});

/** The runtime half of {@link CoreServices}: grants and argument checks. */
export const CORE_SERVICES: {
  [M in keyof CoreServices]: ServiceSpec<Parameters<CoreServices[M]>>;
} = {
  push: { grant: "always", args: args(address, string(64), any()) },
  log: {
    grant: "always",
    notify: true,
    args: args(
      oneOf("info", "warn", "error"),
      string(64),
      optional(record(any<string | number | boolean>(), 64)),
    ),
  },
  "accounts.resolve": { grant: "declared", args: args(list(address, 1000)) },
  "accounts.profile": { grant: "declared", args: args(address) },
  "federation.send": {
    grant: "declared",
    args: args(
      object({
        from: address,
        to: list(address, 1000),
        id: string(128),
        payload: any(),
        blobs: optional(list(
          object({ id: string(64), sha256: string(64), size: number }),
          32,
        )),
      }),
    ),
  },
  "federation.routes": {
    grant: "declared",
    args: args(list(address, 1000)),
  },
  "mail.deliver": {
    grant: "declared",
    args: args(
      object({
        mail_from: string(320),
        to: list(address, 1000),
        raw: bytes(MAX_MESSAGE_BYTES),
        auth: emailAuth,
      }),
    ),
  },
  "tls.certificate": { grant: "declared", args: args() },
  // Checked against both manifests by the implementation (`calls`,
  // `exports`, `events`, `subscribes`), not by `services`.
  "modules.call": {
    grant: "always",
    args: args(
      string(64),
      string(64),
      record(any(), 256),
      optional(string(64)),
    ),
  },
  "modules.emit": {
    grant: "always",
    notify: true,
    args: args(string(64), any()),
  },
  "storage.get": storage(args(key)),
  "storage.getMany": storage(args(list(key, 1000))),
  "storage.set": storage(args(key, any())),
  "storage.delete": storage(args(key)),
  "storage.list": storage(args(
    key,
    optional(object({
      limit: optional(number),
      cursor: optional(string(1024)),
      reverse: optional(boolean),
      start: optional(key),
      end: optional(key),
    })),
  )),
  "storage.atomic": storage(args(list(any<AtomicOp>(), 900))),
  "storage.commit": storage(args(list(any<AtomicOp>(), 900))),
};

/** A core service's name. */
export type ServiceName = keyof CoreServices;

/** Services a manifest may list in `services` (those granted `declared`). */
export const DECLARABLE_SERVICES = (Object.keys(CORE_SERVICES) as ServiceName[])
  .filter((name) => CORE_SERVICES[name].grant === "declared");

/** Where a module's storage is, told in `start`. */
export interface ModuleStorageInit {
  /** The module's own KV database; absent: storage goes through the core. */
  path?: string;
  /** The module's name (its namespace). */
  name: string;
  /** Quota in bytes. */
  quota: number;
}

/** What `start` tells a module. */
export interface ModuleStart {
  /** The commands its manifest lists in `commands` and `exports`: the module refuses to start unless it has exactly these handlers. */
  commands: string[];
  /** Its storage. */
  storage: ModuleStorageInit;
}

/** What a module answers `start` with. */
export interface ModuleStarted {
  /** Whether it has an `inbound` handler (deliveries from other servers, bounces, email). */
  inbound: boolean;
  /** Whether it composes its queued payloads as Internet messages (`compose`). */
  compose?: boolean;
  /** Whether it carries outbound routes (`transport`, the manifest's `transports`). */
  transport?: boolean;
}

/**
 * What a module offers the core: its life cycle (`start` once it said
 * `ready`, `ping` as a heartbeat), its commands (`call`) and deliveries from
 * other servers (`inbound`).
 */
export interface ModuleOffers {
  /** Open storage and check the handlers against the manifest; a mismatch is refused (`manifest_mismatch`). */
  start(init: ModuleStart): Promise<ModuleStarted>;
  /** Run a command for a caller. */
  call(
    command: string,
    caller: BridgeCaller,
    params: Document,
  ): Promise<unknown>;
  /** Take a delivery from another server, a bounce, or a message received by email. */
  inbound(
    caller: BridgeCaller,
    delivery: InboundDelivery,
  ): Promise<InboundResult>;
  /** Compose one of its queued payloads as an Internet message (RFC 5322), for the email route. */
  compose(
    caller: BridgeCaller,
    request: ComposeRequest,
  ): Promise<{ raw: Uint8Array }>;
  /** Carry a message over a route its manifest names in `transports` (a gateway's outbound side). */
  transport(request: TransportRequest): Promise<TransportResult>;
  /**
   * An event of another module this one subscribes to (`subscribes`); the
   * caller names the emitting module (`caller.module`).
   */
  event(caller: BridgeCaller, event: string, data: unknown): Promise<null>;
  /** Answer at once (heartbeat). */
  ping(): Promise<null>;
}

/** How the core checks what a module answers. */
export interface OfferSpec<R> {
  /** The module's answer, checked before the core uses it. */
  result: Check<R>;
}

/** The runtime half of {@link ModuleOffers}: checks of the answers. */
export const MODULE_OFFERS: {
  [M in keyof ModuleOffers]: OfferSpec<Awaited<ReturnType<ModuleOffers[M]>>>;
} = {
  start: {
    result: object({
      inbound: boolean,
      compose: optional(boolean),
      transport: optional(boolean),
    }),
  },
  call: { result: any() },
  inbound: {
    result: object({
      recipients: list(
        object({
          address: string(320),
          status: oneOf("delivered", "failed"),
          error: optional(number),
          message: optional(string(1000)),
        }),
        1000,
      ),
      blob: optional(
        object({ offset: number, data: optional(bytes(1024 * 1024)) }),
      ),
    }),
  },
  compose: { result: object({ raw: bytes(MAX_MESSAGE_BYTES) }) },
  transport: {
    result: object({
      recipients: list(
        object({
          address: string(320),
          status: oneOf("delivered", "failed", "deferred"),
          reply: string(2000),
        }),
        1000,
      ),
    }),
  },
  event: { result: () => null },
  ping: { result: () => null },
};

/**
 * The module's first message, once its SDK listens: a notification
 * (`{t: "rpc", id: 0, method: "ready", args: []}`); the core answers with
 * `start`.
 */
export const READY = "ready";
