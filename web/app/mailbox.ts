/// <reference lib="dom" />
/**
 * The mailbox as the app shows it: folders with their counts, the current
 * folder's messages loaded page by page (newest first) and grouped into
 * threads, kept live by the server's pushes (PROTOCOL.md §13.3). The
 * highest change seen is remembered; after a lost connection the changes
 * since then are read (`changes`) before any push held meanwhile is applied
 * — every change is applied once, by its sequence number, and every message
 * is keyed by its id, so nothing is lost or shown twice.
 *
 * @module
 */

import type { Push } from "../../client/mod.ts";
import { decryptMessage } from "../../client/e2e.ts";
import type { UserSession } from "./account.ts";
import { db } from "./db.ts";
import { Store } from "./store.ts";

/** A message in a list (PROTOCOL.md §13.1). */
export interface Summary {
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

/** A folder with its counts. */
export interface Folder {
  name: string;
  system: boolean;
  total: number;
  unseen: number;
}

/** A change of `changes` and pushes. */
interface Change {
  seq: number;
  type: "new" | "flags" | "move" | "delete";
  id: string;
  folder?: string;
  seen?: boolean;
  flagged?: boolean;
  summary?: Summary;
}

/** One row of the list: a thread, by its newest message in this folder. */
export interface ThreadRow {
  /** Thread id. */
  thread: string;
  /** Its messages loaded in this folder, newest first. */
  ids: string[];
  /** The newest. */
  newest: Summary;
  /** How many are not read. */
  unseen: number;
  /** Whether one is flagged. */
  flagged: boolean;
}

/** What the list shows. */
export interface MailboxView {
  /** Folders. */
  folders: Folder[];
  /** The folder shown (or `search`). */
  folder: string;
  /** The search shown, when `folder` is `search`. */
  query?: string;
  /** Threads in order. */
  rows: ThreadRow[];
  /** Messages of the folder not loaded yet (the list's length to come). */
  unloaded: number;
  /** A page is being read. */
  loading: boolean;
  /** Every message of the folder is loaded. */
  complete: boolean;
  /** Decrypted subjects of encrypted messages (by id). */
  subjects: Map<string, string>;
  /** The last change applied. */
  seq: number;
  /** Changes applied by catching up after reconnects (tests read it). */
  caughtUp: number;
}

/** Messages in the first page (a screen and more, quickly). */
const FIRST_PAGE = 100;
/** Messages in later pages (the server's most for `list`). */
const PAGE = 200;

/** A user's mailbox, live. */
export class Mailbox {
  /** What the list shows. */
  readonly view: Store<MailboxView>;
  readonly #session: UserSession;
  readonly #byId = new Map<string, Summary>();
  #ids: string[] = [];
  /** The ids of `#ids`, for membership. */
  #listed = new Set<string>();
  #cursor?: string;
  #held?: Push[];
  #seq = 0;
  #caughtUp = 0;
  #foldersTimer?: ReturnType<typeof setTimeout>;
  #generation = 0;
  readonly #decrypting = new Set<string>();
  readonly #stop: (() => void)[] = [];

  /** The mailbox of a signed-in session. */
  constructor(session: UserSession) {
    this.#session = session;
    this.view = new Store<MailboxView>({
      folders: [],
      folder: "inbox",
      rows: [],
      unloaded: 0,
      loading: true,
      complete: false,
      subjects: new Map(),
      seq: 0,
      caughtUp: 0,
    });
  }

  /** Load the folders and the inbox's first page; follow pushes and reconnects. */
  async start(): Promise<void> {
    const client = this.#session.client;
    this.#stop.push(client.onPush((push) => this.#onPush(push)));
    this.#stop.push(client.onState((state) => {
      if (state === "reconnected") this.#catchUp().catch(() => {});
    }));
    const folders = await this.#session.mail.call<
      { folders: Folder[]; seq: number }
    >("folders");
    this.#seq = folders.seq;
    this.view.set({ folders: folders.folders, seq: this.#seq });
    await this.open("inbox");
  }

  /** Stop following the server. */
  stop(): void {
    for (const stop of this.#stop) stop();
    clearTimeout(this.#foldersTimer);
  }

  /** A message loaded, by id. */
  summary(id: string): Summary | undefined {
    return this.#byId.get(id);
  }

  /** Show a folder (its first page). */
  async open(folder: string): Promise<void> {
    const generation = ++this.#generation;
    this.#setIds([]);
    this.#cursor = undefined;
    this.view.set({
      folder,
      query: undefined,
      rows: [],
      loading: true,
      complete: false,
    });
    const page = await this.#session.mail.call<
      { messages: Summary[]; cursor?: string }
    >("list", { folder, limit: FIRST_PAGE });
    if (generation !== this.#generation) return;
    this.#addPage(page.messages, page.cursor);
  }

  /** Show what a search finds. */
  async search(query: string): Promise<void> {
    const generation = ++this.#generation;
    this.#setIds([]);
    this.#cursor = undefined;
    this.view.set({
      folder: "search",
      query,
      rows: [],
      loading: true,
      complete: false,
    });
    const found = await this.#session.mail.call<
      { messages: Summary[]; cursor?: string }
    >("search", { query, limit: PAGE });
    if (generation !== this.#generation) return;
    this.#addPage(found.messages, found.cursor);
  }

  /** Read the next page, if any (the list calls it near its end). */
  async more(): Promise<void> {
    const view = this.view.value;
    if (view.loading || view.complete || !this.#cursor) return;
    const generation = this.#generation;
    this.view.set({ loading: true });
    const page = view.folder === "search"
      ? await this.#session.mail.call<{ messages: Summary[]; cursor?: string }>(
        "search",
        { query: view.query, limit: PAGE, cursor: this.#cursor },
      )
      : await this.#session.mail.call<{ messages: Summary[]; cursor?: string }>(
        "list",
        { folder: view.folder, limit: PAGE, cursor: this.#cursor },
      );
    if (generation !== this.#generation) return;
    this.#addPage(page.messages, page.cursor);
  }

  #setIds(ids: string[]): void {
    this.#ids = ids;
    this.#listed = new Set(ids);
  }

  #addPage(messages: Summary[], cursor?: string): void {
    for (const m of messages) {
      // A message a push already put in the list is not listed twice.
      if (this.#listed.has(m.id)) continue;
      this.#byId.set(m.id, m);
      this.#ids.push(m.id);
      this.#listed.add(m.id);
    }
    this.#cursor = cursor;
    this.#render({ loading: false, complete: !cursor });
  }

  /** Group the loaded messages into threads, newest thread first. */
  #render(extra: Partial<MailboxView> = {}): void {
    const rows = new Map<string, ThreadRow>();
    const order: ThreadRow[] = [];
    for (const id of this.#ids) {
      const m = this.#byId.get(id)!;
      let row = rows.get(m.thread);
      if (!row) {
        row = {
          thread: m.thread,
          ids: [],
          newest: m,
          unseen: 0,
          flagged: false,
        };
        rows.set(m.thread, row);
        order.push(row);
      }
      row.ids.push(id);
      if (!m.seen) row.unseen++;
      if (m.flagged) row.flagged = true;
    }
    const view = this.view.value;
    const folder = view.folders.find((f) => f.name === view.folder);
    const complete = extra.complete ?? view.complete;
    this.view.set({
      ...extra,
      rows: order,
      unloaded: complete || !folder
        ? 0
        : Math.max(0, folder.total - this.#ids.length),
      seq: this.#seq,
      caughtUp: this.#caughtUp,
    });
  }

  #onPush(push: Push): void {
    if (push.module !== "messages" || push.account !== this.#session.address) {
      return;
    }
    if (this.#held) {
      this.#held.push(push);
      return;
    }
    const data = push.data as Summary & { seq: number; changes?: Change[] };
    if (push.event === "message_new") {
      this.#apply({
        seq: data.seq,
        type: "new",
        id: data.id,
        folder: data.folder,
        summary: data,
      });
    } else if (push.event === "mailbox_changed") {
      for (const change of data.changes ?? []) this.#apply(change);
    }
    this.#render();
  }

  /** Apply one change, once (by its sequence number). */
  #apply(change: Change): boolean {
    if (change.seq <= this.#seq) return false;
    this.#seq = change.seq;
    const view = this.view.value;
    const shown = (folder?: string) =>
      view.folder !== "search" && folder === view.folder;
    const known = this.#byId.get(change.id);
    if (change.type === "new" && change.summary) {
      this.#byId.set(change.id, change.summary);
      if (shown(change.summary.folder) && !this.#listed.has(change.id)) {
        this.#insert(change.summary);
      }
    } else if (change.type === "flags" && known) {
      if (change.seen !== undefined) known.seen = change.seen;
      if (change.flagged !== undefined) known.flagged = change.flagged;
    } else if (change.type === "move" && known) {
      known.folder = change.folder ?? known.folder;
      if (!shown(known.folder)) this.#drop(change.id);
      else if (!this.#listed.has(change.id)) this.#insert(known);
    } else if (change.type === "delete") {
      this.#byId.delete(change.id);
      this.#drop(change.id);
    }
    this.#refreshFolders();
    return true;
  }

  #drop(id: string): void {
    if (!this.#listed.delete(id)) return;
    this.#ids = this.#ids.filter((i) => i !== id);
  }

  /** Put a message in its place by date (newest first). */
  #insert(m: Summary): void {
    const at = this.#ids.findIndex((id) =>
      this.#byId.get(id)!.date.getTime() < m.date.getTime()
    );
    if (at < 0) {
      // Older than every loaded one: it belongs to a page not read yet.
      if (!this.view.value.complete) return;
      this.#ids.push(m.id);
    } else this.#ids.splice(at, 0, m.id);
    this.#listed.add(m.id);
  }

  /** The folders' counts again, once a burst of changes is over. */
  #refreshFolders(): void {
    clearTimeout(this.#foldersTimer);
    this.#foldersTimer = setTimeout(async () => {
      try {
        const folders = await this.#session.mail.call<{ folders: Folder[] }>(
          "folders",
        );
        this.view.set({ folders: folders.folders });
        this.#render();
      } catch {
        // Disconnected: the next change or reconnect refreshes them.
      }
    }, 250);
  }

  /** After a reconnect: every change since the last one seen, then the pushes held meanwhile. */
  async #catchUp(): Promise<void> {
    if (this.#held) return;
    this.#held = [];
    try {
      while (true) {
        const page = await this.#session.mail.call<
          { changes: Change[]; seq: number; reset: boolean; more: boolean }
        >("changes", { since: this.#seq });
        if (page.reset) {
          // More was missed than the server keeps: read the folder again.
          this.#seq = page.seq;
          const held = this.#held;
          this.#held = undefined;
          await this.open(this.view.value.folder);
          for (const push of held) this.#onPush(push);
          return;
        }
        for (const change of page.changes) {
          if (this.#apply(change)) this.#caughtUp++;
        }
        if (!page.more) break;
      }
    } finally {
      const held = this.#held ?? [];
      this.#held = undefined;
      for (const push of held) this.#onPush(push);
      this.#render();
    }
  }

  /** Mark messages read or unread, flagged or not. */
  async mark(
    ids: string[],
    flags: { seen?: boolean; flagged?: boolean },
  ): Promise<void> {
    for (let i = 0; i < ids.length; i += 50) {
      await this.#session.mail.call("mark", {
        ids: ids.slice(i, i + 50),
        ...flags,
      });
    }
  }

  /** Move messages to a folder. */
  async move(ids: string[], folder: string): Promise<void> {
    for (let i = 0; i < ids.length; i += 50) {
      await this.#session.mail.call("move", {
        ids: ids.slice(i, i + 50),
        folder,
      });
    }
  }

  /** Delete messages (to Trash; for good from Trash). */
  async remove(ids: string[]): Promise<void> {
    for (let i = 0; i < ids.length; i += 50) {
      await this.#session.mail.call("delete", { ids: ids.slice(i, i + 50) });
    }
  }

  /** Make a folder. */
  async createFolder(name: string): Promise<void> {
    await this.#session.mail.call("folder_create", { folder: name });
    this.#refreshFolders();
  }

  /**
   * Decrypt the subjects of encrypted messages about to be shown (kept in
   * this browser, so each is decrypted once).
   */
  async decryptSubjects(ids: string[]): Promise<void> {
    const device = this.#session.device;
    if (!device) return;
    const subjects = this.view.value.subjects;
    const d = await db();
    const wanted = ids.filter((id) => {
      const m = this.#byId.get(id);
      return m?.encrypted && !subjects.has(id) && !this.#decrypting.has(id);
    });
    if (!wanted.length) return;
    for (const id of wanted) this.#decrypting.add(id);
    let changed = false;
    for (const id of wanted) {
      const key = `${this.#session.address}|${id}`;
      const cached = await d.get("subjects", key);
      if (cached) {
        subjects.set(id, cached.subject);
        changed = true;
        continue;
      }
      try {
        const copy = await this.#session.mail.call<{ body: Uint8Array }>(
          "get",
          { id },
        );
        const opened = await decryptMessage(copy.body, {
          address: this.#session.address,
          device,
        });
        subjects.set(id, opened.content.subject);
        await d.put("subjects", {
          subject: opened.content.subject,
          preview: opened.content.body.slice(0, 160),
        }, key);
        changed = true;
      } catch {
        // Not for this device (or changed): the list says "encrypted".
      } finally {
        this.#decrypting.delete(id);
      }
    }
    if (changed) this.view.set({ subjects: new Map(subjects) });
  }
}
