/// <reference lib="dom" />
/**
 * The web app's entry point: reads how to reach the server (`/config.json`),
 * connects (WebTransport, else WebSocket), and renders the screen the state
 * names under a top bar that shows the connection and its transport.
 *
 * @module
 */

import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { useStore } from "./store.ts";
import { connect, connection, loadSite } from "./connection.ts";
import { app, notify, show } from "./state.ts";
import { html } from "./html.ts";
import { Backup, Welcome } from "./ui_welcome.ts";
import { MailScreen } from "./ui_mail.ts";
import { ComposeDialog } from "./ui_compose.ts";
import { SettingsScreen } from "./ui_settings.ts";
import { AdminScreen } from "./ui_admin.ts";
import { resumeMail, signOut } from "./actions.ts";
import { offlineMessages } from "./db.ts";
import { storedAccounts } from "./keys.ts";
import type { StoredAccount } from "./db.ts";
import { decryptMessage } from "../../client/e2e.ts";
import type { MessageCopy } from "../../client/mail.ts";
import { describe } from "./html.ts";

function Status() {
  const state = useStore(connection);
  const text = {
    connecting: "Connecting…",
    online: "Online",
    reconnecting: "Reconnecting…",
    closed: "Offline",
  }[state.status];
  const line = state.transport ? `${text} · ${state.transport}` : text;
  return html`
    <span class=${`status ${state.status}`} role="status"
      data-testid="connection" title=${state.note ?? ""}>${line}</span>
  `;
}

function TopBar() {
  const state = useStore(app);
  return html`<header class="topbar">
    <span class="title">AMTP Mail${
    state.site
      ? html`
        <span class="muted">${` · ${state.site.hostname}`}</span>
      `
      : null
  }</span>
    ${
    state.user
      ? html`
        <span class="muted">${state.user.address}</span>
        <button onClick=${() => show("mail")}>Mail</button>
        <button onClick=${() => show("settings")}>Settings</button>
      `
      : null
  }
    ${
    state.admin
      ? html`<button onClick=${() => show("admin")}>Admin</button>`
      : null
  }
    ${
    state.user || state.admin
      ? html`<button onClick=${async () => {
        await state.admin?.signOut();
        app.set({ admin: undefined });
        if (state.user) await signOut(false);
        else show("welcome");
      }}>Sign out</button>`
      : null
  }
    <${Status} />
  </header>`;
}

function Notice() {
  const { notice } = useStore(app);
  return html`
    <div class=${`notice ${notice?.kind ?? ""}`} role=${notice?.kind === "error"
      ? "alert"
      : "status"} aria-live="polite" hidden=${!notice}
      data-testid="notice">${notice?.text}</div>
  `;
}

/** What was read lately, readable while the server cannot be reached. */
function Offline() {
  const [items, setItems] = useState<OfflineItem[]>([]);
  const [shown, setShown] = useState<
    { subject: string; body: string; from: string } | undefined
  >();
  useEffect(() => {
    storedAccounts().then(async (accounts) => {
      const all: OfflineItem[] = [];
      for (const account of accounts) {
        for (const m of await offlineMessages(account.address)) {
          all.push({ account, copy: m.copy as MessageCopy });
        }
      }
      setItems(all);
    }).catch(() => {});
  }, []);
  // Opened here from the kept copy: decrypted with this browser's device key.
  const open = async ({ account, copy }: OfflineItem) => {
    try {
      if (copy.encrypted && copy.body instanceof Uint8Array) {
        if (!account.device) throw new Error("no device key in this browser");
        const opened = await decryptMessage(copy.body, {
          address: account.address,
          device: account.device,
        });
        setShown({
          subject: opened.content.subject,
          body: opened.content.body,
          from: opened.sender,
        });
      } else {
        setShown({
          subject: String(copy.subject ?? ""),
          body: typeof copy.body === "string" ? copy.body : "",
          from: copy.from,
        });
      }
    } catch (error) {
      notify(`Cannot open it here: ${describe(error)}`, "error");
    }
  };
  return html`<main class="welcome" id="main">
    <h1>The server cannot be reached</h1>
    <p>Reload the page to try again. Mail you read lately in this browser:</p>
    <ul class="plain">${
    items.map((m) =>
      html`<li><button class="link" onClick=${() => open(m)}>${m.copy.from} — ${
        m.copy.encrypted
          ? "🔒 encrypted message"
          : m.copy.subject || "(no subject)"
      }</button></li>`
    )
  }</ul>
    ${
    shown
      ? html`
        <article class="card" aria-label="Message kept offline">
          <h2>${shown.subject || "(no subject)"}</h2>
          <p class="muted">From ${shown.from}</p>
          <pre class="text" data-testid="offline-body">${shown.body}</pre>
        </article>
      `
      : null
  }
  </main>`;
}

/** A message kept for offline reading, with the account it was read in. */
interface OfflineItem {
  account: StoredAccount;
  copy: MessageCopy;
}

function Screen() {
  const state = useStore(app);
  switch (state.screen) {
    case "backup":
      return html`<${Backup} />`;
    case "mail":
      return state.mailbox ? html`<${MailScreen} />` : html`<${Welcome} />`;
    case "settings":
      return state.user ? html`<${SettingsScreen} />` : html`<${Welcome} />`;
    case "admin":
      return state.admin ? html`<${AdminScreen} />` : html`<${Welcome} />`;
    case "offline":
      return html`<${Offline} />`;
    default:
      return html`<${Welcome} />`;
  }
}

function App() {
  return html`
    <${TopBar} />
    <${Notice} />
    <${Screen} />
    <${ComposeDialog} />
  `;
}

async function start(): Promise<void> {
  const invite = location.hash.match(/^#invite=([a-z0-9-]+)$/i)?.[1];
  if (invite) app.set({ invite });
  const root = document.getElementById("root")!;
  root.textContent = "";
  render(html`<${App} />`, root);
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => {});
  }
  let site;
  try {
    site = await loadSite();
    app.set({ site });
    const client = await connect(site);
    app.set({ client });
    performance.mark("amtp-connected");
    await resumeMail(client);
  } catch (error) {
    notify(
      `Cannot reach the server: ${
        error instanceof Error ? error.message : String(error)
      }`,
      "error",
    );
    show("offline");
  }
}

start();
