/**
 * One end of the bridge, the same on both sides: it sends calls and matches
 * their answers, serves the other side's calls and answers them, and tells
 * its owner about anything it did not ask for. The host's instance and the
 * SDK each hold one over their channel.
 *
 * @module
 */

import type { Document } from "../../core/wire/mod.ts";
import {
  type BridgeError,
  readEnvelope,
  type Ret,
  toBridgeError,
} from "./envelope.ts";

/** Answers to abandoned calls remembered, so that a late answer is no violation. */
const LATE_IDS = 1024;

/** An answer that came as an error. */
export class RemoteError extends Error {
  /** The error's name (envelope.ts). */
  readonly code: string;
  /** Its detail, if any. */
  readonly data?: unknown;

  /** Wrap the other side's error. */
  constructor(error: BridgeError) {
    super(String(error.message ?? ""));
    this.name = "RemoteError";
    this.code = error.code;
    this.data = error.data ?? undefined;
  }
}

/** Options of {@link Endpoint}. */
export interface EndpointOptions {
  /**
   * Serve a call of the other side (`id` 0: a notification, whose answer is
   * dropped). What it returns is answered; what it throws is answered as an
   * error (envelope.ts, toBridgeError).
   */
  serve(method: string, args: unknown[], id: number): unknown;
  /** Told of anything the other side sent that this side did not ask for. */
  unsolicited?(what: string): void;
  /** This side's calls outstanding at most; more wait their turn (default: no bound). */
  maxOutstanding?: number;
  /**
   * The other side's calls served at once at most; one past it is answered
   * `limit_exceeded` and reported unsolicited (default: no bound).
   */
  maxServing?: number;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

/** One end of the bridge over a channel that carries documents. */
export class Endpoint {
  readonly #send: (doc: Document) => void;
  readonly #options: EndpointOptions;
  readonly #pending = new Map<number, Pending>();
  /** Ids of calls given up on, whose answers may still come. */
  readonly #late = new Set<number>();
  readonly #queued: (() => void)[] = [];
  #nextId = 1;
  #serving = 0;

  /** An endpoint sending with `send`; hand it what arrives with {@link receive}. */
  constructor(send: (doc: Document) => void, options: EndpointOptions) {
    this.#send = send;
    this.#options = options;
  }

  /** This side's calls waiting for an answer. */
  get outstanding(): number {
    return this.#pending.size;
  }

  /** Call a method of the other side; resolves with its answer. */
  call(method: string, args: unknown[]): Promise<unknown> {
    const max = this.#options.maxOutstanding ?? Infinity;
    if (this.#pending.size < max && this.#queued.length === 0) {
      return this.begin(method, args).answer;
    }
    return new Promise((resolve, reject) => {
      this.#queued.push(() =>
        this.begin(method, args).answer.then(resolve, reject)
      );
    });
  }

  /** Send a call now (never queued); its id lets the caller {@link abandon} it. */
  begin(
    method: string,
    args: unknown[],
  ): { id: number; answer: Promise<unknown> } {
    const id = this.#nextId++;
    const answer = new Promise<unknown>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
    });
    this.#send({ t: "rpc", id, method, args });
    return { id, answer };
  }

  /** Send a notification (never answered). */
  notify(method: string, args: unknown[]): void {
    this.#send({ t: "rpc", id: 0, method, args });
  }

  /** Give up on call `id` with `error`; its answer, should it come, is dropped. */
  abandon(id: number, error: Error): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#settled(id);
    this.#late.add(id);
    if (this.#late.size > LATE_IDS) {
      this.#late.delete(this.#late.values().next().value!);
    }
    pending.reject(error);
  }

  /** Fail every outstanding and queued call with `error` (the other side is gone). */
  close(error: Error): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    this.#queued.length = 0;
    for (const p of pending) p.reject(error);
  }

  /** Handle a document from the other side. */
  receive(doc: Document): void {
    const envelope = readEnvelope(doc);
    if (typeof envelope === "string") {
      this.#options.unsolicited?.(envelope);
      return;
    }
    if (envelope.t === "ret") {
      this.#answered(envelope);
      return;
    }
    const { id, method, args } = envelope;
    if (id !== 0 && this.#serving >= (this.#options.maxServing ?? Infinity)) {
      this.#send({
        t: "ret",
        id,
        error: {
          code: "limit_exceeded",
          message: `more than ${this.#options.maxServing} calls outstanding`,
        },
      });
      this.#options.unsolicited?.("a call past the cap");
      return;
    }
    this.#serve(id, method, args);
  }

  async #serve(id: number, method: string, args: unknown[]): Promise<void> {
    if (id === 0) {
      try {
        await this.#options.serve(method, args, 0);
      } catch {
        // A notification is not answered, not even with an error.
      }
      return;
    }
    this.#serving++;
    let ret: Ret;
    try {
      const value = await this.#options.serve(method, args, id);
      ret = { t: "ret", id, value: value === undefined ? null : value };
    } catch (error) {
      ret = { t: "ret", id, error: toBridgeError(error) };
    } finally {
      this.#serving--;
    }
    this.#send(ret as unknown as Document);
  }

  #answered(ret: Ret): void {
    const pending = this.#pending.get(ret.id);
    if (!pending) {
      if (!this.#late.delete(ret.id)) {
        this.#options.unsolicited?.("an answer to no call");
      }
      return;
    }
    this.#settled(ret.id);
    if (ret.error) pending.reject(new RemoteError(ret.error));
    else pending.resolve(ret.value ?? null);
  }

  /** A call left the pending table: a queued one may go. */
  #settled(id: number): void {
    this.#pending.delete(id);
    this.#queued.shift()?.();
  }
}
