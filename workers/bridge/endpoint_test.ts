import assert from "node:assert/strict";
import {
  decodeDocument,
  type Document,
  encodeDocument,
} from "../../core/wire/mod.ts";
import { ErrorCode, ProtocolError } from "../../core/protocol/mod.ts";
import { ModuleError } from "../sdk/error.ts";
import { CheckError } from "./checks.ts";
import { Endpoint, type EndpointOptions, RemoteError } from "./endpoint.ts";
import { toBridgeError } from "./envelope.ts";

/**
 * Two endpoints joined by BSON bytes, as over a pipe (nothing shared but
 * bytes); delivery waits a macrotask, like a real channel.
 */
function pair(
  a: Partial<EndpointOptions> = {},
  b: Partial<EndpointOptions> = {},
) {
  const unsolicited = { a: [] as string[], b: [] as string[] };
  const wire = (to: () => Endpoint) => (doc: Document) => {
    const bytes = new Uint8Array(encodeDocument(doc));
    setTimeout(() => to().receive(decodeDocument(bytes)), 0);
  };
  const left: Endpoint = new Endpoint(wire(() => right), {
    serve: () => null,
    unsolicited: (what) => unsolicited.a.push(what),
    ...a,
  });
  const right: Endpoint = new Endpoint(wire(() => left), {
    serve: () => null,
    unsolicited: (what) => unsolicited.b.push(what),
    ...b,
  });
  return { left, right, unsolicited };
}

Deno.test("bridge: a call travels as rpc and comes back as ret, both ways", async () => {
  const { left, right } = pair(
    { serve: (method, args) => ({ side: "left", method, args }) },
    { serve: (method, args) => ({ side: "right", method, args }) },
  );
  assert.deepEqual(await left.call("echo", [1, "two", { three: 3 }]), {
    side: "right",
    method: "echo",
    args: [1, "two", { three: 3 }],
  });
  assert.deepEqual(await right.call("back", []), {
    side: "left",
    method: "back",
    args: [],
  });
  assert.equal(left.outstanding, 0);
});

Deno.test("bridge: errors keep their code by name; a notification is never answered", async () => {
  const served: unknown[][] = [];
  const { left, unsolicited } = pair({}, {
    serve: (method, args) => {
      served.push([method, ...args]);
      if (method === "protocol") {
        throw new ProtocolError(ErrorCode.NOT_FOUND, "no such thing");
      }
      if (method === "module") {
        throw new ModuleError("invalid_parameter", "bad", { parameter: "x" });
      }
      throw new Error("exploded");
    },
  });
  const failure = (method: string) =>
    left.call(method, []).then(
      () => assert.fail("answered"),
      (error) => error as RemoteError,
    );
  const notFound = await failure("protocol");
  assert.ok(notFound instanceof RemoteError);
  assert.equal(notFound.code, "not_found");
  const invalid = await failure("module");
  assert.equal(invalid.code, "invalid_parameter");
  assert.deepEqual(invalid.data, { parameter: "x" });
  assert.equal((await failure("other")).code, "handler_failed");
  left.notify("log", ["info", "line"]);
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(served.at(-1), ["log", "info", "line"]);
  // Nothing came back for the notification, not even its error.
  assert.deepEqual(unsolicited.a, []);
});

Deno.test("bridge: what was not asked for is reported: answers to no call, unknown or malformed messages", () => {
  const seen: string[] = [];
  const endpoint = new Endpoint(() => {}, {
    serve: () => null,
    unsolicited: (what) => seen.push(what),
  });
  endpoint.receive({ t: "ret", id: 7, value: 1 });
  endpoint.receive({ t: "pong", id: 1 });
  endpoint.receive({ t: "rpc", id: -1, method: "x", args: [] });
  endpoint.receive({ t: "rpc", id: 3, method: 5, args: [] });
  endpoint.receive({ t: "ret", id: 0 });
  endpoint.receive({ t: "ret", id: 2, error: "text" });
  assert.deepEqual(seen, [
    "an answer to no call",
    'an unknown message "pong"',
    "an rpc without a valid id",
    "an rpc without a method or args",
    "a ret for id 0",
    "a ret with a malformed error",
  ]);
});

Deno.test("bridge: an abandoned call's late answer is dropped, not reported", async () => {
  const sent: Document[] = [];
  const seen: string[] = [];
  const endpoint = new Endpoint((doc) => sent.push(doc), {
    serve: () => null,
    unsolicited: (what) => seen.push(what),
  });
  const { id, answer } = endpoint.begin("slow", []);
  endpoint.abandon(id, new Error("deadline"));
  await assert.rejects(answer, /deadline/);
  endpoint.receive({ t: "ret", id, value: "late" });
  assert.deepEqual(seen, []);
  // A second answer to the same call is one too many.
  endpoint.receive({ t: "ret", id, value: "again" });
  assert.deepEqual(seen, ["an answer to no call"]);
});

Deno.test("bridge: calls past the sender's bound wait; calls past the receiver's cap are refused and reported", async () => {
  const sent: Document[] = [];
  const sender = new Endpoint((doc) => sent.push(doc), {
    serve: () => null,
    maxOutstanding: 2,
  });
  const answers = [1, 2, 3].map((n) => sender.call("work", [n]));
  assert.deepEqual(sent.map((d) => d.args), [[1], [2]]);
  sender.receive({ t: "ret", id: 1, value: "one" });
  assert.equal(await answers[0], "one");
  assert.deepEqual(sent.map((d) => d.args), [[1], [2], [3]]);

  const replies: Document[] = [];
  const seen: string[] = [];
  let release!: () => void;
  const held = new Promise<void>((resolve) => release = resolve);
  const receiver = new Endpoint((doc) => replies.push(doc), {
    serve: () => held,
    unsolicited: (what) => seen.push(what),
    maxServing: 1,
  });
  receiver.receive({ t: "rpc", id: 1, method: "work", args: [] });
  receiver.receive({ t: "rpc", id: 2, method: "work", args: [] });
  assert.equal(replies.length, 1);
  assert.equal((replies[0].error as Document).code, "limit_exceeded");
  assert.deepEqual(seen, ["a call past the cap"]);
  release();
  await held;
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(replies[1], { t: "ret", id: 1, value: null });
});

Deno.test("bridge: a failed argument check is invalid_parameter; a denied permission is not_capable", () => {
  assert.deepEqual(toBridgeError(new CheckError("args[0]", "a string")), {
    code: "invalid_parameter",
    message: "args[0] must be a string",
  });
  const denied = new Error("Requires read access");
  denied.name = "NotCapable";
  assert.equal(toBridgeError(denied).code, "not_capable");
});
