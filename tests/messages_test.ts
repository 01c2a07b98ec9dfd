/**
 * The messages module over real sessions: delivery, live pushes on several
 * devices, aliases, catch-all, per-recipient errors, idempotent sends,
 * paging, catch-up, attachments, quota and the mailbox operations.
 */

import assert from "node:assert/strict";
import { ErrorCode } from "../core/protocol/mod.ts";
import {
  type MailSession,
  mailWorld,
  pushOf,
  uploadAttachment,
} from "../testing/mail.ts";

type Summary = {
  id: string;
  message_id: string;
  subject: string;
  seen: boolean;
  folder: string;
  from: string;
};

for (const storage of ["files", "core"] as const) {
  Deno.test(`messages (storage: ${storage}): a message from A appears live on both of B's sessions and in A's Sent`, async () => {
    const w = await mailWorld({ AMTP_MODULE_STORAGE: storage });
    try {
      const a = await w.session("alice@example.org");
      const aPhone = await w.session("alice@example.org", {
        transport: "websocket",
      });
      const b1 = await w.session("bob@example.org");
      const b2 = await w.session("bob@example.org", { transport: "websocket" });
      const sent = await a.call<
        {
          message_id: string;
          id: string;
          recipients: { address: string; status: string }[];
        }
      >("send", {
        to: ["bob@example.org"],
        subject: "Hello",
        body: "Hi Bob, **lunch**?",
        format: "markdown",
      });
      assert.deepEqual(sent.recipients, [{
        address: "bob@example.org",
        status: "delivered",
      }]);
      for (const b of [b1, b2]) {
        const push = await pushOf(
          b,
          "message_new",
          (d) => d.message_id === sent.message_id,
        );
        assert.equal(push.subject, "Hello");
        assert.equal(push.from, "alice@example.org");
        assert.equal(push.preview, "Hi Bob, **lunch**?");
        assert.equal(push.folder, "inbox");
        assert.ok(typeof push.seq === "number");
      }
      // Alice's other device hears about the Sent copy.
      const changed = await pushOf(aPhone, "mailbox_changed");
      assert.equal((changed.changes as { folder: string }[])[0].folder, "sent");
      const inbox = await b1.call<{ messages: Summary[] }>("list", {
        folder: "inbox",
      });
      assert.equal(inbox.messages.length, 1);
      const full = await b1.call<Record<string, unknown>>("get", {
        id: inbox.messages[0].id,
      });
      assert.equal(full.body, "Hi Bob, **lunch**?");
      assert.equal(full.format, "markdown");
      assert.deepEqual(full.bcc, []);
      const sentBox = await a.call<{ messages: Summary[] }>("list", {
        folder: "sent",
      });
      assert.equal(sentBox.messages[0].id, sent.id);
      assert.equal(sentBox.messages[0].seen, true);
      // Where the mailboxes are: the module's own database, or the core's.
      const own = await Deno.stat(`${w.t.dataDir}/modules/messages.kv`).then(
        () => true,
        () => false,
      );
      assert.equal(own, storage === "files");
      const core = await Deno.openKv(`${w.t.dataDir}/amtp.kv`);
      const inCore = await core.list({ prefix: ["mod", "messages"] }, {
        limit: 1,
      }).next();
      core.close();
      assert.equal(!inCore.done, storage === "core");
    } finally {
      await w.t.close();
    }
  });
}

Deno.test("messages: an alias with three recipients, a catch-all, and valid with invalid recipients", async () => {
  const w = await mailWorld();
  try {
    const a = await w.session("alice@example.org");
    const team = await Promise.all(
      ["bob", "carol", "dave"].map((n) => w.session(`${n}@example.org`)),
    );
    await w.admin("admin_add_alias", {
      address: "team@example.org",
      recipients: team.map((s) => s.address),
    });
    const r1 = await a.call<{ recipients: { status: string }[] }>("send", {
      to: ["team@example.org"],
      subject: "To the team",
      body: "x",
    });
    assert.deepEqual(r1.recipients.map((r) => r.status), ["delivered"]);
    for (const s of team) {
      const push = await pushOf(
        s,
        "message_new",
        (d) => d.subject === "To the team",
      );
      assert.equal(push.from, "alice@example.org");
    }
    // No catch-all yet: an unknown address fails on its own while the others receive.
    const mixed = await a.call<
      { recipients: { address: string; status: string; error?: number }[] }
    >("send", {
      to: ["bob@example.org", "nobody@example.org", "bad!address@example.org"],
      cc: ["friend@remote.test"],
      subject: "Mixed",
      body: "y",
    });
    assert.deepEqual(
      mixed.recipients.map((r) => [r.address, r.status, r.error]),
      [
        ["bob@example.org", "delivered", undefined],
        ["nobody@example.org", "failed", ErrorCode.NOT_FOUND],
        ["bad!address@example.org", "failed", ErrorCode.INVALID_ADDRESS],
        ["friend@remote.test", "queued", undefined],
      ],
    );
    await pushOf(team[0], "message_new", (d) => d.subject === "Mixed");
    // The remote recipient waits durably in the outbound queue.
    const queued = [];
    for await (const e of w.t.server.store.kv.list({ prefix: ["outbound"] })) {
      queued.push(e.value);
    }
    assert.equal(queued.length, 1);
    assert.deepEqual((queued[0] as { to: string[] }).to, [
      "friend@remote.test",
    ]);
    // With a catch-all, unknown addresses reach it.
    await w.admin("admin_set_catchall", {
      domain: "example.org",
      recipients: ["carol@example.org"],
    });
    const caught = await a.call<{ recipients: { status: string }[] }>("send", {
      to: ["whoever@example.org"],
      subject: "Caught",
      body: "z",
    });
    assert.equal(caught.recipients[0].status, "delivered");
    await pushOf(team[1], "message_new", (d) => d.subject === "Caught");
  } finally {
    await w.t.close();
  }
});

Deno.test("messages: a retried send with the same client id is stored once; bcc stays hidden", async () => {
  const w = await mailWorld();
  try {
    const a = await w.session("alice@example.org");
    const b = await w.session("bob@example.org");
    const c = await w.session("carol@example.org");
    const params = {
      to: ["bob@example.org"],
      bcc: ["carol@example.org"],
      subject: "Once",
      body: "only once",
      client_id: "c-123",
    };
    const [first, second] = await Promise.all([
      a.call<Record<string, unknown>>("send", params),
      a.call<Record<string, unknown>>("send", params),
    ]);
    const third = await a.call<Record<string, unknown>>("send", params);
    assert.equal(first.message_id, second.message_id);
    assert.equal(first.message_id, third.message_id);
    for (const s of [b, c]) {
      const inbox = await s.call<{ messages: Summary[] }>("list");
      assert.equal(inbox.messages.length, 1, s.address);
    }
    assert.equal(
      (await a.call<{ messages: Summary[] }>("list", { folder: "sent" }))
        .messages.length,
      1,
    );
    const bobCopy = await b.call<Record<string, unknown>>("get", {
      id: first.message_id,
    });
    assert.deepEqual(bobCopy.bcc, []);
    const sentCopy = await a.call<Record<string, unknown>>("get", {
      id: first.id,
    });
    assert.deepEqual(sentCopy.bcc, ["carol@example.org"]);
  } finally {
    await w.t.close();
  }
});

Deno.test("messages: paging through 1,000 messages has no gap and no repeat", async () => {
  const w = await mailWorld();
  try {
    const a = await w.session("alice@example.org");
    const b = await w.session("bob@example.org");
    const sent = new Set<string>();
    for (let batch = 0; batch < 1000; batch += 50) {
      const results = await Promise.all(
        Array.from(
          { length: 50 },
          (_, i) =>
            a.call<{ message_id: string }>("send", {
              to: ["bob@example.org"],
              subject: `n${batch + i}`,
              body: ".",
            }),
        ),
      );
      for (const r of results) sent.add(r.message_id);
    }
    assert.equal(sent.size, 1000);
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    let lastDate = Infinity;
    do {
      const page = await b.call<
        { messages: (Summary & { date: Date })[]; cursor?: string }
      >("list", { limit: 70, cursor });
      for (const m of page.messages) {
        assert.ok(m.date.getTime() <= lastDate, "newest first");
        lastDate = m.date.getTime();
        seen.push(m.message_id);
      }
      cursor = page.cursor;
      pages++;
    } while (cursor);
    assert.equal(pages, Math.ceil(1000 / 70));
    // A cursor this list never gave, or not a string: a parameter error, not a fault.
    for (const bad of ["AAAA-not-a-cursor", 12345]) {
      const answer = await b.request("list", { limit: 70, cursor: bad });
      assert.equal(answer.error, 4, JSON.stringify(answer));
      assert.equal(
        (answer.data as { parameter?: string }).parameter,
        "cursor",
      );
    }
    assert.equal(seen.length, 1000);
    assert.equal(new Set(seen).size, 1000);
    assert.deepEqual([...seen].sort(), [...sent].sort());
    const folders = await b.call<
      { folders: { name: string; total: number; unseen: number }[] }
    >("folders");
    assert.deepEqual(folders.folders.find((f) => f.name === "inbox"), {
      name: "inbox",
      system: true,
      total: 1000,
      unseen: 1000,
    });
  } finally {
    await w.t.close();
  }
});

Deno.test("messages: a client that missed pushes catches up from its cursor", async () => {
  const w = await mailWorld();
  try {
    const a = await w.session("alice@example.org");
    const b = await w.session("bob@example.org");
    await a.call("send", {
      to: ["bob@example.org"],
      subject: "before",
      body: "1",
    });
    const { seq } = await b.call<{ seq: number }>("changes", { since: 0 });
    assert.equal(seq, 1);
    b.client.close();
    // While Bob is away: two messages, and Bob's phone marks the first one seen.
    const phone = await w.session("bob@example.org");
    await a.call("send", {
      to: ["bob@example.org"],
      subject: "while away 1",
      body: "2",
    });
    await a.call("send", {
      to: ["bob@example.org"],
      subject: "while away 2",
      body: "3",
    });
    const first = (await phone.call<{ messages: Summary[] }>("list")).messages
      .find((m) => m.subject === "before")!;
    await phone.call("mark", { ids: [first.id], seen: true });
    // Bob's laptop comes back and asks for what changed since its cursor.
    const back = await w.session("bob@example.org");
    const caught = await back.call<
      {
        changes: {
          seq: number;
          type: string;
          id: string;
          summary?: Summary;
          seen?: boolean;
        }[];
        seq: number;
        reset: boolean;
        more: boolean;
      }
    >("changes", { since: seq });
    assert.equal(caught.reset, false);
    assert.equal(caught.more, false);
    assert.deepEqual(caught.changes.map((c) => c.type), [
      "new",
      "new",
      "flags",
    ]);
    assert.deepEqual(caught.changes.map((c) => c.seq), [2, 3, 4]);
    assert.deepEqual(
      caught.changes.slice(0, 2).map((c) => c.summary!.subject),
      ["while away 1", "while away 2"],
    );
    assert.equal(caught.changes[2].id, first.id);
    assert.equal(caught.changes[2].seen, true);
    assert.equal(caught.seq, 4);
    // Paged catch-up.
    const paged = await back.call<{ changes: unknown[]; more: boolean }>(
      "changes",
      { since: 0, limit: 2 },
    );
    assert.equal(paged.changes.length, 2);
    assert.equal(paged.more, true);
    // A cursor from the future means: start over.
    assert.equal(
      (await back.call<{ reset: boolean }>("changes", { since: 99 })).reset,
      true,
    );
  } finally {
    await w.t.close();
  }
});

/** Upload `data` named `name` (the order these tests pass them in). */
const upload = (s: MailSession, data: Uint8Array, name: string) =>
  uploadAttachment(s, name, data);

Deno.test("messages: a 10 MiB attachment round-trips with a matching checksum, resumable", async () => {
  const w = await mailWorld();
  try {
    const a = await w.session("alice@example.org");
    const b = await w.session("bob@example.org");
    const data = new Uint8Array(10 * 1024 * 1024);
    for (let i = 0; i < data.length; i += 65536) {
      crypto.getRandomValues(data.subarray(i, i + 65536));
    }
    const sha256 = Array.from(
      new Uint8Array(await crypto.subtle.digest("SHA-256", data)),
      (x) => x.toString(16).padStart(2, "0"),
    ).join("");
    // Resume: upload three chunks, "reconnect", ask where it stands, go on.
    const started = await a.call<{ upload_id: string; chunk_size: number }>(
      "attachment_upload",
      { name: "big.bin", size: data.byteLength, sha256 },
    );
    const size = started.chunk_size;
    for (let index = 0; index < 3; index++) {
      await a.call("attachment_upload_chunk", {
        upload_id: started.upload_id,
        index,
        data: data.subarray(index * size, (index + 1) * size),
      });
    }
    // A repeated chunk is acknowledged without harm; a gap is refused.
    await a.call("attachment_upload_chunk", {
      upload_id: started.upload_id,
      index: 2,
      data: data.subarray(2 * size, 3 * size),
    });
    const gap = await a.request("attachment_upload_chunk", {
      upload_id: started.upload_id,
      index: 7,
      data: data.subarray(0, size),
    });
    assert.equal(gap.error, ErrorCode.INVALID_PARAMETER);
    const status = await a.call<{ next_index: number; received: number }>(
      "attachment_upload_status",
      { upload_id: started.upload_id },
    );
    assert.equal(status.next_index, 3);
    for (
      let index = status.next_index;
      index * size < data.byteLength;
      index++
    ) {
      await a.call("attachment_upload_chunk", {
        upload_id: started.upload_id,
        index,
        data: data.subarray(index * size, (index + 1) * size),
      });
    }
    const finished = await a.call<{ attachment_id: string; sha256: string }>(
      "attachment_upload_finish",
      { upload_id: started.upload_id },
    );
    assert.equal(finished.sha256, sha256);
    const sent = await a.call<{ message_id: string }>("send", {
      to: ["bob@example.org"],
      subject: "file",
      body: "see attached",
      attachments: [finished.attachment_id],
    });
    const message = await b.call<
      {
        attachments: {
          id: string;
          size: number;
          sha256: string;
          name: string;
        }[];
      }
    >("get", { id: sent.message_id });
    const ref = message.attachments[0];
    assert.equal(ref.size, data.byteLength);
    assert.equal(ref.name, "big.bin");
    const parts: Uint8Array[] = [];
    let chunks = 1;
    for (let index = 0; index < chunks; index++) {
      const part = await b.call<{ data: Uint8Array; chunks: number }>(
        "attachment_get",
        { id: sent.message_id, attachment_id: ref.id, index },
      );
      chunks = part.chunks;
      parts.push(part.data);
    }
    const whole = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
    let at = 0;
    for (const p of parts) {
      whole.set(p, at);
      at += p.byteLength;
    }
    const got = Array.from(
      new Uint8Array(await crypto.subtle.digest("SHA-256", whole)),
      (x) => x.toString(16).padStart(2, "0"),
    ).join("");
    assert.equal(got, ref.sha256);
    assert.equal(got, sha256);
    // A wrong checksum is refused at the end; someone else's attachment cannot be sent or read.
    const wrong = await a.call<{ upload_id: string }>("attachment_upload", {
      name: "x",
      size: 3,
      sha256: "0".repeat(64),
    });
    await a.call("attachment_upload_chunk", {
      upload_id: wrong.upload_id,
      index: 0,
      data: new Uint8Array([1, 2, 3]),
    });
    assert.equal(
      (await a.request("attachment_upload_finish", {
        upload_id: wrong.upload_id,
      })).error,
      ErrorCode.INVALID_PARAMETER,
    );
    assert.equal(
      (await b.request("send", {
        to: ["alice@example.org"],
        attachments: [finished.attachment_id],
      })).error,
      ErrorCode.NOT_FOUND,
    );
    const c = await w.session("carol@example.org");
    assert.equal(
      (await c.request("attachment_get", {
        id: sent.message_id,
        attachment_id: ref.id,
      })).error,
      ErrorCode.NOT_FOUND,
    );
    // Too large is refused before any byte is sent.
    assert.equal(
      (await a.request("attachment_upload", {
        name: "huge",
        size: 26 * 1024 * 1024,
        sha256,
      })).error,
      ErrorCode.LIMIT_EXCEEDED,
    );
    await upload(a, new Uint8Array([1, 2, 3]), "small.bin");
  } finally {
    await w.t.close();
  }
});

Deno.test("messages: a full mailbox refuses with its code, the other recipients still receive", async () => {
  const w = await mailWorld();
  try {
    const a = await w.session("alice@example.org");
    const b = await w.session("bob@example.org");
    const c = await w.session("carol@example.org");
    await w.admin("admin_set_user", {
      address: "bob@example.org",
      quota: 3000,
    });
    const body = "x".repeat(1200);
    const first = await a.call<{ recipients: { status: string }[] }>("send", {
      to: ["bob@example.org"],
      subject: "1",
      body,
    });
    assert.equal(first.recipients[0].status, "delivered");
    const second = await a.call<
      { recipients: { address: string; status: string; error?: number }[] }
    >("send", {
      to: ["bob@example.org", "carol@example.org"],
      subject: "2",
      body,
    });
    assert.deepEqual(second.recipients.map((r) => [r.status, r.error]), [[
      "delivered",
      undefined,
    ], ["delivered", undefined]]);
    const third = await a.call<
      { recipients: { address: string; status: string; error?: number }[] }
    >("send", {
      to: ["bob@example.org", "carol@example.org"],
      subject: "3",
      body,
    });
    assert.deepEqual(third.recipients[0], {
      address: "bob@example.org",
      status: "failed",
      error: ErrorCode.LIMIT_EXCEEDED,
      message: "the recipient's mailbox is full",
    });
    assert.equal(third.recipients[1].status, "delivered");
    const quota = await b.call<{ used: number; limit: number }>("quota");
    assert.equal(quota.limit, 3000);
    assert.ok(quota.used <= 3000);
    // Deleting for good frees room.
    const inbox = await b.call<{ messages: Summary[] }>("list");
    await b.call("delete", {
      ids: inbox.messages.map((m) => m.id),
      permanent: true,
    });
    assert.equal((await b.call<{ used: number }>("quota")).used, 0);
    assert.equal(
      (await c.call<{ messages: Summary[] }>("list")).messages.length,
      2,
    );
  } finally {
    await w.t.close();
  }
});

Deno.test("messages: folders, flags, move, trash, delete, threads and search", async () => {
  const w = await mailWorld();
  try {
    const a = await w.session("alice@example.org");
    const b = await w.session("bob@example.org");
    const bPhone = await w.session("bob@example.org");
    const root = await a.call<{ message_id: string }>("send", {
      to: ["bob@example.org"],
      subject: "Plans for Friday",
      body: "Shall we hike the ridge?",
    });
    const reply = await b.call<{ message_id: string }>("send", {
      to: ["alice@example.org"],
      subject: "Re: Plans for Friday",
      body: "Yes, bring water",
      in_reply_to: root.message_id,
    });
    await a.call("send", {
      to: ["bob@example.org"],
      subject: "Re: Re: Plans",
      body: "Great",
      in_reply_to: reply.message_id,
    });
    await a.call("send", {
      to: ["bob@example.org"],
      subject: "Invoice",
      body: "Amount due: 12",
    });
    const inbox = (await b.call<{ messages: Summary[] }>("list")).messages;
    assert.equal(inbox.length, 3);
    const invoice = inbox.find((m) => m.subject === "Invoice")!;
    // Flags, with the change reaching Bob's other session.
    await b.call("mark", { ids: [invoice.id], seen: true, flagged: true });
    const flagPush = await pushOf(
      bPhone,
      "mailbox_changed",
      (d) => (d.changes as { type: string }[])[0].type === "flags",
    );
    assert.equal((flagPush.changes as { seen: boolean }[])[0].seen, true);
    assert.deepEqual(
      (await b.call<{ messages: Summary[] }>("list", { unseen: true })).messages
        .map((m) => m.subject).sort(),
      ["Plans for Friday", "Re: Re: Plans"],
    );
    // Own folders and moves.
    await b.call("folder_create", { folder: "Bills" });
    assert.equal(
      (await b.request("folder_create", { folder: "bills" })).error,
      ErrorCode.INVALID_PARAMETER,
    );
    await b.call("move", { ids: [invoice.id], folder: "bills" });
    await pushOf(
      bPhone,
      "mailbox_changed",
      (d) => (d.changes as { type: string }[])[0].type === "move",
    );
    assert.equal(
      (await b.call<{ messages: Summary[] }>("list", { folder: "bills" }))
        .messages[0].id,
      invoice.id,
    );
    assert.equal(
      (await b.request("move", { ids: [invoice.id], folder: "nowhere" })).error,
      ErrorCode.NOT_FOUND,
    );
    assert.equal(
      (await b.request("folder_delete", { folder: "bills" })).error,
      ErrorCode.INVALID_PARAMETER,
    );
    const folders = (await b.call<
      { folders: { name: string; total: number; unseen: number }[] }
    >("folders")).folders;
    assert.deepEqual(folders.map((f) => [f.name, f.total, f.unseen]), [
      ["inbox", 2, 2],
      ["sent", 1, 0],
      ["archive", 0, 0],
      ["trash", 0, 0],
      ["bills", 1, 0],
    ]);
    // Threads follow in_reply_to across both mailboxes' copies.
    const thread = await b.call<{ messages: Summary[] }>("thread", {
      id: root.message_id,
    });
    assert.deepEqual(thread.messages.map((m) => m.subject), [
      "Plans for Friday",
      "Re: Plans for Friday",
      "Re: Re: Plans",
    ]);
    // Search by sender, subject and text.
    const bySubject = await b.call<{ messages: Summary[] }>("search", {
      subject: "friday",
    });
    assert.equal(bySubject.messages.length, 2);
    const byText = await b.call<{ messages: Summary[] }>("search", {
      query: "RIDGE",
    });
    assert.deepEqual(byText.messages.map((m) => m.subject), [
      "Plans for Friday",
    ]);
    const byFrom = await b.call<{ messages: Summary[] }>("search", {
      from: "alice@",
      folder: "inbox",
    });
    assert.equal(byFrom.messages.length, 2);
    // Delete: to Trash, then for good.
    await b.call("delete", { ids: [invoice.id] });
    assert.equal(
      (await b.call<{ messages: Summary[] }>("list", { folder: "trash" }))
        .messages.length,
      1,
    );
    const gone = await b.call<{ deleted: number }>("delete", {
      ids: [invoice.id],
    });
    assert.equal(gone.deleted, 1);
    assert.equal(
      (await b.request("get", { id: invoice.id })).error,
      ErrorCode.NOT_FOUND,
    );
    await b.call("folder_delete", { folder: "bills" });
    // Alice still has her Sent copy and its body.
    const aliceSent =
      (await a.call<{ messages: Summary[] }>("list", { folder: "sent" }))
        .messages.find((m) => m.subject === "Invoice")!;
    assert.equal(
      (await a.call<{ body: string }>("get", { id: aliceSent.id })).body,
      "Amount due: 12",
    );
    // Bad input gets its code.
    assert.equal(
      (await b.request("send", { to: [] })).error,
      ErrorCode.INVALID_PARAMETER,
    );
    assert.equal(
      (await b.request("send", { to: "bob@example.org" })).error,
      ErrorCode.INVALID_PARAMETER,
    );
    assert.equal(
      (await b.request("send", { to: ["x@example.org"], format: "rtf" })).error,
      ErrorCode.INVALID_PARAMETER,
    );
    assert.equal(
      (await b.request("send", {
        to: ["x@example.org"],
        body: new Uint8Array(4),
      })).error,
      ErrorCode.INVALID_PARAMETER,
    );
    assert.equal(
      (await b.request("mark", { ids: [invoice.id] })).error,
      ErrorCode.INVALID_PARAMETER,
    );
    assert.equal(
      (await b.request("list", { limit: 1000 })).error,
      ErrorCode.INVALID_PARAMETER,
    );
  } finally {
    await w.t.close();
  }
});

Deno.test("messages: encrypted bodies are stored and relayed as opaque bytes", async () => {
  const w = await mailWorld();
  try {
    const a = await w.session("alice@example.org");
    const b = await w.session("bob@example.org");
    const sealed = crypto.getRandomValues(new Uint8Array(300));
    const sent = await a.call<{ message_id: string }>("send", {
      to: ["bob@example.org"],
      subject: "",
      body: sealed,
      encrypted: true,
    });
    const got = await b.call<
      { body: Uint8Array; encrypted: boolean; preview: string }
    >("get", { id: sent.message_id });
    assert.equal(got.encrypted, true);
    assert.equal(got.preview, "");
    assert.deepEqual([...got.body], [...sealed]);
  } finally {
    await w.t.close();
  }
});
