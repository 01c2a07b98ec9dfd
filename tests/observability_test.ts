/**
 * What an operator watches, on real servers: `/metrics` scraped during
 * traffic and parsed with a Prometheus text-format parser (the counters
 * move), `/healthz` and `/readyz` on the TCP port and the metrics port, and
 * OpenTelemetry spans exported by Deno (`OTEL_DENO=true`, OTLP over HTTP/JSON
 * to a collector of the test's) for a command, a module call and a
 * delivery, the receiving server's span a child of the sending server's.
 */

import assert from "node:assert/strict";
import parse from "parse-prometheus-text-format";
import { freePort } from "../testing/dnsmasq.ts";
import { startWorld } from "../testing/federation_world.ts";
import { makeKey, startTestServer, waitFor } from "../testing/helpers.ts";
import { mailWorld } from "../testing/mail.ts";

/** One family as the parser gives it. */
interface Family {
  name: string;
  type: string;
  metrics: {
    value?: string;
    labels?: Record<string, string>;
    count?: string;
    sum?: string;
    buckets?: Record<string, string>;
  }[];
}

/** Scrape and parse `/metrics`. */
async function scrape(port: number): Promise<Map<string, Family>> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain/);
  const families = parse(await response.text()) as Family[];
  return new Map(families.map((f) => [f.name, f]));
}

/** The value of the sample of `name` whose labels include `labels` (0 when none). */
function valueOf(
  families: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
  field: "value" | "count" = "value",
): number {
  const family = families.get(name);
  if (!family) return 0;
  return family.metrics
    .filter((m) =>
      Object.entries(labels).every(([k, v]) => m.labels?.[k] === v)
    )
    .reduce((sum, m) => sum + Number(m[field] ?? 0), 0);
}

Deno.test("observability: /metrics scraped during traffic shows commands, latencies, logins, sessions, deliveries, module calls and KV commits moving; /healthz and /readyz answer", async () => {
  const w = await mailWorld({ AMTP_METRICS_PORT: "0" });
  try {
    const port = w.t.server.metricsPort!;
    assert.ok(port > 0);
    const before = await scrape(port);
    assert.equal(before.get("amtp_commands_total")?.type, "COUNTER");
    assert.equal(
      before.get("amtp_command_duration_seconds")?.type,
      "HISTOGRAM",
    );
    assert.equal(valueOf(before, "amtp_build_info"), 1);

    const alice = await w.session("alice@example.org");
    const bob = await w.session("bob@example.org", { transport: "websocket" });
    for (let i = 0; i < 5; i++) {
      await alice.call("send", {
        to: ["bob@example.org"],
        subject: `m${i}`,
        body: "hello",
      });
    }
    await bob.call("list", { folder: "inbox" });
    // A failed login: a key the server does not know.
    const stranger = await w.t.connect();
    const key = await makeKey();
    await assert.rejects(() =>
      stranger.login("user", "alice@example.org", key)
    );
    const after = await scrape(port);

    const sends = { command: "send", module: "messages", error: "0" };
    assert.equal(
      valueOf(after, "amtp_commands_total", sends) -
        valueOf(before, "amtp_commands_total", sends),
      5,
    );
    // (This parser keeps a histogram's count only for one without labels:
    // the KV commit histogram below; the command latency one is checked
    // through its buckets being there.)
    assert.ok(
      Object.keys(
        after.get("amtp_command_duration_seconds")?.metrics[0]?.buckets ?? {},
      ).includes("+Inf"),
    );
    assert.ok(
      valueOf(after, "amtp_logins_total", {
        kind: "user",
        result: "success",
      }) >=
        2,
    );
    assert.ok(
      valueOf(after, "amtp_logins_total", {
        kind: "admin",
        result: "success",
      }) >=
        1,
    );
    assert.equal(
      valueOf(after, "amtp_logins_total", { kind: "user", result: "failure" }),
      1,
    );
    assert.ok(
      valueOf(after, "amtp_sessions", { transport: "websocket" }) >= 1,
    );
    assert.ok(
      valueOf(after, "amtp_sessions", { transport: "webtransport" }) >= 2,
    );
    // Local recipients resolved (each send's, and any other lookup).
    assert.ok(
      valueOf(after, "amtp_deliveries_total", { route: "local" }) -
          valueOf(before, "amtp_deliveries_total", { route: "local" }) >= 5,
    );
    assert.ok(
      valueOf(after, "amtp_module_calls_total", {
        module: "messages",
        result: "ok",
      }) >=
        valueOf(before, "amtp_module_calls_total", {
            module: "messages",
            result: "ok",
          }) + 6,
    );
    assert.ok(
      valueOf(after, "amtp_kv_commit_duration_seconds", {}, "count") >
        valueOf(before, "amtp_kv_commit_duration_seconds", {}, "count"),
    );
    assert.equal(valueOf(after, "amtp_queue_items"), 0);
    assert.ok(after.has("amtp_queue_oldest_age_seconds"));

    // Health on the metrics port and on the public TCP port (HTTPS).
    for (const path of ["healthz", "readyz"]) {
      const local = await fetch(`http://127.0.0.1:${port}/${path}`);
      assert.equal(local.status, 200, await local.text());
    }
    const client = Deno.createHttpClient({
      caCerts: [w.t.server.certificate().certPem],
    });
    try {
      const base = `https://localhost:${w.t.server.port}`;
      const health = await fetch(`${base}/healthz`, { client });
      assert.equal(await health.text(), "ok\n");
      const ready = await fetch(`${base}/readyz`, { client });
      assert.equal(ready.status, 200);
      assert.equal(await ready.text(), "ready\n");
      // /metrics never on the public port.
      const hidden = await fetch(`${base}/metrics`, { client });
      assert.doesNotMatch(await hidden.text(), /amtp_commands_total/);
    } finally {
      client.close();
    }
    // Shutting down: not ready.
    const closing = w.t.server.close();
    const late = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() =>
      undefined
    );
    if (late) {
      assert.equal(late.status, 503);
      assert.match(await late.text(), /shutting down/);
    }
    await closing;
  } finally {
    await w.t.close();
  }
});

Deno.test("observability: spans exported by Deno's OpenTelemetry for a command, its module call and a delivery, the receiving server's span a child of the sender's", async () => {
  const spans: {
    name: string;
    traceId: string;
    spanId: string;
    parentSpanId?: string;
    attributes: Record<string, unknown>;
  }[] = [];
  const collectorPort = freePort();
  const collector = Deno.serve(
    { hostname: "127.0.0.1", port: collectorPort, onListen() {} },
    async (request) => {
      if (new URL(request.url).pathname === "/v1/traces") {
        const body = await request.json();
        for (const resource of body.resourceSpans ?? []) {
          for (const scope of resource.scopeSpans ?? []) {
            for (const span of scope.spans ?? []) {
              spans.push({
                ...span,
                attributes: Object.fromEntries(
                  (span.attributes ?? []).map((
                    a: { key: string; value: Record<string, unknown> },
                  ) => [a.key, Object.values(a.value)[0]]),
                ),
              });
            }
          }
        }
      } else {
        await request.body?.cancel();
      }
      return Response.json({});
    },
  );
  const world = await startWorld([
    ["a.example.test", "alpha.test"],
    ["b.example.test", "beta.test"],
  ], {
    OTEL_DENO: "true",
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collectorPort}`,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
  });
  try {
    await world.publish();
    await world.addUser("alice@alpha.test");
    await world.addUser("bob@beta.test");
    const alice = await world.mail("alice@alpha.test");
    const bob = await world.mail("bob@beta.test");
    await alice.call("send", {
      to: ["bob@beta.test"],
      subject: "traced",
      body: "hello",
    });
    await waitFor(
      async () => {
        const inbox = await bob.call<{ messages: unknown[] }>("list", {
          folder: "inbox",
        });
        return inbox.messages.length === 1;
      },
      20_000,
      "the delivery",
    );
    const find = (name: string, attribute?: [string, unknown]) =>
      spans.find((s) =>
        s.name === name &&
        (!attribute || s.attributes[attribute[0]] === attribute[1])
      );
    await waitFor(
      () => !!find("amtp.s2s", ["amtp.command", "s2s_deliver"]),
      20_000,
      "the exported spans",
    );
    const send = find("amtp.command", ["amtp.command", "send"]);
    assert.ok(send, "no span for the send command");
    assert.equal(send.attributes["amtp.module"], "messages");
    const call = spans.find((s) =>
      s.name === "amtp.module.call" && s.parentSpanId === send.spanId
    );
    assert.ok(call, "no module call span under the command's");
    assert.equal(call.traceId, send.traceId);
    const delivery = find("amtp.delivery");
    assert.ok(delivery, "no delivery span");
    const received = find("amtp.s2s", ["amtp.command", "s2s_deliver"])!;
    assert.equal(received.traceId, delivery.traceId);
    assert.equal(received.parentSpanId, delivery.spanId);
  } finally {
    await world.close();
    await collector.shutdown();
  }
});

Deno.test("observability: a metrics port already taken stops the start with a message naming it, and leaves no listener open", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  try {
    await assert.rejects(
      () =>
        startTestServer({
          AMTP_PORT: String(port),
          AMTP_METRICS_PORT: String((taken.addr as Deno.NetAddr).port),
        }),
      (error: Error & { code?: string }) =>
        error.code === "listen_failed" &&
        error.message.startsWith(
          `AMTP_METRICS_PORT: cannot listen on 127.0.0.1:${
            (taken.addr as Deno.NetAddr).port
          }`,
        ),
    );
    // The server's TCP port was given back (once its accept loop ends).
    await waitFor(
      () => {
        try {
          Deno.listen({ hostname: "127.0.0.1", port }).close();
          return true;
        } catch {
          return false;
        }
      },
      2000,
      "the TCP port given back",
    );
  } finally {
    taken.close();
  }
});

Deno.test("observability: hostile command names neither forge metrics nor grow the registry without bound", async () => {
  const t = await startTestServer({ AMTP_METRICS_PORT: "0" });
  try {
    const client = await t.connect();
    const forged = 'x"} 1\nforged_metric 1\n# TYPE y counter\ny{a="';
    assert.notEqual((await client.request(forged)).error, 0);
    // More distinct names than a family keeps (500).
    await Promise.all(
      Array.from({ length: 600 }, (_, i) => client.request(`cmd_${i}`)),
    );
    const families = await scrape(t.server.metricsPort!);
    assert.ok(!families.has("forged_metric"));
    assert.ok(!families.has("y"));
    const commands = families.get("amtp_commands_total")!;
    assert.ok(
      commands.metrics.some((m) => m.labels?.command === forged.slice(0, 64)),
    );
    assert.ok(commands.metrics.length <= 501, `${commands.metrics.length}`);
    assert.ok(
      valueOf(families, "amtp_commands_total", { command: "_other" }) >= 100,
    );
  } finally {
    await t.close();
  }
});
