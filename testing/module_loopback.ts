/**
 * A module in the test's own thread, spoken to over the real bridge: the
 * SDK's serveModule on one side, the host's channel on the other, each
 * document encoded to BSON bytes and delivered a macrotask later, as a
 * Worker's messages or a pipe would. For unit tests of the host's parts
 * without Workers or processes.
 *
 * @module
 */

import {
  decodeDocument,
  type Document,
  encodeDocument,
} from "../core/wire/mod.ts";
import type { Channel } from "../workers/isolation/channel.ts";
import { type ModuleDefinition, serveModule } from "../workers/sdk/mod.ts";

/** A channel to an in-thread module, with the faults tests need. */
export interface LoopbackChannel extends Channel {
  /** Stop delivering in both directions (a module stuck in a loop, or SIGSTOP). */
  freeze(): void;
  /** The runtime dies on its own (a crash). */
  crash(reason: string): void;
  /** Documents the core sent, in order (their `method` or `t`). */
  readonly sent: Document[];
}

/** Serve `definition` in this thread behind a channel. */
export function loopbackModule(definition: ModuleDefinition): LoopbackChannel {
  let toHost: ((doc: Document) => void) | undefined;
  let toModule: ((doc: Document) => void) | undefined;
  let exitHandler: ((reason: string) => void) | undefined;
  let frozen = false;
  let stopped = false;
  const sent: Document[] = [];
  const carry = (
    doc: Document,
    to: () => ((doc: Document) => void) | undefined,
  ) => {
    const bytes = new Uint8Array(encodeDocument(doc));
    setTimeout(() => {
      if (!frozen && !stopped) to()?.(decodeDocument(bytes));
    }, 0);
  };
  serveModule(definition, {
    send: (doc) => carry(doc, () => toHost),
    listen: (handler) => toModule = handler,
  });
  return {
    killable: true,
    sent,
    send(doc) {
      sent.push(doc);
      carry(doc, () => toModule);
    },
    onMessage(handler) {
      toHost = handler;
    },
    onExit(handler) {
      exitHandler = handler;
    },
    stop() {
      stopped = true;
    },
    freeze() {
      frozen = true;
    },
    crash(reason) {
      stopped = true;
      exitHandler?.(reason);
    },
  };
}
