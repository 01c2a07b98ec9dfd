import assert from "node:assert/strict";
import {
  type DeliveryFacts,
  evaluate,
  MAX_HOPS,
  parseRules,
  wildcard,
} from "./rules.ts";
import { noReplyReason, takeTurn } from "./vacation.ts";
import { KvStorage } from "../../../workers/sdk/storage.ts";

const facts = (over: Partial<DeliveryFacts> = {}): DeliveryFacts => ({
  from: "alice@a.test",
  to: ["bob@b.test"],
  cc: [],
  subject: "Quarterly report",
  size: 2048,
  attachments: 0,
  headers: [],
  forwarded: [],
  auto_submitted: "",
  ...over,
});

Deno.test("rules: wildcards match whole texts without regular expressions", () => {
  assert.ok(wildcard("*report*", "quarterly report 3"));
  assert.ok(wildcard("a?c", "abc"));
  assert.ok(!wildcard("a?c", "abbc"));
  assert.ok(wildcard("*", ""));
  assert.ok(!wildcard("*x", "abc"));
  // A pattern that makes backtracking regexes blow up (the greedy match
  // retries each star at most once per text position).
  assert.ok(!wildcard("*a*a*a*a*a*a*a*b", "a".repeat(1000)));
});

Deno.test("rules: evaluation in order — later folders win, reject and stop end it, off rules are skipped", () => {
  const rules = parseRules([
    {
      conditions: [{ field: "subject", op: "contains", value: "REPORT" }],
      actions: [{ type: "fileinto", folder: "Reports" }],
    },
    { enabled: false, actions: [{ type: "reject", reason: "off" }] },
    {
      conditions: [{ field: "size", op: "over", value: 1000 }],
      actions: [{ type: "fileinto", folder: "big" }, { type: "flag" }],
      stop: true,
    },
    { actions: [{ type: "read" }] },
  ]);
  assert.deepEqual(evaluate(rules, facts(), "bob@b.test"), {
    matched: [0, 2],
    folder: "big",
    flagged: true,
  });
  const small = evaluate(rules, facts({ size: 10 }), "bob@b.test");
  assert.deepEqual(small, { matched: [0, 3], folder: "reports", seen: true });
  const reject = parseRules([
    { actions: [{ type: "flag" }] },
    {
      conditions: [{ field: "from", op: "matches", value: "*@a.test" }],
      actions: [{ type: "reject", reason: "no" }, { type: "flag" }],
    },
  ]);
  assert.deepEqual(evaluate(reject, facts(), "bob@b.test"), {
    reject: "no",
    matched: [0, 1],
  });
  const any = parseRules([{
    match: "any",
    conditions: [
      { field: "to", op: "is", value: "nobody@b.test" },
      { field: "header", header: "List-Id", op: "exists", not: true },
    ],
    actions: [{ type: "flag" }],
  }]);
  assert.equal(evaluate(any, facts(), "bob@b.test").flagged, true);
  assert.equal(
    evaluate(any, facts({ headers: [["list-id", "<l>"]] }), "bob@b.test")
      .flagged,
    undefined,
  );
});

Deno.test("rules: forwards leave out the owner, the sender and the chain, and stop after the hop limit", () => {
  const rules = parseRules([{
    actions: [{
      type: "forward",
      to: ["bob@b.test", "alice@a.test", "carol@c.test", "dave@d.test"],
      keep: false,
    }],
  }]);
  const d = evaluate(
    rules,
    facts({ forwarded: ["zed@z.test", "carol@c.test"] }),
    "bob@b.test",
  );
  assert.deepEqual(d.forward, ["dave@d.test"]);
  assert.equal(d.discard, true);
  const chain = Array.from({ length: MAX_HOPS + 1 }, (_, i) => `f${i}@f.test`);
  assert.equal(
    evaluate(rules, facts({ forwarded: chain }), "bob@b.test").forward,
    undefined,
  );
});

Deno.test("rules: parseRules refuses bad shapes with the place named, and sizes past the bounds", () => {
  const place = (rules: unknown) => {
    try {
      parseRules(rules);
    } catch (error) {
      return (error as { data?: { parameter?: string }; code: string }).data
        ?.parameter ?? (error as { code: string }).code;
    }
    return "accepted";
  };
  assert.equal(place({}), "rules");
  assert.equal(place([{ actions: [] }]), "rules[0].actions");
  assert.equal(
    place([{ actions: [{ type: "exec" }] }]),
    "rules[0].actions[0].type",
  );
  assert.equal(
    place([{ actions: [{ type: "fileinto", folder: "sent" }] }]),
    "rules[0].actions[0].folder",
  );
  assert.equal(
    place([{ actions: [{ type: "forward", to: ["not an address"] }] }]),
    "rules[0].actions[0].to[0]",
  );
  assert.equal(
    place([{
      conditions: [{ field: "size", op: "is", value: 3 }],
      actions: [{ type: "flag" }],
    }]),
    "rules[0].conditions[0].op",
  );
  assert.equal(
    place([{
      conditions: [{ field: "body", op: "is", value: "x" }],
      actions: [{ type: "flag" }],
    }]),
    "rules[0].conditions[0].field",
  );
  assert.equal(
    place(Array.from({ length: 101 }, () => ({ actions: [{ type: "flag" }] }))),
    "limit_exceeded",
  );
  assert.equal(
    place([{
      conditions: Array.from(
        { length: 21 },
        () => ({ field: "from", op: "exists" }),
      ),
      actions: [{ type: "flag" }],
    }]),
    "limit_exceeded",
  );
});

Deno.test("rules: vacation replies never go to bounces, lists, bulk, automatic or system senders", () => {
  const owner = "bob@b.test";
  assert.equal(noReplyReason(facts(), owner), undefined);
  assert.equal(noReplyReason(facts({ mail_from: "" }), owner), "a bounce");
  assert.equal(
    noReplyReason(facts({ from: "no-reply@a.test" }), owner),
    "a system or no-reply sender",
  );
  assert.equal(
    noReplyReason(facts({ from: "MAILER-DAEMON@a.test" }), owner),
    "a system or no-reply sender",
  );
  assert.equal(
    noReplyReason(facts({ from: "news-request@a.test" }), owner),
    "a system or no-reply sender",
  );
  assert.equal(
    noReplyReason(facts({ auto_submitted: "auto-replied" }), owner),
    "an automatic message",
  );
  assert.equal(
    noReplyReason(
      facts({ headers: [["list-unsubscribe", "<mailto:x>"]] }),
      owner,
    ),
    "a list message",
  );
  assert.equal(
    noReplyReason(facts({ headers: [["precedence", "Bulk"]] }), owner),
    "a bulk message",
  );
  assert.equal(
    noReplyReason(
      facts({ headers: [["auto-submitted", "auto-generated"]] }),
      owner,
    ),
    "an automatic message",
  );
  assert.equal(
    noReplyReason(facts({ headers: [["auto-submitted", "no"]] }), owner),
    undefined,
  );
  assert.equal(noReplyReason(facts({ from: owner }), owner), "from oneself");
});

Deno.test("rules: a vacation reply to one sender at most once per N days (injected clock)", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const storage = new KvStorage(kv, "rules", 1_000_000);
    const day = 86_400_000;
    const t0 = new Date("2026-11-01T00:00:00Z");
    const at = (days: number) => new Date(t0.getTime() + days * day);
    const turn = (sender: string, days: number) =>
      takeTurn(storage, "bob@b.test", sender, 3, at(days));
    assert.equal(await turn("alice@a.test", 0), true);
    assert.equal(await turn("ALICE@a.test", 1), false);
    assert.equal(await turn("carol@c.test", 1), true);
    assert.equal(await turn("alice@a.test", 2.9), false);
    assert.equal(await turn("alice@a.test", 3), true);
    // Two deliveries at once: one reply.
    const both = await Promise.all([
      turn("dave@d.test", 5),
      turn("dave@d.test", 5),
    ]);
    assert.deepEqual(both.sort(), [false, true]);
  } finally {
    kv.close();
  }
});
