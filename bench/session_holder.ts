/**
 * A benchmark helper process that holds many idle sessions, so that 10,000
 * sessions are not limited by one client process (one Deno process times
 * out opening that many WebTransport sessions).
 *
 * `deno run … session_holder.ts <json>` with `{url, transport, count,
 * certPem, token?}`: without a token it holds bare sessions to an echo
 * server (one 5-byte document each, so the server opens its stream; frames
 * of 20 bytes or more count as the push); with a
 * token it holds AMTP sessions bound to the user (`user_get_keys`). It prints
 * `ready <n>` once all are open, then `pushed <n> <epoch ms>` when every
 * session received one push (the time of the last), and exits when its
 * standard input closes.
 *
 * @module
 */

import { AmtpClient } from "../client/mod.ts";
import {
  type ClientTransport,
  openWebSocket,
  openWebTransport,
} from "../client/transport.ts";
import { certificateHash } from "../shared/pem.ts";

/** What the parent asks for. */
export interface HolderOrder {
  /** `https://…/amtp` (WebSocket uses the same with `wss`). */
  url: string;
  /** Which transport. */
  transport: "webtransport" | "websocket";
  /** Sessions to hold. */
  count: number;
  /** The server's certificate (PEM). */
  certPem: string;
  /** A user token: AMTP sessions; none: bare echo sessions. */
  token?: string;
}

const order = JSON.parse(Deno.args[0]) as HolderOrder;
const certHash = await certificateHash(order.certPem);
const wss = order.url.replace("https", "wss");
const closers: (() => void)[] = [];
let received = 0;
let last = 0;
for (let i = 0; i < order.count; i++) {
  if (!order.token) {
    const t: ClientTransport = order.transport === "webtransport"
      ? await openWebTransport({ url: order.url, certHash })
      : await openWebSocket({ url: wss, caCerts: [order.certPem] });
    if (order.transport === "webtransport") {
      await t.send(new Uint8Array([5, 0, 0, 0, 0]));
    }
    (async () => {
      for await (const frame of t.frames()) {
        if (frame.length < 20) continue; // the echo of the opening document
        last = Date.now();
        if (++received === order.count) {
          console.log(`pushed ${received} ${last}`);
        }
      }
    })().catch(() => {});
    closers.push(() => t.close());
    continue;
  }
  const client = await AmtpClient.connect({
    url: order.transport === "websocket" ? wss : order.url,
    transport: order.transport,
    certHash,
    caCerts: [order.certPem],
    keepAliveMs: 0,
    requestTimeoutMs: 120_000,
  });
  await client.request("user_get_keys", { user_token: order.token });
  client.onPush(() => {
    last = Date.now();
    if (++received === order.count) {
      console.log(`pushed ${received} ${last}`);
    }
  });
  closers.push(() => client.close());
}
console.log(`ready ${order.count}`);
// Hold until the parent closes our standard input.
for await (const _ of Deno.stdin.readable) { /* nothing is sent */ }
for (const close of closers) close();
Deno.exit(0);
