/**
 * Calls and events between modules over real sessions: the core holds both
 * sides of a grant (the caller's `calls`, the callee's `exports`; the
 * emitter's `events`, the subscriber's `subscribes`) and sets the callee's
 * caller itself, so a module cannot name a caller it is not.
 */

import assert from "node:assert/strict";
import { ErrorCode } from "../core/protocol/mod.ts";
import { mailWorld } from "../testing/mail.ts";
import {
  adminCaller,
  login,
  startTestServer,
  userMaker,
  waitFor,
} from "../testing/helpers.ts";

const FIXTURES = new URL("./fixtures/calls", import.meta.url).pathname;

async function world() {
  const t = await startTestServer({ AMTP_MODULES: FIXTURES });
  const admin = await adminCaller(await t.connect(), t.dataDir);
  await admin("admin_add_domain", { domain: "example.org" });
  const makeUser = userMaker(admin);
  const user = async (address: string) => {
    const key = await makeUser(address);
    const client = await t.connect();
    const token = await login(client, "user", address, key);
    return (module: string, command: string, params = {}) =>
      client.request(command, { module, user_token: token, ...params });
  };
  return { t, user };
}

interface Seen {
  caller: { address: string; session: string; module?: string };
  params: Record<string, unknown>;
}

Deno.test("module calls: refused without a calls grant or an export; with both the callee sees the real caller", async () => {
  const { t, user } = await world();
  try {
    const alice = await user("alice@example.org");
    // No "calls" in nogrant's manifest: refused by the core.
    const refused = await alice("nogrant", "try_call");
    assert.equal(refused.error, 0, refused.message);
    assert.equal((refused.data as { error: string }).error, "forbidden");
    assert.match(
      (refused.data as { message: string }).message,
      /"calls" does not name it/,
    );
    // Granted by the caller but not exported by the callee: refused.
    const hidden = await alice("caller", "relay_hidden");
    assert.deepEqual(hidden.data, { error: "forbidden" });
    // An exported command that is not among `commands`: no client may call it.
    assert.equal(
      (await alice("callee", "whoami")).error,
      ErrorCode.UNKNOWN_COMMAND,
    );
    // With both: the call works, on alice's behalf, from module "caller".
    const relayed = await alice("caller", "relay", { x: 1 });
    assert.equal(relayed.error, 0, relayed.message);
    const seen = relayed.data as Seen;
    assert.equal(seen.caller.address, "alice@example.org");
    assert.equal(seen.caller.module, "caller");
    assert.equal(seen.params.x, 1);
    // As the module itself: no user, still the module's name.
    const own = (await alice("caller", "relay_as_module")).data as Seen;
    assert.equal(own.caller.address, "");
    assert.equal(own.caller.module, "caller");
    assert.equal(own.caller.session, "module:caller");
  } finally {
    await t.close();
  }
});

Deno.test("module calls: a module cannot forge its caller (made-up or stolen tickets, identity in parameters)", async () => {
  const { t, user } = await world();
  try {
    const mallory = await user("mallory@example.org");
    await user("boss@example.org");
    const forged = await mallory("caller", "forge", {
      victim: "boss@example.org",
    });
    assert.equal(forged.error, 0, forged.message);
    const { madeUp, stolen, asParams } = forged.data as {
      madeUp: { error?: string };
      stolen: { error?: string };
      asParams: Seen;
    };
    assert.equal(madeUp.error, "forbidden");
    // The callee's own ticket, handed back by the caller: not the caller's.
    assert.equal(stolen.error, "forbidden");
    // Identity in parameters stays a parameter.
    assert.equal(asParams.caller.address, "mallory@example.org");
    assert.equal(asParams.caller.module, "caller");
    assert.equal(asParams.params.address, "boss@example.org");
  } finally {
    await t.close();
  }
});

Deno.test("module events: a subscriber gets the declared events of the module it names, with the emitter set by the core", async () => {
  const { t, user } = await world();
  try {
    const alice = await user("alice@example.org");
    assert.equal((await alice("caller", "poke", { n: 1 })).error, 0);
    // nogrant's "poked" is not declared in its events: never handed on.
    assert.equal((await alice("nogrant", "poke_undeclared")).error, 0);
    assert.equal((await alice("caller", "poke", { n: 2 })).error, 0);
    let events: { data: { n: number }; module: string; address: string }[] = [];
    await waitFor(
      async () => {
        events = ((await alice("callee", "callee_events")).data as {
          events: typeof events;
        }).events;
        return events.length >= 2;
      },
      5000,
      "two events",
    );
    // Handled as they come, not necessarily in order.
    events.sort((a, b) => a.data.n - b.data.n);
    assert.equal(events.length, 2);
    assert.deepEqual(events.map((e) => [e.module, e.data.n]), [
      ["caller", 1],
      ["caller", 2],
    ]);
    assert.equal(events[0].address, "");
    assert.ok(t.logs.some((l) => l.includes("module_event_refused")));
  } finally {
    await t.close();
  }
});

Deno.test("module calls: a module granted calls to the real messages and rules modules reaches nothing but its own user's", async () => {
  // The real messages and rules modules beside the snooping one: copies in
  // a folder beside the repository's own modules/ (so their imports of the
  // SDK resolve), not shipped with the server, hence each in a process.
  const root = new URL("..", import.meta.url).pathname;
  const modules = await Deno.makeTempDir({ dir: root, prefix: ".calls-" });
  for (const name of ["messages", "rules"]) {
    await Deno.mkdir(`${modules}/${name}`);
    await new Deno.Command("cp", {
      args: ["-r", `${root}modules/${name}/1.0.0`, `${modules}/${name}/`],
    }).output();
  }
  await Deno.mkdir(`${modules}/snoop/1.0.0`, { recursive: true });
  const fixture = new URL("./fixtures/snoop/1.0.0/", import.meta.url).pathname;
  await Deno.copyFile(
    `${fixture}module.json`,
    `${modules}/snoop/1.0.0/module.json`,
  );
  await Deno.writeTextFile(
    `${modules}/snoop/1.0.0/mod.ts`,
    (await Deno.readTextFile(`${fixture}mod.ts`)).replace(
      "../../../../workers/",
      "../../../workers/",
    ),
  );
  const w = await mailWorld({ AMTP_MODULES: modules });
  try {
    const alice = await w.session("alice@example.org");
    const bob = await w.session("bob@example.org");
    const mallory = await w.session("mallory@example.org");
    await alice.call("send", { to: ["bob@example.org"], subject: "private" });
    const [copy] = (await bob.call<{ messages: { id: string }[] }>("list"))
      .messages;
    const snooped = await mallory.client.request("snoop", {
      module: "snoop",
      user_token: mallory.token,
      id: copy.id,
      victim: "bob@example.org",
    });
    assert.equal(snooped.error, 0, snooped.message);
    assert.deepEqual(snooped.data, {
      factsAsModule: { error: "forbidden" },
      factsAsUser: { error: "not_found" },
      send: { error: "forbidden" },
      evaluate: { error: "forbidden" },
      reply: { error: "not_found" },
      ownRules: { error: "forbidden" },
    });
    // Nothing went out as bob.
    assert.equal(
      (await bob.call<{ messages: unknown[] }>("list", { folder: "sent" }))
        .messages.length,
      0,
    );
  } finally {
    await w.t.close();
    await Deno.remove(modules, { recursive: true });
  }
});
