import assert from "node:assert/strict";
import { Logger } from "../log/mod.ts";
import {
  type Caller,
  defineCommand,
  Dispatcher,
  ErrorCode,
  ProtocolError,
  type SessionInfo,
} from "./mod.ts";

const session: SessionInfo = {
  id: "s1",
  transport: "test",
  remoteAddr: "127.0.0.1",
  data: new Map(),
};

function dispatcher(timeoutMs = 1000): Dispatcher {
  const d = new Dispatcher({
    log: new Logger({ sink: () => {} }),
    timeoutMs,
    verifyToken: (kind, token): Promise<Caller> => {
      if (token === `${kind}-ok`) {
        return Promise.resolve({ kind, name: "n", tokenHash: "h" });
      }
      if (token.endsWith("-ok")) {
        return Promise.reject(
          new ProtocolError(ErrorCode.FORBIDDEN, "wrong kind"),
        );
      }
      return Promise.reject(
        new ProtocolError(ErrorCode.NOT_LOGGED_IN, "bad token"),
      );
    },
  });
  d.register(
    defineCommand({
      name: "echo",
      auth: "none",
      params: {
        text: { type: "string", max: 5 },
        n: { type: "int", optional: true, min: 1 },
      },
      handler: (p) => ({ text: p.text, n: p.n ?? null }),
    }),
    defineCommand({
      name: "admin_thing",
      auth: "admin",
      params: {},
      handler: (_p, ctx) => ({ caller: ctx.caller?.name }),
    }),
    defineCommand({
      name: "boom",
      auth: "none",
      params: {},
      handler: () => {
        throw new Error("secret detail");
      },
    }),
    defineCommand({
      name: "slow",
      auth: "none",
      params: {},
      handler: () => new Promise(() => {}),
    }),
  );
  return d;
}

Deno.test("dispatcher: parameters are validated by type and bounds", async () => {
  const d = dispatcher();
  assert.deepEqual(
    await d.dispatch({ command: "echo", text: "hi", requestID: 7 }, session),
    { command: "echo", requestID: 7, error: 0, data: { text: "hi", n: null } },
  );
  const cases: [Record<string, unknown>, string][] = [
    [{}, "text"],
    [{ text: 5 }, "text"],
    [{ text: "toolong" }, "text"],
    [{ text: "a", n: 1.5 }, "n"],
    [{ text: "a", n: 0 }, "n"],
  ];
  for (const [params, name] of cases) {
    const r = await d.dispatch({ command: "echo", ...params }, session);
    assert.equal(r.error, ErrorCode.INVALID_PARAMETER, JSON.stringify(params));
    assert.deepEqual(r.data, { parameter: name });
  }
});

Deno.test("dispatcher: tokens are checked before the handler, by kind", async () => {
  const d = dispatcher();
  assert.equal(
    (await d.dispatch({ command: "admin_thing" }, session)).error,
    ErrorCode.NOT_LOGGED_IN,
  );
  assert.equal(
    (await d.dispatch({ command: "admin_thing", admin_token: "x" }, session))
      .error,
    ErrorCode.NOT_LOGGED_IN,
  );
  assert.equal(
    (await d.dispatch(
      { command: "admin_thing", admin_token: "user-ok" },
      session,
    )).error,
    ErrorCode.FORBIDDEN,
  );
  assert.equal(
    (await d.dispatch(
      { command: "admin_thing", user_token: "user-ok" },
      session,
    )).error,
    ErrorCode.FORBIDDEN,
  );
  assert.equal(
    (await d.dispatch({ command: "admin_thing", admin_token: 5 }, session))
      .error,
    ErrorCode.INVALID_PARAMETER,
  );
  const ok = await d.dispatch({
    command: "admin_thing",
    admin_token: "admin-ok",
  }, session);
  assert.deepEqual(ok.data, { caller: "n" });
});

Deno.test("dispatcher: faults are hidden, deadlines answered, unknown named", async () => {
  const d = dispatcher(50);
  const boom = await d.dispatch({ command: "boom", requestID: "b" }, session);
  assert.equal(boom.error, ErrorCode.INTERNAL);
  assert.equal(boom.requestID, "b");
  assert.ok(!boom.message?.includes("secret"));
  assert.equal(
    (await d.dispatch({ command: "slow" }, session)).error,
    ErrorCode.TIMEOUT,
  );
  const unknown = await d.dispatch({ command: "nope", requestID: 3 }, session);
  assert.equal(unknown.error, ErrorCode.UNKNOWN_COMMAND);
  assert.equal(unknown.requestID, 3);
  assert.equal(
    (await d.dispatch({ command: "x", module: "m" }, session)).error,
    ErrorCode.MODULE_UNAVAILABLE,
  );
});

Deno.test("dispatcher: a request naming a module goes to the module router with the caller from a user token", async () => {
  const routed: { request: Record<string, unknown>; caller?: Caller }[] = [];
  const bound: string[] = [];
  const d = new Dispatcher({
    log: new Logger({ sink: () => {} }),
    verifyToken: (kind, token) =>
      token === `${kind}-ok`
        ? Promise.resolve({ kind, name: `${kind}@x.test`, tokenHash: "h" })
        : Promise.reject(new ProtocolError(ErrorCode.NOT_LOGGED_IN, "bad")),
    routeModule: (request, ctx) => {
      routed.push({ request, caller: ctx.caller });
      return Promise.resolve({ ok: true });
    },
  });
  const withBinding: SessionInfo = {
    ...session,
    bindUser: (address) => bound.push(address),
  };
  const ok = await d.dispatch(
    { command: "anything", module: "m", user_token: "user-ok", requestID: 5 },
    withBinding,
  );
  assert.deepEqual(ok, {
    command: "anything",
    error: 0,
    requestID: 5,
    data: { ok: true },
  });
  assert.equal(routed[0].caller?.name, "user@x.test");
  assert.deepEqual(bound, ["user@x.test"]);
  // No token, an admin token, a module name that is not a string.
  for (
    const [request, code] of [
      [{ command: "c", module: "m" }, ErrorCode.NOT_LOGGED_IN],
      [
        { command: "c", module: "m", admin_token: "admin-ok" },
        ErrorCode.FORBIDDEN,
      ],
      [
        { command: "c", module: 7, user_token: "user-ok" },
        ErrorCode.INVALID_PARAMETER,
      ],
    ] as const
  ) {
    assert.equal((await d.dispatch(request, session)).error, code);
  }
  assert.equal(routed.length, 1);
  // Without a module router (server-to-server sessions), `module` is an ordinary parameter.
  const peers = new Dispatcher({
    log: new Logger({ sink: () => {} }),
    moduleEnvelope: false,
  }).register(defineCommand({
    name: "named",
    auth: "none",
    params: { module: { type: "string", max: 10 } },
    handler: (p) => ({ module: p.module }),
  }));
  assert.deepEqual(
    (await peers.dispatch({ command: "named", module: "m" }, session)).data,
    { module: "m" },
  );
});
