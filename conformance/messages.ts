/**
 * Requirements of sections 12 (requests to modules) and 13 (the messages
 * module), checked when the server announces the module.
 *
 * @module
 */

import { AmtpError } from "../client/mod.ts";
import { expect, expectEqual, show, Skip, type Suite } from "./harness.ts";
import { waitFor } from "./envelope.ts";
import type { UserSession, World } from "./world.ts";

async function code(promise: Promise<unknown>): Promise<number> {
  try {
    await promise;
    return 0;
  } catch (error) {
    if (error instanceof AmtpError) return error.code;
    throw error;
  }
}

async function sha256Hex(data: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new Uint8Array(data) as Uint8Array<ArrayBuffer>,
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

interface Summary {
  id: string;
  message_id: string;
  global_id: string;
  folder: string;
  from: string;
  to: string[];
  subject: string;
  date: Date;
  seen: boolean;
  flagged: boolean;
  size: number;
  preview: string;
  thread: string;
  encrypted: boolean;
  attachments: number;
}

/** Sections 12 and 13. */
export async function messageChecks(
  suite: Suite,
  world: World,
  sessions: UserSession[],
) {
  const probe = await world.session(await world.addUser("module-probe"));
  sessions.push(probe);
  await suite.check(
    "12.1",
    "MUST",
    "a module request needs user_token (5 without); an unknown module is 8",
    async () => {
      const anon = await world.connect();
      const name = world.hasModule("messages")
        ? "messages"
        : (world.info.modules as { name: string }[])[0]?.name;
      if (!name) throw new Skip("the server announces no module");
      expectEqual(
        (await anon.request("quota", { module: name })).error,
        5,
        "without a token",
      );
      expectEqual(
        (await probe.request("anything", { module: "conformance-none" })).error,
        8,
        "unknown module",
      );
    },
  );
  if (!world.hasModule("messages")) {
    await suite.check(
      "13",
      "MUST",
      "the messages module",
      () => {
        throw new Skip("the server does not announce the messages module");
      },
    );
    return;
  }
  await suite.check(
    "12.1",
    "MUST",
    "a command a module does not have is 3; an unparsable version range is 4; no match is 8",
    async () => {
      expectEqual(
        (await probe.request("conformance_none", { module: "messages" })).error,
        3,
        "unknown command",
      );
      expectEqual(
        (await probe.request("quota", { module: "messages", version: "^^1" }))
          .error,
        4,
        "bad range",
      );
      expectEqual(
        (await probe.request("quota", { module: "messages", version: "999" }))
          .error,
        8,
        "no version",
      );
    },
  );

  const [alice, bob, carol] = await Promise.all(
    ["alice", "bob", "carol"].map((l) => world.addUser(l)),
  );
  const a = await world.session(alice);
  const aPhone = await world.session(alice, { transport: "websocket" });
  const b = await world.session(bob);
  const c = await world.session(carol);
  sessions.push(a, b, c);
  // Bind the second sessions (pushes follow a token's use on a session).
  await aPhone.mail("quota");
  await b.mail("quota");
  const team = world.address("team-mail");
  await world.admin("admin_add_alias", {
    address: team,
    recipients: [bob.address, carol.address],
  });

  let sent: { message_id: string; id: string; global_id: string } | undefined;
  await suite.check(
    "13.2",
    "MUST",
    "send answers one result per written address, as written: delivered, or failed with 201 for an unknown address",
    async () => {
      const nobody = world.address("nobody");
      const result = await a.mail<{
        message_id: string;
        id: string;
        global_id: string;
        date: Date;
        recipients: { address: string; status: string; error?: number }[];
      }>("send", {
        to: [bob.address.toUpperCase(), nobody],
        cc: [team],
        subject: "Conformance",
        body: "Hello from the conformance suite.",
        client_id: "conformance-1",
      });
      sent = result;
      expect(
        /^[0-9a-f]{24}$/.test(result.message_id),
        `message_id ${result.message_id}`,
      );
      expectEqual(
        result.global_id,
        `${result.message_id}@${world.domain}`,
        "global_id",
      );
      expectEqual(result.id, `${result.message_id}-sent`, "id");
      expect(result.date instanceof Date, "date");
      expectEqual(
        show(result.recipients.map((r) => r.address)),
        show([bob.address.toUpperCase(), nobody, team]),
        "addresses",
      );
      expectEqual(result.recipients[0].status, "delivered", "bob");
      expectEqual(result.recipients[1].status, "failed", "nobody");
      expectEqual(result.recipients[1].error, 201, "nobody's error");
      expectEqual(result.recipients[2].status, "delivered", "the alias");
      expect(
        !("error" in result.recipients[0]),
        "error present on a delivered recipient",
      );
    },
  );
  await suite.check(
    "13.3",
    "MUST",
    "message_new reaches the recipient's sessions with the summary, seq and account; mailbox_changed the sender's other session",
    async () => {
      expect(sent, "nothing was sent");
      await waitFor(
        () => b.pushes.some((p) => p.event === "message_new"),
        5000,
      );
      const push = b.pushes.find((p) => p.event === "message_new")!;
      expectEqual(push.module, "messages", "module");
      expectEqual(push.account, bob.address, "account");
      const data = push.data as Summary & { seq: number };
      expectEqual(data.message_id, sent!.message_id, "message_id");
      expect(Number.isInteger(data.seq) && data.seq > 0, "seq");
      await waitFor(
        () => aPhone.pushes.some((p) => p.event === "mailbox_changed"),
        5000,
      );
    },
  );
  await suite.check(
    "13.2",
    "MUST",
    "a retried send with the same client_id creates nothing new and answers the same ids",
    async () => {
      const again = await a.mail<{ message_id: string }>("send", {
        to: [bob.address],
        subject: "Conformance",
        body: "Hello from the conformance suite.",
        client_id: "conformance-1",
      });
      expectEqual(again.message_id, sent?.message_id, "message_id");
      const inbox = await b.mail<{ messages: Summary[] }>("list", {});
      expectEqual(inbox.messages.length, 1, "bob's copies");
    },
  );
  await suite.check(
    "13.1",
    "MUST",
    "a summary has every field with its type; attachments is a count",
    async () => {
      const { messages } = await b.mail<{ messages: Summary[] }>("list", {
        folder: "inbox",
      });
      const s = messages[0];
      expect(s, "no message in the inbox");
      for (
        const name of [
          "id",
          "message_id",
          "global_id",
          "folder",
          "from",
          "subject",
          "preview",
          "thread",
        ] as const
      ) {
        expect(typeof s[name] === "string", `${name}: ${show(s[name])}`);
      }
      expect(Array.isArray(s.to), "to");
      expect(s.date instanceof Date, "date");
      for (const name of ["seen", "flagged", "encrypted"] as const) {
        expect(typeof s[name] === "boolean", `${name}: ${show(s[name])}`);
      }
      expect(
        Number.isInteger(s.size) && Number.isInteger(s.attachments),
        "size, attachments",
      );
      expectEqual(s.from, alice.address, "from");
      expectEqual(s.seen, false, "seen");
    },
  );
  await suite.check(
    "13.2",
    "MUST",
    "recipients expands an alias to the mailboxes it reaches, the address as given",
    async () => {
      const { recipients } = await a.mail<{
        recipients: {
          address: string;
          kind: string;
          mailboxes: string[];
          remote: string[];
          via: string | null;
        }[];
      }>("recipients", { addresses: [team, bob.address] });
      expectEqual(recipients[0].address, team, "address");
      expectEqual(recipients[0].kind, "local", "kind");
      expectEqual(recipients[0].via, "alias", "via");
      expectEqual(
        show([...recipients[0].mailboxes].sort()),
        show([bob.address, carol.address].sort()),
        "mailboxes",
      );
      expectEqual(recipients[1].via, null, "via of a user");
    },
  );
  let attachmentId = "";
  const file = new Uint8Array(300_000).map((_, i) => (i * 13) % 256);
  await suite.check(
    "13.2",
    "MUST",
    "attachments: upload in chunks (a gap is 4 with data.next_index), status, finish with the checksum",
    async () => {
      const started = await a.mail<
        { upload_id: string; chunk_size: number; next_index: number }
      >(
        "attachment_upload",
        {
          name: "data.bin",
          type: "application/octet-stream",
          size: file.byteLength,
          sha256: await sha256Hex(file),
        },
      );
      expectEqual(started.next_index, 0, "next_index");
      const size = started.chunk_size;
      const chunks = Math.ceil(file.byteLength / size);
      if (chunks > 1) {
        const gap = await a.client.request("attachment_upload_chunk", {
          module: "messages",
          user_token: a.token,
          upload_id: started.upload_id,
          index: 1,
          data: file.subarray(size, 2 * size),
        });
        expectEqual(gap.error, 4, "a gap");
        expectEqual(
          (gap.data as { next_index?: number })?.next_index,
          0,
          "data.next_index",
        );
      }
      for (let index = 0; index < chunks; index++) {
        await a.mail("attachment_upload_chunk", {
          upload_id: started.upload_id,
          index,
          data: file.subarray(index * size, (index + 1) * size),
        });
      }
      const status = await a.mail<{ done: boolean; received: number }>(
        "attachment_upload_status",
        { upload_id: started.upload_id },
      );
      expectEqual(status.received, file.byteLength, "received");
      const done = await a.mail<{ attachment_id: string; sha256: string }>(
        "attachment_upload_finish",
        { upload_id: started.upload_id },
      );
      expectEqual(done.sha256, await sha256Hex(file), "sha256");
      attachmentId = done.attachment_id;
    },
  );
  let withFile: { message_id: string } | undefined;
  await suite.check(
    "13.2",
    "MUST",
    "get answers the whole copy: body, cc, bcc, format, in_reply_to, and attachments as a list; attachment_get returns the bytes",
    async () => {
      if (!attachmentId) throw new Skip("the upload failed");
      withFile = await a.mail<{ message_id: string }>("send", {
        to: [bob.address],
        subject: "With a file",
        body: "**see attached**",
        format: "markdown",
        attachments: [attachmentId],
        in_reply_to: sent?.id,
      });
      const copy = await b.mail<Record<string, unknown>>("get", {
        id: withFile.message_id,
      });
      expectEqual(copy.body, "**see attached**", "body");
      expectEqual(copy.format, "markdown", "format");
      expect(Array.isArray(copy.cc) && Array.isArray(copy.bcc), "cc, bcc");
      expectEqual(
        (copy.bcc as string[]).length,
        0,
        "bcc of a recipient's copy",
      );
      expectEqual(copy.in_reply_to, sent?.message_id, "in_reply_to");
      const list = copy.attachments as {
        id: string;
        name: string;
        size: number;
        sha256: string;
      }[];
      expect(
        Array.isArray(list) && list.length === 1,
        "attachments is not a list of one",
      );
      expectEqual(list[0].name, "data.bin", "name");
      const parts: Uint8Array[] = [];
      let chunks = 1;
      for (let index = 0; index < chunks; index++) {
        const part = await b.mail<{ data: Uint8Array; chunks: number }>(
          "attachment_get",
          { id: withFile.message_id, attachment_id: list[0].id, index },
        );
        chunks = part.chunks;
        parts.push(part.data);
      }
      const joined = new Uint8Array(
        parts.reduce((n, p) => n + p.byteLength, 0),
      );
      let at = 0;
      for (const p of parts) {
        joined.set(p, at);
        at += p.byteLength;
      }
      expectEqual(await sha256Hex(joined), await sha256Hex(file), "the bytes");
      const fresh = await b.mail<Record<string, unknown>>("get", {
        id: "0".repeat(24),
      })
        .catch((e) => e);
      expect(
        fresh instanceof AmtpError && fresh.code === 201,
        "an unknown id is not 201",
      );
    },
  );
  await suite.check(
    "13.2",
    "MUST",
    "thread joins an answer to its parent's thread, oldest first",
    async () => {
      if (!withFile) throw new Skip("nothing was answered");
      const t = await b.mail<{ thread: string; messages: Summary[] }>(
        "thread",
        {
          id: withFile.message_id,
        },
      );
      expectEqual(t.thread, sent?.global_id, "thread");
      expectEqual(
        show(t.messages.map((m) => m.message_id)),
        show([sent?.message_id, withFile.message_id]),
        "messages",
      );
    },
  );
  await suite.check(
    "13.2",
    "MUST",
    "mark answers changed (int), missing ([string]) and seq; move and delete (to Trash, then for good)",
    async () => {
      const id = sent!.message_id;
      const marked = await b.mail<
        { changed: number; missing: string[]; seq: number }
      >(
        "mark",
        { ids: [id, "f".repeat(24)], seen: true, flagged: true },
      );
      expectEqual(marked.changed, 1, "changed");
      expectEqual(show(marked.missing), show(["f".repeat(24)]), "missing");
      expect(Number.isInteger(marked.seq), "seq");
      await b.mail("folder_create", { folder: "Conformance Box" });
      const folders = await b.mail<
        { folders: { name: string; system: boolean; total: number }[] }
      >(
        "folders",
      );
      expect(
        folders.folders.some((f) => f.name === "conformance box" && !f.system),
        "the folder is not listed in lowercase",
      );
      const moved = await b.mail<{ changed: number }>("move", {
        ids: [id],
        folder: "conformance box",
      });
      expectEqual(moved.changed, 1, "moved");
      const trashed = await b.mail<
        { trashed: number; deleted: number; missing: string[] }
      >(
        "delete",
        { ids: [id] },
      );
      expectEqual(trashed.trashed, 1, "trashed");
      const deleted = await b.mail<{ trashed: number; deleted: number }>(
        "delete",
        { ids: [id] },
      );
      expectEqual(deleted.deleted, 1, "deleted from Trash");
      expectEqual(
        await code(b.mail("get", { id })),
        201,
        "get after deleting",
      );
      await b.mail("folder_delete", { folder: "conformance box" });
    },
  );
  await suite.check(
    "13.2",
    "MUST",
    "changes since a seq replays what happened after it, so a client that missed pushes misses nothing",
    async () => {
      const before = await c.mail<{ seq: number }>("changes", {
        since: Number.MAX_SAFE_INTEGER,
      });
      const late = await a.mail<{ message_id: string }>("send", {
        to: [carol.address],
        subject: "while away",
        body: "",
      });
      const page = await c.mail<{
        changes: { seq: number; type: string; id: string; summary?: Summary }[];
        seq: number;
        reset: boolean;
        more: boolean;
      }>("changes", { since: before.seq });
      expectEqual(page.reset, false, "reset");
      expectEqual(page.more, false, "more");
      const change = page.changes.find((x) => x.type === "new");
      expect(change, `no new change in ${show(page.changes)}`);
      expectEqual(change.summary?.message_id, late.message_id, "summary");
      expect(change.seq > before.seq, "seq not after the cursor");
    },
  );
  await suite.check(
    "13.2",
    "MUST",
    "search finds by subject, sender and text; quota answers used and limit",
    async () => {
      const found = await b.mail<{ messages: Summary[] }>("search", {
        query: "see attached",
      });
      expect(
        found.messages.some((m) => m.subject === "With a file"),
        "by text",
      );
      const byFrom = await b.mail<{ messages: Summary[] }>("search", {
        from: alice.address,
      });
      expect(byFrom.messages.length > 0, "by sender");
      expectEqual(await code(b.mail("search", {})), 4, "no criterion");
      const quota = await b.mail<{ used: number; limit: number }>("quota");
      expect(
        Number.isInteger(quota.used) && quota.used > 0 && quota.limit > 0,
        `quota ${show(quota)}`,
      );
    },
  );
  await suite.check(
    "13.2",
    "MUST",
    "send refuses more than 100 recipients together (206) and no recipient at all (4)",
    async () => {
      expectEqual(
        await code(a.mail("send", {
          to: Array.from({ length: 60 }, (_, i) => world.address(`r${i}`)),
          cc: Array.from({ length: 41 }, (_, i) => world.address(`c${i}`)),
          subject: "x",
          body: "",
        })),
        206,
        "101 recipients together",
      );
      expectEqual(
        await code(a.mail("send", { to: [], subject: "x", body: "" })),
        4,
        "none",
      );
    },
  );
}
