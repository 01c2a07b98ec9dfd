/// <reference lib="dom" />
/**
 * The first screens: accounts kept in this browser, an invitation, self
 * registration, a key file, and signing in as an admin; then the one-time
 * backup of keys made here.
 *
 * @module
 */

import { useEffect, useState } from "preact/hooks";
import { deviceCode } from "../../client/e2e.ts";
import {
  AdminSession,
  browserLabel,
  importKeyFile,
  type Joined,
  joinWith,
  UserSession,
} from "./account.ts";
import type { StoredAccount } from "./db.ts";
import { describe, formatMoment, html, saveFile } from "./html.ts";
import { loginKeyOf, readKeyFile, storedAccounts } from "./keys.ts";
import { startMail } from "./actions.ts";
import { app, connected, notify } from "./state.ts";
import { useStore } from "./store.ts";

function Busy({ busy }: { busy: boolean }) {
  return busy
    ? html`<span class="spinner" role="status">Working…</span>`
    : null;
}

/** After joining: the backup is offered, then the mailbox. */
function joined(result: Joined, restored = false): void {
  app.set({
    user: result.session,
    backup: {
      address: result.session.address,
      text: result.backup,
      pending: result.pending,
      restored,
    },
    screen: "backup",
    invite: undefined,
  });
  if (location.hash.startsWith("#invite=")) {
    history.replaceState(null, "", location.pathname);
  }
}

function Invitation({ code: initial }: { code?: string }) {
  const state = useStore(app);
  const [code, setCode] = useState(initial ?? "");
  const [info, setInfo] = useState<
    { address: string; name: string; kind: string; expires: Date } | undefined
  >();
  const [name, setName] = useState("");
  const [label, setLabel] = useState(browserLabel());
  const [busy, setBusy] = useState(false);
  const look = async (event?: Event) => {
    event?.preventDefault();
    setBusy(true);
    try {
      const found = await (await connected()).call<
        { address: string; name: string; kind: string; expires: Date }
      >("invitation_info", { code: code.trim() });
      setInfo(found);
      setName(found.name);
    } catch (error) {
      notify(`Invitation: ${describe(error)}`, "error");
    } finally {
      setBusy(false);
    }
  };
  useEffect(() => {
    if (initial && state.client) look();
  }, [initial, state.client]);
  const accept = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    try {
      joined(
        await joinWith(
          await connected(),
          { command: "invitation_accept", code: code.trim() },
          { name, label },
        ),
      );
    } catch (error) {
      notify(`Could not join: ${describe(error)}`, "error");
    } finally {
      setBusy(false);
    }
  };
  if (!info) {
    return html`
      <form class="card" onSubmit=${look} aria-labelledby="inv-h">
        <h2 id="inv-h">I have an invitation</h2>
        <label for="inv-code">Invitation code</label>
        <input id="inv-code" value=${code} autocomplete="off" spellcheck="false"
          placeholder="xxxxx-xxxxx-xxxxx-xxxxx-xxxxx"
          onInput=${(e: Event) =>
            setCode((e.target as HTMLInputElement).value)} />
        <button type="submit" disabled=${!code.trim() || busy}>Continue</button>
        <${Busy} busy=${busy} />
      </form>
    `;
  }
  return html`<form class="card" onSubmit=${accept} aria-labelledby="inv-h">
    <h2 id="inv-h">${
    info.kind === "device" ? "Add this browser to" : "Join as"
  } ${info.address}</h2>
    <p>Your keys are made here, in this browser; only the public key goes to
      the server. The invitation expires ${formatMoment(info.expires)}.</p>
    ${
    info.kind === "account"
      ? html`
        <label for="inv-name">Your name</label>
        <input id="inv-name" value=${name}
          onInput=${(e: Event) =>
            setName((e.target as HTMLInputElement).value)} />
      `
      : null
  }
    <label for="inv-label">Name of this device</label>
    <input id="inv-label" value=${label}
      onInput=${(e: Event) => setLabel((e.target as HTMLInputElement).value)} />
    <button type="submit" class="primary" disabled=${busy}>Create my keys and join</button>
    <${Busy} busy=${busy} />
  </form>`;
}

function Register() {
  const [address, setAddress] = useState("");
  const [name, setName] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    try {
      joined(
        await joinWith(await connected(), {
          command: "user_register",
          address: address.trim(),
        }, {
          name,
          label: browserLabel(),
        }),
      );
    } catch (error) {
      notify(`Could not register: ${describe(error)}`, "error");
    } finally {
      setBusy(false);
    }
  };
  return html`
    <details class="card">
      <summary>Register a new address</summary>
      <p>Only on domains whose admin opened registration.</p>
      <form onSubmit=${submit}>
        <label for="reg-address">Address</label>
        <input id="reg-address" type="email" value=${address} required
          onInput=${(e: Event) =>
            setAddress((e.target as HTMLInputElement).value)} />
        <label for="reg-name">Your name</label>
        <input id="reg-name" value=${name}
          onInput=${(e: Event) =>
            setName((e.target as HTMLInputElement).value)} />
        <button type="submit"
          disabled=${busy}>Create my keys and register</button>
        <${Busy} busy=${busy} />
      </form>
    </details>
  `;
}

function KeyFile() {
  const [address, setAddress] = useState("");
  const [file, setFile] = useState<File | undefined>();
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    if (!file) return;
    setBusy(true);
    try {
      joined(
        await importKeyFile(
          await connected(),
          address,
          await file.text(),
          browserLabel(),
        ),
        true,
      );
    } catch (error) {
      notify(`Could not sign in: ${describe(error)}`, "error");
    } finally {
      setBusy(false);
    }
  };
  return html`
    <details class="card">
      <summary>Sign in with a key file</summary>
      <p>A private key made by <code>amtp keygen</code>, or a backup of this app.
          The key is kept in this browser, where it cannot be read back.</p>
      <form onSubmit=${submit}>
        <label for="key-address">Address</label>
        <input id="key-address" type="email" value=${address} required
          onInput=${(e: Event) =>
            setAddress((e.target as HTMLInputElement).value)} />
        <label for="key-file">Key file</label>
        <input id="key-file" type="file"
          onChange=${(e: Event) =>
            setFile((e.target as HTMLInputElement).files?.[0])} />
        <button type="submit" disabled=${busy || !file}>Sign in</button>
        <${Busy} busy=${busy} />
      </form>
    </details>
  `;
}

function AdminSignIn() {
  const state = useStore(app);
  const [name, setName] = useState("admin");
  const [file, setFile] = useState<File | undefined>();
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    if (!file) return;
    setBusy(true);
    try {
      const keys = await readKeyFile(await file.text());
      const admin = await AdminSession.signIn(
        await connected(),
        name.trim(),
        loginKeyOf(keys.login.stored),
      );
      app.set({ admin, screen: "admin" });
    } catch (error) {
      notify(`Admin sign-in failed: ${describe(error)}`, "error");
    } finally {
      setBusy(false);
    }
  };
  return html`
    <details class="card" open=${!state.user}>
      <summary>Sign in as an admin</summary>
      <p>With an admin's key file: on a new server, <code>data/admin.key</code>${" "}
          (its first admin, <code>admin</code>). The key is used in this tab only.</p>
      <form onSubmit=${submit}>
        <label for="admin-name">Admin name</label>
        <input id="admin-name" value=${name}
          onInput=${(e: Event) =>
            setName((e.target as HTMLInputElement).value)} />
        <label for="admin-key">Admin key file</label>
        <input id="admin-key" type="file"
          onChange=${(e: Event) =>
            setFile((e.target as HTMLInputElement).files?.[0])} />
        <button type="submit" disabled=${busy ||
          !file}>Sign in as admin</button>
        <${Busy} busy=${busy} />
      </form>
    </details>
  `;
}

function Accounts() {
  const [accounts, setAccounts] = useState<StoredAccount[]>([]);
  const [busy, setBusy] = useState("");
  useEffect(() => {
    storedAccounts().then(setAccounts).catch(() => {});
  }, []);
  if (!accounts.length) return null;
  const signIn = async (account: StoredAccount) => {
    setBusy(account.address);
    try {
      const user = await UserSession.signIn(await connected(), account);
      await startMail(user);
    } catch (error) {
      notify(`Could not sign in: ${describe(error)}`, "error");
    } finally {
      setBusy("");
    }
  };
  return html`
    <section class="card" aria-labelledby="acc-h">
      <h2 id="acc-h">Accounts in this browser</h2>
      <ul class="plain">
          ${accounts.map((a) =>
            html`<li><button class="primary" onClick=${() => signIn(a)}
        disabled=${busy !== ""}>Sign in as ${a.address}</button></li>`
          )}
        </ul>
      <${Busy} busy=${busy !== ""} />
    </section>
  `;
}

/** The welcome screen. */
export function Welcome() {
  const state = useStore(app);
  return html`
    <main class="welcome" id="main">
      <h1>AMTP Mail</h1>
      <p class="lead">Mail on <strong>${state.site
        ?.hostname}</strong>, end-to-end
          encrypted, with keys that never leave this browser.</p>
      <${Accounts} />
      <${Invitation} code=${state.invite} />
      <${Register} />
      <${KeyFile} />
      <${AdminSignIn} />
    </main>
  `;
}

/** The one-time backup of keys made here, and the device code of a device waiting for approval. */
export function Backup() {
  const state = useStore(app);
  const backup = state.backup!;
  const [saved, setSaved] = useState(false);
  const [code, setCode] = useState("");
  useEffect(() => {
    const device = state.user?.device;
    if (backup.pending && device) {
      deviceCode(backup.address, {
        enc: device.encryptPublic,
        sign: device.signPublic,
      }).then(setCode);
    }
  }, [backup.pending]);
  const download = () => {
    saveFile(
      `amtp-${backup.address}.key`,
      new TextEncoder().encode(backup.text),
      "application/x-pem-file",
    );
    setSaved(true);
  };
  return html`<main class="welcome" id="main">
    <h1>${
    backup.restored ? "Signed in with your key file" : "Your keys are ready"
  }</h1>
    ${
    backup.restored
      ? html`
        <section class="card" aria-labelledby="rs-h">
          <h2 id="rs-h">This browser is a new device</h2>
          <p>Your key is now kept in this browser, where it cannot be read back;
                keep your key file safe as before. Mail encrypted end to end before
                now was encrypted for your other devices: it stays readable there,
                not here. Mail sent from now on reaches this device too.</p>
        </section>
      `
      : html`
        <section class="card warning" aria-labelledby="bk-h">
          <h2 id="bk-h">Save a backup of your keys now</h2>
          <p>Your keys were made in this browser and are stored here so that
                nobody can read them out again, not even this app. <strong>This is
                the only time a backup can be saved.</strong> Without one, clearing
                this browser's data loses your sign-in key${backup.pending
                  ? ""
                  : " and the master key that approves your devices"}.</p>
          <p><strong>Keep the file secret:</strong> whoever has it can sign in
                as ${backup.address}${backup.pending
                  ? ""
                  : " and read mail sent to devices it approves"}. It is not encrypted.</p>
          <button class="primary" onClick=${download}>Download the backup file</button>
        </section>
      `
  }
    ${
    backup.pending
      ? html`
        <section class="card" aria-labelledby="pd-h">
          <h2 id="pd-h">Approve this device</h2>
          <p>Your account's master key is on another device. Open Settings there,
                compare this code, and approve this device; until then, mail
                encrypted for your devices cannot be read here.</p>
          <p class="code" data-testid="device-code">${code}</p>
        </section>
      `
      : null
  }
    ${
    backup.restored ? null : html`<label class="check"><input type="checkbox"
      checked=${saved} onChange=${(e: Event) =>
      setSaved((e.target as HTMLInputElement).checked)} />
      I saved the backup, or I accept losing access with this browser's data</label>`
  }
    <button class="primary" disabled=${!saved && !backup.restored}
      onClick=${() =>
    startMail(state.user!).catch((e) => notify(describe(e), "error"))}>
      Continue to my mail</button>
  </main>`;
}
