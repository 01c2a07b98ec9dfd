/// <reference lib="dom" />
/**
 * Settings: the profile; this account's devices (end-to-end: listed,
 * pending with their device code, approve and revoke on a device holding
 * the master key), adding a device by invitation, login keys and sessions
 * (revocable); notifications through Web Push; correspondents' keys (safety
 * codes, confirming a key change); signing out.
 *
 * @module
 */

import { useEffect, useState } from "preact/hooks";
import {
  type AccountKeys,
  confirmContact,
  deviceCode,
  safetyCode,
} from "../../client/e2e.ts";
import {
  approveDevice,
  keysOf,
  revokeDevice,
} from "../../client/e2e_account.ts";
import { signOut } from "./actions.ts";
import { browserLabel } from "./account.ts";
import { describe, formatMoment, html } from "./html.ts";
import { app, notify, show } from "./state.ts";
import { useStore } from "./store.ts";

function fromBase64url(text: string): Uint8Array {
  return Uint8Array.from(
    atob(text.replace(/-/g, "+").replace(/_/g, "/")),
    (c) => c.charCodeAt(0),
  );
}

function useLoad<T>(load: () => Promise<T>, deps: unknown[] = []) {
  const [value, setValue] = useState<T | undefined>();
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    load().then((v) => live && setValue(v)).catch((e) =>
      notify(describe(e), "error")
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  return [value, () => setTick((t) => t + 1)] as const;
}

function Devices() {
  const user = app.value.user!;
  const [keys, reload] = useLoad<AccountKeys>(
    () => keysOf(user.client, user.token, user.address),
  );
  const [codes, setCodes] = useState<Record<string, string>>({});
  const [invite, setInvite] = useState<{ code: string; link?: string }>();
  useEffect(() => {
    if (!keys) return;
    Promise.all(
      [...(keys.list?.devices ?? []), ...keys.pending].map(async (d) =>
        [d.id, await deviceCode(user.address, d)] as const
      ),
    ).then((pairs) => setCodes(Object.fromEntries(pairs)));
  }, [keys]);
  const file = user.accountDevice;
  const act = async (work: () => Promise<unknown>, done: string) => {
    try {
      await work();
      notify(done);
      reload();
    } catch (error) {
      notify(describe(error), "error");
    }
  };
  const mine = user.device?.id;
  return html`<section class="card" aria-labelledby="dev-h">
    <h2 id="dev-h">Devices</h2>
    <p>Mail is encrypted for the devices in your list, which your master key
      signs${file?.master ? " (this browser holds it)" : ""}. Compare a new
      device's code with the code it shows before approving it.</p>
    <table>
      <thead><tr><th>Device</th><th>Code</th><th>State</th><th><span class="visually-hidden">Actions</span></th></tr></thead>
      <tbody>
        ${
    (keys?.list?.devices ?? []).map((d) =>
      html`
        <tr data-device=${d.id}>
          <td>${d.label || d.id}${d.id === mine ? " (this browser)" : ""}</td>
          <td class="code">${codes[d.id] ?? ""}</td>
          <td>listed</td>
          <td>${file?.master && d.id !== mine
            ? html`<button onClick=${() =>
              act(
                () =>
                  revokeDevice(user.client, {
                    token: user.token,
                    file,
                    id: d.id,
                  }),
                `Revoked ${d.label}.`,
              )}>Revoke</button>`
            : null}</td>
        </tr>
      `
    )
  }
        ${
    (keys?.pending ?? []).map((d) =>
      html`
        <tr data-device=${d.id}>
          <td>${d.label || d.id}${d.id === mine ? " (this browser)" : ""}</td>
          <td class="code" data-testid="pending-code">${codes[d.id] ?? ""}</td>
          <td>waiting for approval</td>
          <td>${file?.master
            ? html`
              <button onClick=${() =>
                act(
                  () =>
                    approveDevice(user.client, {
                      token: user.token,
                      file,
                      id: d.id,
                    }),
                  `Approved ${d.label}.`,
                )}>Approve (the codes match)</button>
              <button onClick=${() =>
                act(
                  () =>
                    revokeDevice(user.client, {
                      token: user.token,
                      file,
                      id: d.id,
                    }),
                  `Refused ${d.label}.`,
                )}>Refuse</button>
            `
            : null}</td>
        </tr>
      `
    )
  }
      </tbody>
    </table>
    <h3>Add a device</h3>
    <p>An invitation lets another browser (or the CLI: <code>amtp accept CODE</code>)
      register its own key for your account. It works once, for an hour.</p>
    <button onClick=${async () => {
    try {
      setInvite(
        await user.call<{ code: string; link?: string }>(
          "user_add_invitation",
        ),
      );
    } catch (error) {
      notify(describe(error), "error");
    }
  }}>Invite a device</button>
    ${
    invite
      ? html`<p>Code: <strong class="code" data-testid="device-invite">${invite.code}</strong>${
        invite.link
          ? html`
            — link: <code>${invite.link}</code>
          `
          : null
      }</p>`
      : null
  }
  </section>`;
}

function KeysAndSessions() {
  const user = app.value.user!;
  const [keys, reloadKeys] = useLoad(() =>
    user.call<
      {
        keys: {
          key_id: string;
          label: string;
          algorithm: string;
          created: Date;
        }[];
      }
    >(
      "user_get_keys",
    )
  );
  const [sessions, reloadSessions] = useLoad(() =>
    user.call<
      {
        sessions: {
          session_id: string;
          label: string;
          ip: string;
          created: Date;
          current: boolean;
        }[];
      }
    >("user_get_sessions")
  );
  return html`
    <section class="card" aria-labelledby="keys-h">
      <h2 id="keys-h">Sign-in keys and sessions</h2>
      <table>
        <caption>Sign-in keys</caption>
        <thead>
          <tr>
            <th>Label</th>
            <th>Key id</th>
            <th>Algorithm</th>
            <th><span class="visually-hidden">Actions</span></th>
          </tr>
        </thead>
        <tbody>${(keys?.keys ?? []).map((k) =>
          html`
            <tr>
              <td>${k.label}${k.key_id === user.stored.login.keyId
                ? " (this browser)"
                : ""}</td>
              <td><code>${k.key_id}</code></td>
              <td>${k.algorithm}</td>
              <td>${k.key_id === user.stored.login.keyId
                ? null
                : html`<button onClick=${() =>
                  user.call("user_del_key", { key_id: k.key_id }).then(
                    reloadKeys,
                  )
                    .catch((e) =>
                      notify(describe(e), "error")
                    )}>Remove</button>`}</td>
            </tr>
          `
        )}</tbody>
      </table>
      <table>
        <caption>Sessions</caption>
        <thead>
          <tr>
            <th>Label</th>
            <th>Address</th>
            <th>Since</th>
            <th><span class="visually-hidden">Actions</span></th>
          </tr>
        </thead>
        <tbody>${(sessions?.sessions ?? []).map((s) =>
          html`
            <tr>
              <td>${s.label}${s.current ? " (this one)" : ""}</td>
              <td>${s.ip}</td>
              <td>${formatMoment(s.created)}</td>
              <td>${s.current
                ? null
                : html`<button onClick=${() =>
                  user.call("user_del_session", { session_id: s.session_id })
                    .then(reloadSessions).catch((e) =>
                      notify(describe(e), "error")
                    )}>Sign out</button>`}</td>
            </tr>
          `
        )}</tbody>
      </table>
    </section>
  `;
}

function Notifications() {
  const user = app.value.user!;
  const [subs, reload] = useLoad(() =>
    user.call<
      {
        subscriptions: {
          id: string;
          label: string;
          preview: string;
          endpoint: string;
        }[];
      }
    >("user_get_push_subscriptions")
  );
  const [preview, setPreview] = useState("sender");
  const supported = "serviceWorker" in navigator && "PushManager" in globalThis;
  const enable = async () => {
    try {
      if (await Notification.requestPermission() !== "granted") {
        throw new Error("notifications are not allowed for this site");
      }
      const registration = await navigator.serviceWorker.ready;
      const { vapid_public_key } = await user.call<
        { vapid_public_key: Uint8Array }
      >(
        "user_get_push_key",
      );
      const subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: vapid_public_key as Uint8Array<ArrayBuffer>,
      });
      const json = subscription.toJSON();
      await user.call("user_add_push_subscription", {
        endpoint: subscription.endpoint,
        p256dh: fromBase64url(json.keys!.p256dh),
        auth: fromBase64url(json.keys!.auth),
        label: browserLabel(),
        preview,
      });
      notify("Notifications are on for this browser.");
      reload();
    } catch (error) {
      notify(`Notifications: ${describe(error)}`, "error");
    }
  };
  return html`<section class="card" aria-labelledby="ntf-h">
    <h2 id="ntf-h">Notifications</h2>
    <p>New mail shows a notification when this app is closed (Web Push
      through your browser's push service, which sees only encrypted data).
      It never shows a message's text, nor the subject of encrypted mail.</p>
    ${
    supported
      ? html`
        <label for="preview">A notification shows</label>
        <select id="preview" value=${preview}
          onChange=${(e: Event) =>
            setPreview((e.target as HTMLSelectElement).value)}>
          <option value="none">only that mail arrived</option>
          <option value="sender">the sender</option>
          <option value="full">the sender and the subject (unencrypted mail)</option>
        </select>
        <button onClick=${enable}>Turn on notifications in this browser</button>
      `
      : html`<p class="muted">This browser has no Web Push.</p>`
  }
    <ul class="plain">${
    (subs?.subscriptions ?? []).map((s) =>
      html`<li>${s.label || "a browser"} (${s.preview}) <button onClick=${() =>
        user.call("user_del_push_subscription", { id: s.id }).then(reload)
          .catch((e) => notify(describe(e), "error"))}>Turn off</button></li>`
    )
  }</ul>
  </section>`;
}

function Contacts() {
  const user = app.value.user!;
  const [contacts, reload] = useLoad(() => user.trust.all());
  const [codes, setCodes] = useState<Record<string, string>>({});
  const compare = async (address: string) => {
    try {
      const theirs = (await keysOf(user.client, user.token, address)).list;
      const mine = user.stored.master?.public ??
        (await keysOf(user.client, user.token, user.address)).list?.master;
      if (!theirs || !mine) throw new Error("no device list to compare");
      const code = await safetyCode(
        { address: user.address, master: mine },
        { address, master: theirs.master },
      );
      setCodes((c) => ({ ...c, [address]: code }));
    } catch (error) {
      notify(describe(error), "error");
    }
  };
  const confirm = async (address: string) => {
    try {
      const list = (await keysOf(user.client, user.token, address)).list;
      if (!list) throw new Error("no device list");
      await confirmContact(list, user.trust);
      notify(`${address}'s keys are confirmed.`);
      reload();
    } catch (error) {
      notify(describe(error), "error");
    }
  };
  return html`
    <section class="card" aria-labelledby="ct-h">
      <h2 id="ct-h">Correspondents' keys</h2>
      <p>A correspondent's master key is remembered the first time it is seen.
          Compare the safety code with them (in person or by phone) to confirm it;
          a changed key blocks sending until you do.</p>
      <table>
        <thead>
          <tr>
            <th>Address</th>
            <th>State</th>
            <th>Safety code</th>
            <th><span class="visually-hidden">Actions</span></th>
          </tr>
        </thead>
        <tbody>${(contacts ?? []).map(({ address, record }) =>
          html`
            <tr>
              <td>${address}</td>
              <td>${record.changed
                ? "KEY CHANGED"
                : record.confirmed
                ? "confirmed"
                : "seen"}</td>
              <td class="code">${codes[address] ?? ""}</td>
              <td>
                    <button onClick=${() =>
                      compare(address)}>Show safety code</button>
                    ${codes[address] && (record.changed || !record.confirmed)
                      ? html`<button onClick=${() =>
                        confirm(address)}>The codes match: confirm</button>`
                      : null}</td>
            </tr>
          `
        )}</tbody>
      </table>
    </section>
  `;
}

function Profile() {
  const user = app.value.user!;
  const [name, setName] = useState("");
  useEffect(() => {
    user.call<{ name: string }>("user_userinfo", { address: user.address })
      .then((p) => setName(p.name)).catch(() => {});
  }, []);
  return html`
    <section class="card" aria-labelledby="pf-h">
      <h2 id="pf-h">${user.address}</h2>
      <form onSubmit=${(e: Event) => {
        e.preventDefault();
        user.call("user_set_profile", { name }).then(() => notify("Saved."))
          .catch((err) => notify(describe(err), "error"));
      }}>
        <label for="pf-name">Your name (others see it)</label>
        <input id="pf-name" value=${name}
          onInput=${(e: Event) =>
            setName((e.target as HTMLInputElement).value)} />
        <button type="submit">Save</button>
      </form>
      <p class="muted">Keys of this browser cannot be exported: the backup
          offered when they were made is the only copy outside it.</p>
      <button onClick=${() => signOut(false)}>Sign out</button>
      <button onClick=${() => {
        if (
          confirm(
            "Remove this account's keys from this browser? Without a backup they are lost.",
          )
        ) {
          signOut(true);
        }
      }}>Sign out and forget this browser's keys</button>
    </section>
  `;
}

/** The settings screen. */
export function SettingsScreen() {
  useStore(app);
  return html`
    <main class="settings" id="main">
      <div class="screen-head"><h1>Settings</h1>
          <button onClick=${() => show("mail")}>Back to mail</button></div>
      <${Profile} />
      <${Devices} />
      <${KeysAndSessions} />
      <${Notifications} />
      <${Contacts} />
    </main>
  `;
}
