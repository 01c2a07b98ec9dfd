/**
 * A channel to one running copy of a module, whatever its isolation.
 *
 * @module
 */

import type { Document } from "../../core/wire/mod.ts";

/** Two-way BSON channel to a module runtime. */
export interface Channel {
  /** Send one document. */
  send(doc: Document): void;
  /**
   * Receive documents. A handler that returns a promise holds the reading of
   * further documents until it settles, where the runtime can be held back
   * (a process: its output pipe fills and its writes wait); elsewhere the
   * promise is ignored.
   */
  onMessage(handler: (doc: Document) => void | Promise<void>): void;
  /** Be told when the runtime died on its own (crash, exit). */
  onExit(handler: (reason: string) => void): void;
  /** Stop it: a process is killed; a Worker is terminated (a Worker stuck in a loop keeps its thread). */
  stop(): void;
  /** Whether {@link stop} really ends a runtime stuck in a loop. */
  readonly killable: boolean;
}
