/**
 * The connected instances of one remote module version: calls go to the
 * instance with the fewest calls in flight (in turn among equals); an
 * instance whose link goes down leaves the pool (its calls in flight fail
 * with MODULE_UNAVAILABLE, instance.ts) and the others go on serving; with
 * none connected, calls fail at once with MODULE_UNAVAILABLE. A call is never
 * repeated on another instance: it may have done its work before the link
 * went down.
 *
 * @module
 */

import { ErrorCode, ProtocolError } from "../../core/protocol/mod.ts";
import type { ModuleCopy, ModuleInstance } from "../instance.ts";
import type { Manifest } from "../manifest.ts";
import type { LinkInfo } from "./link.ts";

/** One connected instance, as admins see it. */
export interface RemoteInstanceStatus {
  /** `unix`, `webtransport` or `websocket`. */
  transport: string;
  /** The module's address (`unix` on the socket). */
  address: string;
  /** The key it logged in with. */
  key_id: string;
  /** When it logged in. */
  since: Date;
  /** Calls in flight. */
  inflight: number;
  /** Calls it was given. */
  calls: number;
}

/** The instances of one remote module version. */
export class RemotePool implements ModuleCopy {
  readonly manifest: Manifest;
  readonly #members = new Map<
    ModuleInstance,
    LinkInfo & { calls: number }
  >();
  #turn = 0;
  #stopped = false;

  /** An empty pool for a version placed remote. */
  constructor(manifest: Manifest) {
    this.manifest = manifest;
  }

  /** `ready` while an instance is connected and started. */
  get state(): "starting" | "ready" | "down" {
    if (this.#stopped) return "down";
    for (const member of this.#members.keys()) {
      if (member.state === "ready") return "ready";
    }
    return "starting";
  }

  /** Whether the pool was stopped (the version left remote, or was unloaded). */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** Instances connected. */
  get size(): number {
    return this.#members.size;
  }

  /** Calls in flight on every instance. */
  get inflight(): number {
    let n = 0;
    for (const member of this.#members.keys()) n += member.inflight;
    return n;
  }

  get federates(): boolean {
    return this.#any((m) => m.federates);
  }

  get composes(): boolean {
    return this.#any((m) => m.composes);
  }

  get carries(): boolean {
    return this.#any((m) => m.carries);
  }

  #any(test: (member: ModuleInstance) => boolean): boolean {
    for (const member of this.#members.keys()) {
      if (member.state === "ready" && test(member)) return true;
    }
    return false;
  }

  /** Take a started instance; it leaves when it goes down. */
  add(instance: ModuleInstance, info: LinkInfo): void {
    if (this.#stopped) {
      instance.stop();
      return;
    }
    this.#members.set(instance, { ...info, calls: 0 });
  }

  /** Forget an instance (it went down). */
  remove(instance: ModuleInstance): void {
    this.#members.delete(instance);
  }

  /** The connected instances. */
  list(): RemoteInstanceStatus[] {
    return [...this.#members].map(([member, info]) => ({
      transport: info.transport,
      address: info.address,
      key_id: info.keyId,
      since: info.since,
      inflight: member.inflight,
      calls: info.calls,
    }));
  }

  /** The ready instance with the fewest calls in flight, in turn among equals. */
  #pick(): ModuleInstance {
    const ready = [...this.#members.keys()].filter((m) => m.state === "ready");
    if (ready.length === 0) {
      throw new ProtocolError(
        ErrorCode.MODULE_UNAVAILABLE,
        `module ${this.manifest.name} ${this.manifest.version} runs remote and no instance of it is connected`,
      );
    }
    const start = this.#turn++ % ready.length;
    let best = ready[start];
    for (let i = 1; i < ready.length; i++) {
      const member = ready[(start + i) % ready.length];
      if (member.inflight < best.inflight) best = member;
    }
    this.#members.get(best)!.calls++;
    return best;
  }

  // The module's offers (ModuleOffers, services.ts), each to one instance.
  call: ModuleCopy["call"] = (...a) => this.#pick().call(...a);
  inbound: ModuleCopy["inbound"] = (...a) => this.#pick().inbound(...a);
  compose: ModuleCopy["compose"] = (...a) => this.#pick().compose(...a);
  transport: ModuleCopy["transport"] = (...a) => this.#pick().transport(...a);
  event: ModuleCopy["event"] = (...a) => this.#pick().event(...a);

  async drained(ms: number): Promise<void> {
    await Promise.all([...this.#members.keys()].map((m) => m.drained(ms)));
  }

  /** Close every instance's link; none joins after. */
  stop(): void {
    this.#stopped = true;
    for (const member of [...this.#members.keys()]) member.stop();
    this.#members.clear();
  }
}
