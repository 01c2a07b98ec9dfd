/// <reference lib="dom" />
/**
 * Writing a message: to, cc, bcc with completion from correspondents'
 * profiles, attachments with a progress bar, drafts kept in this browser,
 * replies and forwards. Before sending, the end-to-end plan is shown — a
 * lock when every recipient's devices can read it, or a clear notice of why
 * it would go out unencrypted, which the user must accept (and explicitly,
 * when a recipient had keys before or a key changed).
 *
 * @module
 */

import { useEffect, useRef, useState } from "preact/hooks";
import type { Opened } from "../../client/e2e.ts";
import {
  type EncryptionPlan,
  planEncryption,
} from "../../client/e2e_account.ts";
import {
  fetchAttachment,
  type MessageCopy,
  type OutgoingFile,
  sendMessage,
} from "../../client/mail.ts";
import { db, type Draft } from "./db.ts";
import {
  addressList,
  describe,
  formatMoment,
  formatSize,
  html,
} from "./html.ts";
import { app, notify } from "./state.ts";
import { Store, useStore } from "./store.ts";

/** What a compose window starts with. */
export interface ComposeInit {
  to?: string[];
  cc?: string[];
  bcc?: string[];
  subject?: string;
  body?: string;
  inReplyTo?: string;
  /** A message to forward with its attachments. */
  forward?: { copy: MessageCopy; opened?: Opened };
  /** A draft to continue. */
  draft?: Draft;
  /** Show the list of drafts. */
  drafts?: boolean;
}

const compose = new Store<{ open: boolean; init: ComposeInit; key: number }>({
  open: false,
  init: {},
  key: 0,
});

/** Open the compose window. */
export function openCompose(init: ComposeInit): void {
  compose.set({ open: true, init, key: compose.value.key + 1 });
}

/** Addresses seen in loaded mail, for completion. */
function knownAddresses(): string[] {
  const mailbox = app.value.mailbox;
  const seen = new Set<string>();
  for (const row of mailbox?.view.value.rows ?? []) {
    seen.add(row.newest.from);
    for (const a of row.newest.to) seen.add(a);
  }
  seen.delete(app.value.user?.address ?? "");
  return [...seen].sort();
}

function Drafts({ onOpen }: { onOpen: (d: Draft) => void }) {
  const [drafts, setDrafts] = useState<Draft[]>([]);
  const user = app.value.user!;
  useEffect(() => {
    db().then((d) => d.getAllFromIndex("drafts", "account", user.address))
      .then((all) =>
        setDrafts(all.sort((a, b) => b.updated.getTime() - a.updated.getTime()))
      );
  }, []);
  return html`<section aria-labelledby="drafts-h">
    <h2 id="drafts-h">Drafts</h2>
    ${
    drafts.length
      ? html`<ul class="plain">${
        drafts.map((d) =>
          html`<li><button onClick=${() => onOpen(d)}>${
            d.subject || "(no subject)"
          } <span class="muted">to ${d.to || "nobody yet"}, ${
            formatMoment(d.updated)
          }</span></button></li>`
        )
      }</ul>`
      : html`<p class="muted">No drafts.</p>`
  }
  </section>`;
}

type PlanView =
  | { state: "checking" }
  | { state: "none" }
  | { state: "ready"; plan: EncryptionPlan }
  | { state: "error"; message: string };

function Composer({ init, close }: { init: ComposeInit; close: () => void }) {
  const user = app.value.user!;
  const draft = init.draft;
  const [to, setTo] = useState(draft?.to ?? (init.to ?? []).join(", "));
  const [cc, setCc] = useState(draft?.cc ?? (init.cc ?? []).join(", "));
  const [bcc, setBcc] = useState(draft?.bcc ?? (init.bcc ?? []).join(", "));
  const [subject, setSubject] = useState(draft?.subject ?? init.subject ?? "");
  const [body, setBody] = useState(draft?.body ?? init.body ?? "");
  const [files, setFiles] = useState<
    { name: string; type: string; data: Blob }[]
  >(
    draft?.files ?? [],
  );
  const [plan, setPlan] = useState<PlanView>({ state: "none" });
  const [consent, setConsent] = useState(false);
  const [progress, setProgress] = useState<number | undefined>();
  const [names, setNames] = useState<Record<string, string>>({});
  const draftId = useRef(draft?.id ?? crypto.randomUUID());
  const inReplyTo = draft?.inReplyTo ?? init.inReplyTo;
  // A forwarded message's attachments, fetched (and decrypted) once.
  useEffect(() => {
    const forward = init.forward;
    if (!forward) return;
    (async () => {
      const fetched: { name: string; type: string; data: Blob }[] = [];
      for (const a of forward.copy.attachments) {
        const file = await fetchAttachment(
          user.mail,
          forward.copy.id,
          a,
          forward.opened,
        );
        fetched.push({
          name: file.name,
          type: file.type,
          data: new Blob([file.data as Uint8Array<ArrayBuffer>], {
            type: file.type,
          }),
        });
      }
      setFiles((current) => [...current, ...fetched]);
    })().catch((e) =>
      notify(`Attachments not forwarded: ${describe(e)}`, "error")
    );
  }, []);
  // The plan, again whenever the recipients change.
  const recipients = `${to}|${cc}|${bcc}`;
  useEffect(() => {
    const all = [...addressList(to), ...addressList(cc), ...addressList(bcc)];
    setConsent(false);
    if (!all.length) {
      setPlan({ state: "none" });
      return;
    }
    setPlan({ state: "checking" });
    let live = true;
    const timer = setTimeout(async () => {
      try {
        const result = await planEncryption(user.client, {
          token: user.token,
          sender: user.address,
          file: user.accountDevice,
          to: [...addressList(to), ...addressList(cc)],
          bcc: addressList(bcc),
          trust: user.trust,
        });
        if (live) setPlan({ state: "ready", plan: result });
        // Names of the recipients from their profiles.
        for (const address of all) {
          if (names[address] !== undefined) continue;
          user.call<{ name: string }>("user_userinfo", { address })
            .then((p) => live && setNames((n) => ({ ...n, [address]: p.name })))
            .catch(() => {});
        }
      } catch (error) {
        if (live) setPlan({ state: "error", message: describe(error) });
      }
    }, 400);
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [recipients]);
  // The draft, kept a moment after each change.
  useEffect(() => {
    if (!to && !subject && !body && !files.length) return;
    const timer = setTimeout(() => saveDraft().catch(() => {}), 800);
    return () => clearTimeout(timer);
  }, [to, cc, bcc, subject, body, files]);
  const saveDraft = async () => {
    await (await db()).put("drafts", {
      id: draftId.current,
      account: user.address,
      to,
      cc,
      bcc,
      subject,
      body,
      inReplyTo,
      files,
      updated: new Date(),
    });
  };
  const ready = plan.state === "ready" ? plan.plan : undefined;
  const encrypted = ready?.encrypt === true;
  const needsConsent = ready !== undefined && !ready.encrypt;
  const send = async (event: Event) => {
    event.preventDefault();
    if (!ready) return;
    if (!ready.encrypt && !consent) {
      notify("Tick the box to send this message unencrypted.", "error");
      return;
    }
    setProgress(0);
    try {
      const outgoing: OutgoingFile[] = [];
      for (const f of files) {
        outgoing.push({
          name: f.name,
          type: f.type || "application/octet-stream",
          data: new Uint8Array(await f.data.arrayBuffer()),
        });
      }
      const sent = await sendMessage(user.mail, {
        to: addressList(to),
        cc: addressList(cc),
        bcc: addressList(bcc),
        subject,
        body,
        attachments: outgoing,
        inReplyTo,
        clientId: draftId.current,
      }, {
        plan: ready,
        device: user.device,
        onProgress: (done, total) => setProgress(total ? done / total : 1),
      });
      await (await db()).delete("drafts", draftId.current);
      const failed = sent.recipients.filter((r) => r.status === "failed");
      notify(
        failed.length
          ? `Sent, but not to ${
            failed.map((r) => `${r.address} (${r.message})`).join(", ")
          }`
          : `Sent${
            sent.encrypted ? ", encrypted end to end" : " unencrypted"
          }.`,
        failed.length ? "error" : "info",
      );
      close();
    } catch (error) {
      notify(`Not sent: ${describe(error)}`, "error");
    } finally {
      setProgress(undefined);
    }
  };
  const addFiles = (list: FileList | null) => {
    if (!list) return;
    setFiles((current) => [
      ...current,
      ...[...list].map((f) => ({
        name: f.name,
        type: f.type,
        data: f as Blob,
      })),
    ]);
  };
  const field = (
    id: string,
    label: string,
    value: string,
    set: (v: string) => void,
  ) =>
    html`
      <label for=${id}>${label}</label>
      <input id=${id} value=${value} list="known-addresses"
        autocomplete="off"
        onInput=${(e: Event) => set((e.target as HTMLInputElement).value)} />
    `;
  const shownNames = Object.entries(names).filter(([a, n]) =>
    n && recipients.includes(a)
  );
  return html`<form class="compose-form" onSubmit=${send}>
    <datalist id="known-addresses">
      ${knownAddresses().map((a) => html`<option value=${a} />`)}
    </datalist>
    ${field("to", "To", to, setTo)}
    ${field("cc", "Cc", cc, setCc)}
    ${field("bcc", "Bcc", bcc, setBcc)}
    ${
    shownNames.length
      ? html`<p class="muted">${
        shownNames.map(([a, n]) => `${n} <${a}>`).join(", ")
      }</p>`
      : null
  }
    <label for="subject">Subject</label>
    <input id="subject" value=${subject}
      onInput=${(e: Event) =>
    setSubject((e.target as HTMLInputElement).value)} />
    <label for="body">Message</label>
    <textarea id="body" rows="12" value=${body}
      onInput=${(e: Event) =>
    setBody((e.target as HTMLTextAreaElement).value)}></textarea>
    <label for="files">Attachments</label>
    <input id="files" type="file" multiple
      onChange=${(e: Event) =>
    addFiles((e.target as HTMLInputElement).files)} />
    ${
    files.length
      ? html`<ul class="plain">${
        files.map((f, i) =>
          html`<li>📎 ${f.name} <span class="muted">(${
            formatSize(f.data.size)
          })</span>
            <button type="button" aria-label=${`Remove ${f.name}`}
              onClick=${() =>
            setFiles(files.filter((_, j) => j !== i))}>Remove</button></li>`
        )
      }</ul>`
      : null
  }
    <div class="plan" aria-live="polite" data-testid="plan">${
    plan.state === "checking"
      ? html`<p class="badge">Checking the recipients' keys…</p>`
      : plan.state === "error"
      ? html`<p class="badge bad">${plan.message}</p>`
      : encrypted && ready?.encrypt
      ? html`
        <p class="badge good"
          data-testid="will-encrypt">🔒 Will be encrypted end to end for ${ready
            .targets.reduce(
              (n, t) => n + t.devices.length,
              0,
            )} devices (subject and attachments included).</p>
                ${ready.notes.map((n) => html`<p class="badge">${n}</p>`)}
      `
      : needsConsent && ready && !ready.encrypt
      ? html`<div class="badge bad" role="alert" data-testid="will-not-encrypt">
        <p>⚠ This message will NOT be encrypted end to end: ${ready.reason}.
          The servers on its way can read it.${
        ready.needsConsent
          ? " A recipient had encryption keys before, or a key changed: sending in clear may not be what they expect."
          : ""
      }</p>
        <label class="check"><input type="checkbox" checked=${consent}
          onChange=${(e: Event) =>
        setConsent((e.target as HTMLInputElement).checked)} />
          Send it unencrypted anyway</label></div>`
      : null
  }</div>
    ${
    progress !== undefined
      ? html`<progress value=${progress} max="1" aria-label="Sending"></progress>`
      : null
  }
    <div class="actions">
      <button type="submit" class="primary"
        disabled=${
    !ready || progress !== undefined || (!encrypted && !consent)
  }>
        ${encrypted ? "🔒 Send encrypted" : "Send"}</button>
      <button type="button" onClick=${() =>
    saveDraft().then(() => {
      notify("Draft saved in this browser.");
      close();
    })}>Save draft</button>
      <button type="button" onClick=${async () => {
    await (await db()).delete("drafts", draftId.current);
    close();
  }}>Discard</button>
    </div>
  </form>`;
}

/** The compose window (a modal dialog). */
export function ComposeDialog() {
  const state = useStore(compose);
  const ref = useRef<HTMLDialogElement>(null);
  const [draft, setDraft] = useState<Draft | undefined>();
  useEffect(() => {
    const dialog = ref.current!;
    if (state.open && !dialog.open) dialog.showModal();
    if (!state.open && dialog.open) dialog.close();
    setDraft(undefined);
  }, [state.open, state.key]);
  const close = () => compose.set({ open: false });
  const init = draft ? { draft } : state.init;
  return html`
    <dialog ref=${ref} class="compose" aria-labelledby="compose-h"
      onClose=${close}>
        <div class="dialog-head">
          <h2 id="compose-h">${init.drafts ? "Drafts" : "New message"}</h2>
          <button type="button" onClick=${close} aria-label="Close">✕</button>
        </div>
        ${state.open
          ? init.drafts
            ? html`<${Drafts} onOpen=${(d: Draft) => setDraft(d)} />`
            : html`
              <${Composer} key=${`${state.key}:${draft?.id ?? ""}`} init=${init}
                close=${close} />
            `
          : null}
      </dialog>
  `;
}
