/// <reference lib="dom" />
/**
 * The mail screen: folders with unread counts, a windowed thread list that
 * loads page by page as it scrolls (10,000 messages stay fast: only the rows
 * in view exist), and the reading pane: a thread, each message decrypted
 * with its lock, signature and warnings, HTML in a sandboxed frame with
 * remote content blocked until asked, attachments with download and image
 * preview. Keyboard: j/k next and previous, Enter open, c compose, r reply,
 * a reply all, f forward, s flag, u unread, Delete delete, / search.
 *
 * @module
 */

import DOMPurify from "dompurify";
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import {
  fetchAttachment,
  type MessageCopy,
  type OpenedMessage,
  openMessage,
} from "../../client/mail.ts";
import { plainAttachmentSize } from "../../client/e2e.ts";
import { keepForOffline } from "./db.ts";
import {
  describe,
  formatDate,
  formatMoment,
  formatSize,
  html,
  saveFile,
} from "./html.ts";
import type { Mailbox, MailboxView, Summary, ThreadRow } from "./mailbox.ts";
import { app, notify } from "./state.ts";
import { useStore } from "./store.ts";
import { type ComposeInit, openCompose } from "./ui_compose.ts";

/** Height of one row of the list, in pixels (the list is windowed on it). */
const ROW = 68;
/** Rows drawn above and below the visible ones. */
const OVERSCAN = 6;

const FOLDER_NAMES: Record<string, string> = {
  inbox: "Inbox",
  sent: "Sent",
  archive: "Archive",
  trash: "Trash",
};

function folderName(name: string): string {
  return FOLDER_NAMES[name] ?? name;
}

function Sidebar({ mailbox, view }: { mailbox: Mailbox; view: MailboxView }) {
  const [query, setQuery] = useState("");
  const [newFolder, setNewFolder] = useState("");
  const search = (event: Event) => {
    event.preventDefault();
    if (query.trim()) {
      mailbox.search(query.trim()).catch((e) => notify(describe(e), "error"));
    }
  };
  return html`
    <nav class="sidebar" aria-label="Folders">
      <button class="primary compose" onClick=${() => openCompose({})}
        aria-keyshortcuts="c">Compose</button>
      <form role="search" onSubmit=${search}>
        <label for="search" class="visually-hidden">Search mail</label>
        <input id="search" type="search" placeholder="Search mail" value=${query}
          aria-keyshortcuts="/"
          onInput=${(e: Event) =>
            setQuery((e.target as HTMLInputElement).value)} />
      </form>
      <ul class="folders">
          ${view.folders.map((f) =>
            html`<li><button class=${view.folder === f.name ? "current" : ""}
          aria-current=${view.folder === f.name ? "page" : undefined}
          data-folder=${f.name}
          onClick=${() =>
              mailbox.open(f.name).catch((e) => notify(describe(e), "error"))}>
          <span>${folderName(f.name)}</span>
          ${
              f.unseen
                ? html`<span class="count" aria-label="${f.unseen} unread">${f.unseen}</span>`
                : null
            }
        </button></li>`
          )}
          <li><button onClick=${() =>
            openCompose({ drafts: true })}>Drafts</button></li>
        </ul>
      <form class="new-folder" onSubmit=${(e: Event) => {
        e.preventDefault();
        if (newFolder.trim()) {
          mailbox.createFolder(newFolder.trim()).then(() => setNewFolder(""))
            .catch((err) => notify(describe(err), "error"));
        }
      }}>
        <label for="new-folder" class="visually-hidden">New folder</label>
        <input id="new-folder" placeholder="New folder" value=${newFolder}
          onInput=${(e: Event) =>
            setNewFolder((e.target as HTMLInputElement).value)} />
      </form>
    </nav>
  `;
}

function Row(
  { row, index, selected, view, onOpen }: {
    row: ThreadRow;
    index: number;
    selected: boolean;
    view: MailboxView;
    onOpen: (row: ThreadRow) => void;
  },
) {
  const m = row.newest;
  const who = m.folder === "sent" ? `To ${m.to.join(", ")}` : m.from;
  const subject = m.encrypted
    ? view.subjects.get(m.id) ?? "Encrypted message"
    : m.subject || "(no subject)";
  return html`
    <li class=${`row${row.unseen ? " unseen" : ""}${
      selected ? " selected" : ""
    }`} style=${{ top: `${index * ROW}px` }} data-id=${m.id}>
      <button onClick=${() => onOpen(row)} aria-current=${selected || undefined}
        aria-label=${`${row.unseen ? "Unread. " : ""}${who}: ${subject}${
          row.ids.length > 1 ? `, ${row.ids.length} messages` : ""
        }`}>
        <span class="who">${who}</span>
        <span class="when">${formatDate(m.date)}</span>
        <span class="subject">
            ${m.encrypted
              ? html`<span class="lock" title="End-to-end encrypted">🔒</span>`
              : null}
            ${row.flagged ? html`<span title="Flagged">★</span>` : null}
            ${subject}
            ${row.ids.length > 1
              ? html`<span class="thread-count">${row.ids.length}</span>`
              : null}
            ${m.attachments ? html`<span title="Attachments">📎</span>` : null}
          </span>
        <span class="preview">${m.encrypted ? "" : m.preview}</span>
      </button>
    </li>
  `;
}

let marked = false;

function MessageList(
  { mailbox, view, selected, onOpen }: {
    mailbox: Mailbox;
    view: MailboxView;
    selected?: string;
    onOpen: (row: ThreadRow) => void;
  },
) {
  const ref = useRef<HTMLDivElement>(null);
  const [box, setBox] = useState({ top: 0, height: 800 });
  useEffect(() => {
    const el = ref.current!;
    const measure = () =>
      setBox({ top: el.scrollTop, height: el.clientHeight });
    measure();
    const observer = new ResizeObserver(measure);
    observer.observe(el);
    return () => observer.disconnect();
  }, []);
  useEffect(() => {
    ref.current?.scrollTo({ top: 0 });
  }, [view.folder, view.query]);
  const total = view.rows.length + view.unloaded;
  const first = Math.max(0, Math.floor(box.top / ROW) - OVERSCAN);
  const last = Math.min(
    total,
    Math.ceil((box.top + box.height) / ROW) + OVERSCAN,
  );
  const shown = view.rows.slice(first, Math.min(last, view.rows.length));
  useEffect(() => {
    // Near the end of what is loaded: the next page.
    if (!view.complete && last >= view.rows.length - OVERSCAN) {
      mailbox.more().catch(() => {});
    }
    mailbox.decryptSubjects(shown.map((r) => r.newest.id)).catch(() => {});
  });
  useLayoutEffect(() => {
    if (!marked && !view.loading) {
      marked = true;
      performance.mark("amtp-list-shown");
    }
  }, [view.loading]);
  return html`
    <section class="list" aria-label=${`Messages in ${
      view.folder === "search"
        ? `search "${view.query}"`
        : folderName(view.folder)
    }`}>
      <div
        class="list-head"><h2>${view.folder === "search"
          ? `Search: ${view.query}`
          : folderName(view.folder)}</h2><span class="muted">${view.loading &&
            !view.rows.length
          ? "Loading…"
          : ""}${!view.loading && !view.rows.length
          ? "No messages"
          : ""}</span></div>
      <div class="scroller" ref=${ref} tabindex="-1"
        onScroll=${(e: Event) =>
          setBox({
            top: (e.target as HTMLElement).scrollTop,
            height: (e.target as HTMLElement).clientHeight,
          })}>
        <ul class="rows" style=${{ height: `${total * ROW}px` }}
          aria-rowcount=${total} data-rows=${view.rows.length}>
            ${shown.map((row, i) =>
              html`
                <${Row} key=${row.thread} row=${row} index=${first + i}
                  selected=${row.thread ===
                    selected} view=${view} onOpen=${onOpen} />
              `
            )}
            ${last > view.rows.length
              ? html`<li class="row placeholder" style=${{
                top: `${view.rows.length * ROW}px`,
              }}>Loading more…</li>`
              : null}
          </ul>
      </div>
    </section>
  `;
}

/** One message of a thread, opened. */
interface Opened {
  copy: MessageCopy;
  result: OpenedMessage;
  summary: Summary;
}

function SecurityLine({ o }: { o: Opened }) {
  const r = o.result;
  if (!r.encrypted) {
    return html`<p class="badge plain" data-testid="encryption">⚠ Not end-to-end
      encrypted: the servers could read this message.</p>`;
  }
  if (!r.opened) {
    return html`<p class="badge bad" data-testid="encryption">🔒 End-to-end
      encrypted, but not readable here: ${r.error}</p>`;
  }
  const sender = r.opened.sender;
  const own = sender === app.value.user?.address && r.trust === "confirmed";
  const signature = r.signature === "invalid"
    ? html`
      <span class="bad"
        data-testid="signature">✗ Signature INVALID: changed, or not signed by the key it names</span>
    `
    : r.signature === "unlisted"
    ? html`
      <span class="bad"
        data-testid="signature">⚠ Signed by a device that is NOT in ${sender}'s device list</span>
    `
    : own
    ? html`
      <span class="good"
        data-testid="signature">✓ Signature verified: your own device "${r
          .deviceLabel}"</span>
    `
    : {
      "confirmed": html`
        <span class="good"
          data-testid="signature">✓ Signature verified: device "${r
            .deviceLabel}" of ${sender}, master key confirmed by you</span>
      `,
      "known": html`
        <span class="good"
          data-testid="signature">✓ Signature verified: device "${r
            .deviceLabel}" of ${sender}, master key seen before</span>
      `,
      "first-use": html`
        <span class="good"
          data-testid="signature">✓ Signature verified: device "${r
            .deviceLabel}" of ${sender} (master key seen for the first time: compare the safety code in Settings)</span>
      `,
      "changed": html`
        <span class="bad"
          data-testid="signature">⚠ ${sender} has a NEW master key: compare the safety code in Settings before trusting it</span>
      `,
      "rolled-back": html`
        <span class="bad"
          data-testid="signature">⚠ The server shows an OLDER device list of ${sender} than seen before</span>
      `,
    }[r.trust!];
  return html`<div class="security">
    <p class="badge good" data-testid="encryption">🔒 End-to-end encrypted</p>
    <p class="badge">${signature}</p>
    ${r.problems.map((p) => html`<p class="badge bad" role="alert">⚠ ${p}</p>`)}
  </div>`;
}

function HtmlBody({ source }: { source: string }) {
  const ref = useRef<HTMLIFrameElement>(null);
  const [remote, setRemote] = useState(false);
  const [height, setHeight] = useState(200);
  const clean = DOMPurify.sanitize(source, {
    FORBID_TAGS: ["form", "input", "button", "textarea", "select", "link"],
    FORBID_ATTR: ["srcset"],
  }) as string;
  const hasRemote =
    /\b(src|background)\s*=\s*["']?https?:|url\(\s*["']?https?:/i
      .test(clean);
  useEffect(() => {
    const frame = ref.current!;
    const onMessage = (event: MessageEvent) => {
      if (event.source !== frame.contentWindow) return;
      if (event.data?.ready) {
        frame.contentWindow!.postMessage({ html: clean }, "*");
      } else if (typeof event.data?.height === "number") {
        setHeight(Math.min(4000, Math.max(80, event.data.height + 16)));
      }
    };
    addEventListener("message", onMessage);
    return () => removeEventListener("message", onMessage);
  }, [clean, remote]);
  return html`<div class="html-body">
    ${
    hasRemote && !remote
      ? html`<p class="badge">Remote images are blocked (they tell the sender
        when you read). <button onClick=${() =>
        setRemote(true)}>Load remote images</button></p>`
      : null
  }
    <iframe ref=${ref} title="Message content" sandbox="allow-scripts allow-popups allow-popups-to-escape-sandbox"
      src=${remote ? "/mail.html?remote=1" : "/mail.html"}
      style=${{ height: `${height}px` }}></iframe>
  </div>`;
}

function AttachmentItem(
  { o, attachment }: {
    o: Opened;
    attachment: MessageCopy["attachments"][number];
  },
) {
  const user = app.value.user!;
  const [progress, setProgress] = useState<number | undefined>();
  const [preview, setPreview] = useState<string | undefined>();
  const inner = o.result.opened?.content.attachments?.find((x) =>
    x.attachment_id === attachment.id
  );
  const name = inner?.name ?? attachment.name;
  const type = inner?.type ??
    String((attachment as { type?: string }).type ?? "");
  const unsigned = o.result.opened !== undefined && !inner;
  const fetchIt = async () => {
    setProgress(0);
    try {
      return await fetchAttachment(
        user.mail,
        o.copy.id,
        attachment,
        o.result.opened,
        (done, total) => setProgress(total ? done / total : 1),
      );
    } finally {
      setProgress(undefined);
    }
  };
  const download = async () => {
    try {
      const file = await fetchIt();
      saveFile(file.name, file.data, file.type || "application/octet-stream");
    } catch (error) {
      notify(describe(error), "error");
    }
  };
  const show = async () => {
    try {
      const file = await fetchIt();
      setPreview(URL.createObjectURL(
        new Blob([file.data as Uint8Array<ArrayBuffer>], { type: file.type }),
      ));
    } catch (error) {
      notify(describe(error), "error");
    }
  };
  useEffect(() => () => preview && URL.revokeObjectURL(preview), [preview]);
  return html`<li class="attachment">
    <span>📎 ${name} <span class="muted">(${
    formatSize(inner ? plainAttachmentSize(attachment.size) : attachment.size)
  })</span></span>
    ${
    unsigned
      ? html`<span class="bad">NOT SIGNED by the sender: not opened</span>`
      : html`<button onClick=${download} aria-label=${`Download ${name}`}>Download</button>
      ${
        /^image\/(png|jpeg|gif|webp)$/.test(type) && !preview
          ? html`<button onClick=${show} aria-label=${`Preview ${name}`}>Preview</button>`
          : null
      }`
  }
    ${
    progress !== undefined
      ? html`<progress value=${progress} max="1" aria-label=${`Fetching ${name}`}></progress>`
      : null
  }
    ${
    preview
      ? html`<img class="preview-image" src=${preview} alt=${name} />`
      : null
  }
  </li>`;
}

function MessageView(
  { o, mailbox, expanded }: { o: Opened; mailbox: Mailbox; expanded: boolean },
) {
  const [open, setOpen] = useState(expanded);
  const secret = o.result.opened?.content;
  const h = secret?.headers;
  const from = h?.from ?? o.copy.from;
  const to = h?.to ?? o.copy.to;
  const cc = h?.cc ?? o.copy.cc;
  const date = h?.date ?? o.copy.date;
  const subject = secret ? secret.subject : String(o.copy.subject ?? "");
  const body = secret
    ? secret.body
    : typeof o.copy.body === "string"
    ? o.copy.body
    : "";
  const format = secret ? secret.format : String(o.copy.format ?? "text");
  // A delivery notice (a bounce) threads under the message it is about, but
  // nobody reads replies to it: the thread's reply goes to the people.
  const delivery = /^mailer-daemon@/i.test(from);
  const reply = (all: boolean) => {
    const self = app.value.user!.address;
    const init: ComposeInit = {
      to: all
        ? [from, ...to].filter((a) => a.toLowerCase() !== self)
        : [from === self ? to[0] : from],
      cc: all ? cc.filter((a) => a.toLowerCase() !== self) : [],
      subject: /^re:/i.test(subject) ? subject : `Re: ${subject}`,
      body: `\n\nOn ${formatMoment(date)}, ${from} wrote:\n${
        body.split("\n").map((l) => `> ${l}`).join("\n")
      }`,
      inReplyTo: o.copy.id,
    };
    openCompose(init);
  };
  const forward = () =>
    openCompose({
      subject: /^fwd:/i.test(subject) ? subject : `Fwd: ${subject}`,
      body:
        `\n\n---------- Forwarded message ----------\nFrom: ${from}\nDate: ${
          formatMoment(date)
        }\nSubject: ${subject}\nTo: ${to.join(", ")}\n\n${body}`,
      forward: { copy: o.copy, opened: o.result.opened },
    });
  return html`
    <article class="message" aria-label=${`Message from ${from}`}
      data-id=${o.copy.id}>
        <header>
          <button class="link" onClick=${() =>
            setOpen(!open)} aria-expanded=${open}>
            <strong>${from}</strong></button>
          <span class="muted"> to ${to.join(", ")}${cc.length
            ? `, cc ${cc.join(", ")}`
            : ""}</span>
          <time class="muted">${formatMoment(date)}</time>
        </header>
        ${open
          ? html`
            <${SecurityLine} o=${o} />
                <div class="body">${format === "html"
                  ? html`<${HtmlBody} source=${body} />`
                  : html`<pre class="text" data-testid="body">${body}</pre>`}</div>
                ${o.copy.attachments.length
                  ? html`<ul class="attachments">${
                    o.copy.attachments.map((a) =>
                      html`<${AttachmentItem} o=${o} attachment=${a} />`
                    )
                  }</ul>`
                  : null}
                <div class="actions" role="toolbar" aria-label="Message actions">
              ${delivery ? null : html`
                <button onClick=${() =>
                  reply(false)} aria-keyshortcuts="r">Reply</button>
                <button onClick=${() =>
                  reply(true)} aria-keyshortcuts="a">Reply all</button>
              `}
              <button onClick=${forward} aria-keyshortcuts="f">Forward</button>
              <button onClick=${() =>
                mailbox.mark([o.copy.id], { flagged: !o.summary.flagged })
                  .catch((e) => notify(describe(e), "error"))}>${o.summary
                  .flagged
                ? "Unflag"
                : "Flag"}</button>
              <button onClick=${() =>
                mailbox.mark([o.copy.id], { seen: false }).catch((e) =>
                  notify(describe(e), "error")
                )}>Mark unread</button>
            </div>
          `
          : null}
      </article>
  `;
}

/** Open a thread: each message fetched, decrypted and checked; unread ones marked read. */
async function openThread(
  mailbox: Mailbox,
  row: ThreadRow,
): Promise<{ subject: string; messages: Opened[] }> {
  const user = app.value.user!;
  const thread = await user.mail.call<{ messages: Summary[] }>("thread", {
    id: row.newest.id,
  });
  const folder = mailbox.view.value.folder;
  // The thread across folders, but not what was deleted.
  const summaries = thread.messages.filter((m) =>
    m.folder !== "trash" || folder === "trash"
  );
  const messages: Opened[] = [];
  for (const summary of summaries) {
    const copy = await user.mail.call<MessageCopy>("get", { id: summary.id });
    const result = await openMessage(user.mail, copy, {
      device: user.device,
      trust: user.trust,
    });
    keepForOffline(user.address, copy.id, copy).catch(() => {});
    messages.push({ copy, result, summary });
  }
  const unseen = summaries.filter((m) => !m.seen).map((m) => m.id);
  if (unseen.length) await mailbox.mark(unseen, { seen: true });
  const first = messages.at(-1);
  const subject = first?.result.opened?.content.subject ??
    String(first?.copy.subject ?? "");
  return { subject, messages };
}

function Reader(
  { mailbox, row }: { mailbox: Mailbox; row?: ThreadRow },
) {
  const [state, setState] = useState<
    { subject: string; messages: Opened[]; thread: string } | undefined
  >();
  const [error, setError] = useState("");
  const key = row ? `${row.thread}:${row.ids.length}:${row.newest.id}` : "";
  useEffect(() => {
    if (!row) return;
    let live = true;
    setError("");
    openThread(mailbox, row).then((opened) => {
      if (live) setState({ ...opened, thread: row.thread });
    }).catch((e) => live && setError(describe(e)));
    return () => {
      live = false;
    };
  }, [key]);
  if (!row) {
    return html`
      <section class="reader empty" aria-label="Reading pane">
        <p class="muted">Choose a message.</p>
      </section>
    `;
  }
  if (error) {
    return html`
      <section class="reader" aria-label="Reading pane">
        <p class="bad">${error}</p>
      </section>
    `;
  }
  if (!state || state.thread !== row.thread) {
    return html`
      <section class="reader" aria-label="Reading pane">
        <p class="muted" role="status">Opening…</p>
      </section>
    `;
  }
  const ids = state.messages.map((m) => m.copy.id);
  return html`<section class="reader" aria-label="Reading pane">
    <div class="thread-head">
      <h2 data-testid="thread-subject">${state.subject || "(no subject)"}</h2>
      <span class="muted">${state.messages.length} message${
    state.messages.length === 1 ? "" : "s"
  }</span>
      <div class="actions" role="toolbar" aria-label="Thread actions">
        <label for="move-to" class="visually-hidden">Move to</label>
        <select id="move-to" onChange=${(e: Event) => {
    const folder = (e.target as HTMLSelectElement).value;
    if (folder) {
      mailbox.move(ids, folder).catch((err) => notify(describe(err), "error"));
    }
  }}>
          <option value="">Move to…</option>
          ${
    mailbox.view.value.folders.map((f) =>
      html`<option value=${f.name}>${folderName(f.name)}</option>`
    )
  }
        </select>
        <button onClick=${() =>
    mailbox.remove(ids).catch((e) => notify(describe(e), "error"))}
          aria-keyshortcuts="Delete">Delete</button>
      </div>
    </div>
    ${
    state.messages.map((o, i) =>
      html`
        <${MessageView} key=${o.copy.id} o=${o} mailbox=${mailbox}
          expanded=${i === state.messages.length - 1 || !o.summary.seen} />
      `
    )
  }
  </section>`;
}

/** The mail screen. */
export function MailScreen() {
  const state = useStore(app);
  const mailbox = state.mailbox!;
  const view = useStore(mailbox.view);
  const [selected, setSelected] = useState<string | undefined>();
  const row = view.rows.find((r) => r.thread === selected);
  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      const target = event.target as HTMLElement;
      if (
        event.ctrlKey || event.metaKey || event.altKey ||
        /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName) ||
        target.isContentEditable || document.querySelector("dialog[open]")
      ) return;
      const index = view.rows.findIndex((r) => r.thread === selected);
      const go = (i: number) => {
        const next = view.rows[Math.max(0, Math.min(view.rows.length - 1, i))];
        if (!next) return;
        setSelected(next.thread);
        requestAnimationFrame(() =>
          document.querySelector<HTMLElement>(
            `.row[data-id="${next.newest.id}"] button`,
          )?.focus()
        );
      };
      if (event.key === "j") go(index + 1);
      else if (event.key === "k") go(index - 1);
      else if (event.key === "c") openCompose({});
      else if (event.key === "/") {
        event.preventDefault();
        document.querySelector<HTMLElement>("#search")?.focus();
      } else if (row && event.key === "Delete") {
        mailbox.remove(row.ids).catch((e) => notify(describe(e), "error"));
      } else if (row && event.key === "s") {
        mailbox.mark(row.ids, { flagged: !row.flagged }).catch(() => {});
      } else if (row && event.key === "u") {
        mailbox.mark(row.ids, { seen: false }).catch(() => {});
      } else if (row && ["r", "a", "f"].includes(event.key)) {
        const label = { r: "Reply", a: "Reply all", f: "Forward" }[event.key];
        // The newest message that has the action (a bounce has no Reply).
        [...document.querySelectorAll<HTMLButtonElement>(
          ".reader .message .actions button",
        )]
          .filter((b) => b.textContent === label).at(-1)?.click();
      } else return;
      event.preventDefault();
    };
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  });
  return html`
    <div class="mail">
      <${Sidebar} mailbox=${mailbox} view=${view} />
      <${MessageList} mailbox=${mailbox} view=${view} selected=${selected}
        onOpen=${(r: ThreadRow) => setSelected(r.thread)} />
      <${Reader} mailbox=${mailbox} row=${row} />
    </div>
  `;
}
