/**
 * The core's services for modules, implemented once: the bridge declares
 * them (workers/bridge/services.ts), the module host checks grants and
 * arguments before any of these runs (workers/services.ts), and each one gets
 * the calling module and its arguments.
 *
 * @module
 */

import type { PushBus } from "../core/cluster/mod.ts";
import { createHash } from "node:crypto";
import type { Store } from "../kv/mod.ts";
import {
  KvStorage,
  type Manifest,
  type ServiceImplementation,
} from "../workers/mod.ts";
import type {
  InboundDelivery,
  InboundResult,
} from "../core/federation/delivery.ts";
import type { Federation } from "../core/federation/mod.ts";
import type { ServerCertificate } from "../core/tls/mod.ts";
import { ErrorCode, ProtocolError } from "../core/protocol/mod.ts";
import { resolveRecipients } from "../core/routing/mod.ts";
import type { SessionRegistry } from "../core/session/mod.ts";
import { localProfile } from "../core/user/mod.ts";

/** The parts of the server the services use. */
export interface ServiceParts {
  /** Storage (accounts; modules' data when they store through the core). */
  store: Store;
  /** Live sessions (pushes). */
  registry: SessionRegistry;
  /** Largest frame a push may take. */
  maxFrame: number;
  /** Federation (the outbound queue). */
  federation: Federation;
  /** Told how many mailboxes here a module's resolution found (metrics). */
  resolved?: (mailboxes: number) => void;
  /** The certificate in use now (renewals included). */
  certificate: () => ServerCertificate;
  /** Hand a delivery to a module's `inbound` (mail received by email goes to {@link MAIL_MODULE}). */
  inbound: (
    module: string,
    delivery: InboundDelivery,
  ) => Promise<InboundResult>;
  /** Calls and events between modules (the router: workers/router.ts `callFrom`, `emit`). */
  modules: {
    call(
      from: Manifest,
      target: string,
      command: string,
      params: Record<string, unknown>,
      ticket?: string,
    ): Promise<unknown>;
    emit(
      from: Manifest,
      event: string,
      data: unknown,
      failed: (module: string, error: unknown) => void,
    ): number;
  };
  /** Pushes to the other instances sharing the database, when there are. */
  bus?: Pick<PushBus, "publish">;
  /** Told of every push a module makes (Web Push of new mail). */
  notify?: (
    address: string,
    module: string,
    event: string,
    data: unknown,
  ) => void;
}

/** The module that keeps mailboxes: mail received by email is delivered to it. */
export const MAIL_MODULE = "messages";

/** Every core service for modules. */
export function moduleServices(parts: ServiceParts): ServiceImplementation {
  // One storage per module in the core's database (its versions share it).
  const stores = new Map<string, KvStorage>();
  const storage = ({ name, storageQuota }: Manifest): KvStorage => {
    let kv = stores.get(name);
    if (!kv) {
      stores.set(name, kv = new KvStorage(parts.store.kv, name, storageQuota));
    }
    return kv;
  };
  return {
    push: async ({ manifest }, address, event, data) => {
      if (!manifest.events.includes(event)) {
        throw new ProtocolError(
          ErrorCode.INVALID_PARAMETER,
          `event "${event}" is not declared in the manifest`,
        );
      }
      parts.notify?.(address, manifest.name, event, data);
      const push = { event, module: manifest.name, data: data ?? null };
      const sent = await parts.registry.push(address, push, parts.maxFrame);
      // The user's sessions on other instances get it through the database.
      await parts.bus?.publish(address, push);
      return sent;
    },
    log: ({ log }, level, event, fields = {}) => {
      log[level](`module_${event}`, fields);
    },
    "accounts.resolve": async (_caller, addresses) => {
      const results = await resolveRecipients(parts.store.accounts, addresses);
      parts.resolved?.(
        results.reduce((n, r) => n + r.mailboxes.length, 0),
      );
      return results;
    },
    "accounts.profile": (_caller, address) =>
      localProfile(parts.store.accounts, address),
    "federation.send": ({ manifest }, delivery) =>
      parts.federation.enqueue({ module: manifest.name, ...delivery }),
    "federation.routes": (_caller, addresses) =>
      parts.federation.routes(addresses),
    "mail.deliver": async (_caller, message) => {
      const id = createHash("sha256").update(message.raw).digest("hex");
      // Resolved here and handed along: the messages module would
      // otherwise ask the core for the same, one more round trip.
      const resolutions = await resolveRecipients(
        parts.store.accounts,
        message.to,
      );
      parts.resolved?.(
        resolutions.reduce((n, r) => n + r.mailboxes.length, 0),
      );
      return await parts.inbound(MAIL_MODULE, {
        kind: "email",
        from: message.mail_from,
        to: message.to,
        id,
        payload: {
          raw: message.raw,
          auth: message.auth,
          received: new Date(),
          resolutions,
        },
      });
    },
    "tls.certificate": () => {
      const { certPem, keyPem, sha256 } = parts.certificate();
      return Promise.resolve({ cert: certPem, key: keyPem, sha256 });
    },
    "modules.call": ({ manifest }, target, command, params, ticket) =>
      parts.modules.call(manifest, target, command, params, ticket),
    "modules.emit": ({ manifest, log }, event, data) => {
      try {
        parts.modules.emit(
          manifest,
          event,
          data,
          (module, error) =>
            log.warn("module_event_failed", {
              event,
              subscriber: module,
              error: String(error).slice(0, 200),
            }),
        );
      } catch (error) {
        // A notification has no answer: the refusal is logged.
        log.warn("module_event_refused", {
          event,
          error: String(error).slice(0, 200),
        });
      }
    },
    "storage.get": ({ manifest }, key) => storage(manifest).get(key),
    "storage.getMany": ({ manifest }, keys) => storage(manifest).getMany(keys),
    "storage.set": ({ manifest }, key, value) =>
      storage(manifest).set(key, value),
    "storage.delete": ({ manifest }, key) => storage(manifest).delete(key),
    "storage.list": ({ manifest }, prefix, options) =>
      storage(manifest).list(prefix, options),
    "storage.atomic": ({ manifest }, ops) => storage(manifest).atomic(ops),
    "storage.commit": ({ manifest }, ops) => storage(manifest).commit(ops),
  };
}
