import assert from "node:assert/strict";
import { AccountStore } from "../../kv/mod.ts";
import { Logger } from "../log/mod.ts";
import {
  Dispatcher,
  ErrorCode,
  ProtocolError,
  type SessionInfo,
} from "../protocol/mod.ts";
import type { Document } from "../wire/mod.ts";
import type { InboundDelivery, InboundResult } from "./delivery.ts";
import { DnsResolver } from "./dns.ts";
import { inboundCommands } from "./inbound.ts";

/**
 * The server-to-server commands on a dispatcher, this server hosting
 * `here.test`; sessions start authenticated as `peer` when given (the
 * signature check of `s2s_auth` is proof.ts's, tested on its own and end to
 * end).
 */
async function inbound(options: {
  deliver?: (module: string, d: InboundDelivery) => Promise<InboundResult>;
  peerRate?: number;
  clock?: { now: number };
} = {}) {
  const kv = await Deno.openKv(":memory:");
  const accounts = new AccountStore(kv);
  await accounts.addDomain({
    name: "here.test",
    created: new Date(),
    registration_open: false,
    description: "",
  });
  const delivered: { module: string; delivery: InboundDelivery }[] = [];
  const dispatcher = new Dispatcher({
    log: new Logger({ sink: () => {} }),
    moduleEnvelope: false,
  }).register(...inboundCommands({
    dns: new DnsResolver({ nameServer: "127.0.0.1:9", timeoutMs: 10 }),
    self: "mx.here.test",
    accounts,
    deliver: options.deliver ?? ((module, delivery) => {
      delivered.push({ module, delivery });
      return Promise.resolve({
        recipients: delivery.to.map((address) => ({
          address,
          status: "delivered" as const,
        })),
      });
    }),
    profile: (address) =>
      Promise.resolve(
        address === "bob@here.test" ? { address, name: "Bob" } : null,
      ),
    peerRate: options.peerRate,
    sessionMaxMs: 60_000,
    now: options.clock ? () => options.clock!.now : undefined,
  }));
  const session = (
    peer?: {
      host: string;
      domain: string;
      destinations: string[];
      since: number;
    },
  ): SessionInfo => ({
    id: "s2s-test",
    transport: "peer",
    remoteAddr: "192.0.2.7",
    data: new Map<string, unknown>(peer ? [["s2s_peer", peer]] : []),
  });
  const peer = {
    host: "mx.there.test",
    domain: "there.test",
    destinations: ["here.test"],
    since: options.clock?.now ?? Date.now(),
  };
  return {
    delivered,
    call: (request: Document, as = session(peer)) =>
      dispatcher.dispatch(request, as),
    anonymous: session(),
    session,
    close: () => kv.close(),
  };
}

const delivery = {
  command: "s2s_deliver",
  module: "messages",
  from: "alice@there.test",
  id: "d1",
  payload: { subject: "hi" },
};

Deno.test("s2s: nothing but hello and auth before a session authenticated", async () => {
  const s = await inbound();
  try {
    for (const command of ["s2s_deliver", "s2s_userinfo"]) {
      const r = await s.call(
        {
          ...delivery,
          command,
          to: ["bob@here.test"],
          address: "bob@here.test",
        },
        s.anonymous,
      );
      assert.equal(r.error, ErrorCode.S2S_NOT_AUTHENTICATED, command);
    }
    const hello = await s.call(
      { command: "s2s_hello", receiver: "MX.here.test" },
      s.anonymous,
    );
    assert.equal(hello.error, 0);
    assert.equal(
      typeof (hello.data as { challenge: string }).challenge,
      "string",
    );
    assert.equal(
      (await s.call(
        { command: "s2s_hello", receiver: "other.test" },
        s.anonymous,
      ))
        .error,
      ErrorCode.S2S_AUTH_FAILED,
    );
  } finally {
    s.close();
  }
});

Deno.test("s2s: a delivery reaches the module with the authenticated origin; each recipient is judged", async () => {
  const s = await inbound();
  try {
    const r = await s.call({
      ...delivery,
      to: ["Bob@Here.test", "not an address", "carol@elsewhere.test"],
    });
    assert.equal(r.error, 0);
    assert.deepEqual((r.data as InboundResult).recipients, [
      {
        address: "not an address",
        status: "failed",
        error: ErrorCode.INVALID_ADDRESS,
        message: "invalid address",
      },
      {
        address: "carol@elsewhere.test",
        status: "failed",
        error: ErrorCode.S2S_WRONG_DESTINATION,
        message: "not a destination of this server session",
      },
      { address: "bob@here.test", status: "delivered" },
    ]);
    assert.deepEqual(s.delivered, [{
      module: "messages",
      delivery: {
        kind: "deliver",
        from: "alice@there.test",
        to: ["bob@here.test"],
        id: "d1",
        payload: { subject: "hi" },
        peer: "mx.there.test",
        peer_domain: "there.test",
      },
    }]);
  } finally {
    s.close();
  }
});

Deno.test("s2s: a sender outside the peer's domain, or a peer speaking for a hosted domain, is refused", async () => {
  const s = await inbound();
  try {
    const outside = await s.call({
      ...delivery,
      from: "mallory@elsewhere.test",
      to: ["bob@here.test"],
    });
    assert.equal(outside.error, ErrorCode.S2S_FROM_MISMATCH);
    const hostedHere = await s.call(
      { ...delivery, from: "alice@here.test", to: ["bob@here.test"] },
      s.session({
        host: "mx.evil.test",
        domain: "here.test",
        destinations: ["here.test"],
        since: Date.now(),
      }),
    );
    assert.equal(hostedHere.error, ErrorCode.S2S_NOT_DELEGATED);
    assert.deepEqual(s.delivered, []);
  } finally {
    s.close();
  }
});

Deno.test("s2s: a module that cannot take the delivery fails each recipient with its code; a flood from one peer is rate limited", async () => {
  const s = await inbound({
    deliver: () =>
      Promise.reject(
        new ProtocolError(
          ErrorCode.MODULE_UNAVAILABLE,
          "module messages is restarting",
        ),
      ),
    peerRate: 1,
  });
  try {
    const r = await s.call({ ...delivery, to: ["bob@here.test"] });
    assert.deepEqual((r.data as InboundResult).recipients, [{
      address: "bob@here.test",
      status: "failed",
      error: ErrorCode.MODULE_UNAVAILABLE,
      message: "module messages is restarting",
    }]);
    // One a second, a burst of ten: the eleventh at once is refused.
    const codes = [];
    for (let i = 0; i < 11; i++) {
      codes.push((await s.call({ ...delivery, to: ["bob@here.test"] })).error);
    }
    assert.equal(codes.at(-1), ErrorCode.RATE_LIMITED);
  } finally {
    s.close();
  }
});

Deno.test("s2s: profiles only of the session's destinations", async () => {
  const s = await inbound();
  try {
    const bob = await s.call({
      command: "s2s_userinfo",
      address: "bob@here.test",
    });
    assert.deepEqual(bob.data, { address: "bob@here.test", name: "Bob" });
    assert.equal(
      (await s.call({ command: "s2s_userinfo", address: "x@here.test" })).error,
      ErrorCode.NOT_FOUND,
    );
    assert.equal(
      (await s.call({ command: "s2s_userinfo", address: "x@other.test" }))
        .error,
      ErrorCode.S2S_WRONG_DESTINATION,
    );
  } finally {
    s.close();
  }
});

Deno.test("inbound: an authentication holds for its time only; then the peer must authenticate again", async () => {
  const clock = { now: 1_000_000 };
  const s = await inbound({ clock });
  try {
    const as = s.session({
      host: "mx.there.test",
      domain: "there.test",
      destinations: ["here.test"],
      since: clock.now,
    });
    const first = await s.call({ ...delivery, to: ["bob@here.test"] }, as);
    assert.equal(first.error, 0, JSON.stringify(first));
    clock.now += 60_001;
    const late = await s.call({ ...delivery, to: ["bob@here.test"] }, as);
    assert.equal(late.error, ErrorCode.S2S_NOT_AUTHENTICATED);
    assert.match(String(late.message), /authenticate again/);
    // And it stays so: the session's authentication is gone.
    clock.now = 1_000_000;
    assert.equal(
      (await s.call({ ...delivery, to: ["bob@here.test"] }, as)).error,
      ErrorCode.S2S_NOT_AUTHENTICATED,
    );
  } finally {
    s.close();
  }
});

Deno.test("s2s: a batch is checked and answered per delivery, all handed over at once, and counts per delivery against the peer's rate", async () => {
  const s = await inbound({ peerRate: 1 });
  try {
    const { command: _, ...one } = delivery;
    const r = await s.call({
      command: "s2s_deliver_batch",
      deliveries: [
        { ...one, id: "b1", to: ["bob@here.test"] },
        // Another origin than the session's: refused alone.
        { ...one, id: "b2", from: "mallory@evil.test", to: ["bob@here.test"] },
        // Not a delivery at all: refused alone.
        { ...one, id: 7, to: ["bob@here.test"] },
        { ...one, id: "b3", to: ["bob@here.test", "x@elsewhere.test"] },
      ],
    });
    assert.equal(r.error, 0);
    const results = (r.data as { results: Record<string, unknown>[] })
      .results;
    assert.deepEqual(results[0], {
      recipients: [{ address: "bob@here.test", status: "delivered" }],
    });
    assert.equal(results[1].error, ErrorCode.S2S_FROM_MISMATCH);
    assert.equal(results[2].error, ErrorCode.INVALID_PARAMETER);
    assert.deepEqual(
      (results[3].recipients as { address: string; error?: number }[]).map(
        (x) => [x.address, x.error],
      ),
      [
        ["x@elsewhere.test", ErrorCode.S2S_WRONG_DESTINATION],
        ["bob@here.test", undefined],
      ],
    );
    assert.deepEqual(s.delivered.map((d) => d.delivery.id), ["b1", "b3"]);
    // Four of the burst of ten taken: seven more are one too many.
    const seven = await s.call({
      command: "s2s_deliver_batch",
      deliveries: Array.from(
        { length: 7 },
        (_, i) => ({ ...one, id: `c${i}`, to: ["bob@here.test"] }),
      ),
    });
    assert.equal(seven.error, ErrorCode.RATE_LIMITED);
    // Nothing before the session authenticated.
    const anonymous = await s.call({
      command: "s2s_deliver_batch",
      deliveries: [{ ...one, to: ["bob@here.test"] }],
    }, s.anonymous);
    assert.equal(anonymous.error, ErrorCode.S2S_NOT_AUTHENTICATED);
    // A batch too large is refused whole.
    const big = await s.call({
      command: "s2s_deliver_batch",
      deliveries: Array.from({ length: 33 }, () => one),
    });
    assert.equal(big.error, ErrorCode.INVALID_PARAMETER);
  } finally {
    s.close();
  }
});
