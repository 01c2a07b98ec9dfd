/// <reference lib="dom" />
/**
 * The admin console: the server's state (sysinfo), domains, users (quota,
 * devices), aliases, catch-alls, admins, invitations (a one-time code and
 * link for an address: the invited browser makes its own keys), modules
 * (versions, load, enable, disable, default), the outbound queue (retry,
 * drop) and the DNS self-check. Every action is one admin command
 * (PROTOCOL.md §9, §12.4, §14.5, §15) with the admin's token.
 *
 * @module
 */

import { useEffect, useState } from "preact/hooks";
import { describe, formatMoment, formatSize, html } from "./html.ts";
import { app, notify, show } from "./state.ts";
import type { AdminSession } from "./account.ts";

type Row = Record<string, unknown>;

/** A command's answer, loaded again when `reload` is called and when the window comes back. */
function useAdmin<T>(command: string, params: Row = {}, deps: unknown[] = []) {
  const admin = app.value.admin!;
  const [value, setValue] = useState<T | undefined>();
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    admin.call<T>(command, params).then((v) => live && setValue(v)).catch((
      e,
    ) => notify(`${command}: ${describe(e)}`, "error"));
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  // Back to this window: what changed meanwhile (people joined) is shown.
  useEffect(() => {
    const again = () => {
      if (document.visibilityState === "visible") setTick((t) => t + 1);
    };
    addEventListener("focus", again);
    document.addEventListener("visibilitychange", again);
    return () => {
      removeEventListener("focus", again);
      document.removeEventListener("visibilitychange", again);
    };
  }, []);
  return [value, () => setTick((t) => t + 1)] as const;
}

/** Run an admin command, tell the user, then reload. */
async function act(
  admin: AdminSession,
  command: string,
  params: Row,
  done: string,
  reload?: () => void,
): Promise<Row | undefined> {
  try {
    const result = await admin.call<Row>(command, params);
    notify(done);
    reload?.();
    return result;
  } catch (error) {
    notify(`${command}: ${describe(error)}`, "error");
    return undefined;
  }
}

function text(value: unknown): string {
  if (value instanceof Date) return formatMoment(value);
  if (Array.isArray(value)) return value.map(text).join(", ");
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** A table of records with the columns named, and a button column. */
function Table(
  { rows, columns, actions, label }: {
    rows: Row[];
    columns: string[];
    actions?: (row: Row) => unknown;
    label: string;
  },
) {
  if (!rows.length) return html`<p class="muted">None.</p>`;
  return html`
    <table aria-label=${label}>
      <thead>
        <tr>${columns.map((c) => html`<th scope="col">${c}</th>`)}${actions
          ? html`<th scope="col"><span class="visually-hidden">Actions</span></th>`
          : null}</tr>
      </thead>
      <tbody>${rows.map((r) =>
        html`<tr>${columns.map((c) => html`<td>${text(r[c])}</td>`)}${
          actions ? html`<td>${actions(r)}</td>` : null
        }</tr>`
      )}</tbody>
    </table>
  `;
}

/** A field of a small form. */
function field(
  id: string,
  label: string,
  value: string,
  set: (v: string) => void,
  type = "text",
) {
  return html`<div><label for=${id}>${label}</label>
    <input id=${id} type=${type} value=${value}
      onInput=${(e: Event) =>
    set((e.target as HTMLInputElement).value)} /></div>`;
}

function SysInfo() {
  const [info, reload] = useAdmin<Row>("admin_sysinfo");
  return html`<section class="card" aria-labelledby="sys-h">
    <div class="screen-head"><h2 id="sys-h">Server</h2>
      <button onClick=${reload}>Refresh</button></div>
    ${
    info
      ? html`
        <dl data-testid="sysinfo">
          <dt>Server</dt>
          <dd>${info.app_name} ${info.app_version} on ${info.hostname}</dd>
          <dt>System</dt>
          <dd>${info.os_name} ${info.os_version}, ${info.cpu_cores} × ${info
            .cpu_model} (${info
            .cpu_arch}), load ${typeof info.cpu_load === "number"
            ? info.cpu_load.toFixed(2)
            : text(info.cpu_load)}</dd>
          <dt>Memory</dt>
          <dd>${formatSize(Number(info.ram_free))} free of ${formatSize(
            Number(info.ram_total),
          )}; server ${formatSize(Number(info.memory_rss))}</dd>
          <dt>Uptime</dt>
          <dd>${info.uptime}</dd>
          <dt>Deno</dt>
          <dd>${info.deno_version}</dd>
        </dl>
      `
      : html`<p class="muted">Loading…</p>`
  }</section>`;
}

function Domains() {
  const admin = app.value.admin!;
  const [data, reload] = useAdmin<{ domains: Row[] }>("admin_get_domains", {
    limit: 500,
  });
  const [name, setName] = useState("");
  const [open, setOpen] = useState(false);
  return html`
    <section class="card" aria-labelledby="dom-h">
      <h2 id="dom-h">Domains</h2>
      <${Table} label="Domains" rows=${data?.domains ?? []}
        columns=${["name", "registration_open", "description"]}
        actions=${(r: Row) =>
          html`<button onClick=${() =>
            confirm(`Delete ${r.name} and all its users and aliases?`) &&
            act(
              admin,
              "admin_del_domain",
              { domain: r.name, force: true },
              `Domain ${r.name} deleted`,
              reload,
            )}>Delete</button>`} />
      <form class="row-form" onSubmit=${(e: Event) => {
        e.preventDefault();
        act(
          admin,
          "admin_add_domain",
          {
            domain: name.trim(),
            registration_open: open,
          },
          `Domain ${name} added`,
          reload,
        ).then((r) => r && setName(""));
      }}>
          ${field("dom-name", "New domain", name, setName)}
          <div><label><input type="checkbox" checked=${open}
            onChange=${(e: Event) =>
              setOpen(
                (e.target as HTMLInputElement).checked,
              )} /> open for self-registration</label></div>
          <button type="submit">Add domain</button>
        </form>
    </section>
  `;
}

function Invitations() {
  const admin = app.value.admin!;
  const [data, reload] = useAdmin<{ invitations: Row[] }>(
    "admin_get_invitations",
  );
  const [address, setAddress] = useState("");
  const [name, setName] = useState("");
  const [days, setDays] = useState("7");
  const [made, setMade] = useState<Row | undefined>();
  return html`<section class="card" aria-labelledby="ainv-h">
    <div class="screen-head"><h2 id="ainv-h">Invitations</h2>
      <button onClick=${reload}>Refresh</button></div>
    <p>An invitation lets a person's own browser make their keys and create
      their account: no private key is made here. The code is shown once.</p>
    <form class="row-form" onSubmit=${async (e: Event) => {
    e.preventDefault();
    const result = await act(
      admin,
      "admin_add_invitation",
      {
        address: address.trim(),
        ...(name.trim() ? { name: name.trim() } : {}),
        expires_in: Math.round(Number(days) * 86_400),
      },
      `Invitation for ${address} made`,
      reload,
    );
    if (result) {
      setMade(result);
      setAddress("");
      setName("");
    }
  }}>
      ${field("ainv-address", "Address", address, setAddress, "email")}
      ${field("ainv-name", "Name (optional)", name, setName)}
      ${field("ainv-days", "Valid for (days)", days, setDays, "number")}
      <button type="submit">Create invitation</button>
    </form>
    ${
    made
      ? html`<div class="card warning" data-testid="invitation">
        <p>Give this to ${(made.invitation as Row).address} (valid until ${
        text((made.invitation as Row).expires)
      }):</p>
        <p>Code: <code data-testid="invitation-code">${made.code}</code></p>
        ${
        made.link
          ? html`<p>Link: <a href=${made.link} data-testid="invitation-link">${made.link}</a></p>`
          : null
      }
      </div>`
      : null
  }
    <${Table} label="Open invitations" rows=${data?.invitations ?? []}
      columns=${["address", "kind", "created_by", "expires"]}
      actions=${(r: Row) =>
    html`<button onClick=${() =>
      act(
        admin,
        "admin_del_invitation",
        { id: r.id },
        "Invitation withdrawn",
        reload,
      )}>Withdraw</button>`} />
  </section>`;
}

function Users() {
  const admin = app.value.admin!;
  const [data, reload] = useAdmin<{ users: Row[] }>("admin_get_users", {
    limit: 500,
  });
  const rows = (data?.users ?? []).map((u) => ({
    ...u,
    devices: (u.keys as Row[]).map((k) => k.label || k.key_id),
    quota: u.quota ? formatSize(Number(u.quota)) : "default",
  }));
  return html`
    <section class="card" aria-labelledby="usr-h">
      <div class="screen-head"><h2 id="usr-h">Users</h2>
          <button onClick=${reload}>Refresh</button></div>
      <${Table} label="Users" rows=${rows}
        columns=${["address", "name", "disabled", "quota", "devices"]}
        actions=${(r: Row) =>
          html`
            <button onClick=${() =>
              act(
                admin,
                "admin_set_user",
                {
                  address: r.address,
                  disabled: !r.disabled,
                },
                `${r.address} ${r.disabled ? "enabled" : "disabled"}`,
                reload,
              )}>${r.disabled ? "Enable" : "Disable"}</button>
            <button onClick=${() => {
              const mb = prompt("Quota in MB (0: the server's default)");
              if (mb !== null) {
                act(
                  admin,
                  "admin_set_user",
                  {
                    address: r.address,
                    quota: Math.round(Number(mb) * 1_000_000),
                  },
                  "Quota set",
                  reload,
                );
              }
            }}>Quota</button>
            <button onClick=${() =>
              confirm(`Delete ${r.address}?`) &&
              act(
                admin,
                "admin_del_user",
                { address: r.address },
                `${r.address} deleted`,
                reload,
              )}>Delete</button>
          `} />
    </section>
  `;
}

function Aliases() {
  const admin = app.value.admin!;
  const [data, reload] = useAdmin<{ aliases: Row[] }>("admin_get_aliases", {
    limit: 500,
  });
  const [address, setAddress] = useState("");
  const [to, setTo] = useState("");
  const [domain, setDomain] = useState("");
  const [catchall, setCatchall] = useState("");
  return html`
    <section class="card" aria-labelledby="ali-h">
      <h2 id="ali-h">Aliases and catch-alls</h2>
      <${Table} label="Aliases" rows=${data?.aliases ?? []}
        columns=${["address", "recipients", "description"]}
        actions=${(r: Row) =>
          html`<button onClick=${() =>
            act(
              admin,
              "admin_del_alias",
              { address: r.address },
              "Alias deleted",
              reload,
            )}>Delete</button>`} />
      <form class="row-form" onSubmit=${(e: Event) => {
        e.preventDefault();
        act(
          admin,
          "admin_add_alias",
          {
            address: address.trim(),
            recipients: to.split(/[,\s]+/).filter(Boolean),
          },
          `Alias ${address} added`,
          reload,
        );
      }}>
          ${field("ali-address", "Alias", address, setAddress)}
          ${field("ali-to", "Delivers to (comma separated)", to, setTo)}
          <button type="submit">Add alias</button>
        </form>
      <form class="row-form" onSubmit=${(e: Event) => {
        e.preventDefault();
        act(admin, "admin_set_catchall", {
          domain: domain.trim(),
          recipients: catchall.split(/[,\s]+/).filter(Boolean),
        }, `Catch-all of ${domain} set`);
      }}>
          ${field("ca-domain", "Catch-all of domain", domain, setDomain)}
          ${field(
            "ca-to",
            "Delivers to (empty: off)",
            catchall,
            setCatchall,
          )}
          <button type="button" onClick=${async () => {
            const r = await act(admin, "admin_get_catchall", {
              domain: domain.trim(),
            }, `Catch-all of ${domain} read`);
            if (r) setCatchall((r.recipients as string[]).join(", "));
          }}>Read</button>
          <button type="submit">Set catch-all</button>
        </form>
    </section>
  `;
}

function Admins() {
  const admin = app.value.admin!;
  const [data, reload] = useAdmin<{ admins: Row[] }>("admin_get_admins", {
    limit: 500,
  });
  const rows = (data?.admins ?? []).map((a) => ({
    ...a,
    keys: (a.keys as Row[]).map((k) => `${k.algorithm} ${k.key_id}`),
  }));
  return html`
    <section class="card" aria-labelledby="adm-h">
      <h2 id="adm-h">Admins</h2>
      <p
        class="muted">New admins are added with their public key: <code>deno task amtp admin add-admin</code>.</p>
      <${Table} label="Admins" rows=${rows} columns=${[
        "name",
        "disabled",
        "keys",
      ]}
        actions=${(r: Row) =>
          r.name === admin.name ? null : html`<button onClick=${() =>
            act(
              admin,
              "admin_set_admin",
              {
                name: r.name,
                disabled: !r.disabled,
              },
              `Admin ${r.name} updated`,
              reload,
            )}>${r.disabled ? "Enable" : "Disable"}</button>`} />
    </section>
  `;
}

/** A module row with its author key and granted rights in words. */
function withGrants(m: Row): Row {
  const rights = (m.rights ?? {}) as {
    permissions?: Record<string, string[]>;
    services?: string[];
    calls?: unknown;
    exports?: unknown;
  };
  const parts = Object.entries(rights.permissions ?? {})
    .filter(([, v]) => v.length > 0)
    .map(([k, v]) => `${k}: ${v.join(", ")}`);
  if (rights.services?.length) {
    parts.push(`services: ${rights.services.join(", ")}`);
  }
  if (rights.calls !== undefined) {
    parts.push(`calls: ${JSON.stringify(rights.calls)}`);
  }
  if (rights.exports !== undefined) {
    parts.push(`exports: ${JSON.stringify(rights.exports)}`);
  }
  return {
    ...m,
    author: m.source === "package"
      ? (m.author_key_id ?? "unsigned")
      : (m.source ?? ""),
    rights: parts.join("; ") || "none",
  };
}

function Modules() {
  const admin = app.value.admin!;
  const [data, reload] = useAdmin<{ modules: Row[] }>("admin_get_modules");
  const verb = (command: string, m: Row, done: string) =>
    act(admin, command, { name: m.name, version: m.version }, done, reload);
  return html`
    <section class="card" aria-labelledby="mod-h">
      <div class="screen-head"><h2 id="mod-h">Modules</h2>
          <button onClick=${reload}>Refresh</button></div>
      <${Table} label="Modules" rows=${(data?.modules ?? []).map(withGrants)}
        columns=${[
          "name",
          "version",
          "state",
          "enabled",
          "default",
          "isolation",
          "author",
          "rights",
          "calls",
          "errors",
          "p99_ms",
        ]}
        actions=${(m: Row) =>
          html`
            <button onClick=${() =>
              verb(
                "admin_reload_module",
                m,
                `${m.name} ${m.version} reloaded`,
              )}>Reload</button>
            <button onClick=${() =>
              verb(
                m.enabled ? "admin_disable_module" : "admin_enable_module",
                m,
                `${m.name} ${m.version} ${m.enabled ? "disabled" : "enabled"}`,
              )}>${m.enabled ? "Disable" : "Enable"}</button>
            <button onClick=${() =>
              verb(
                "admin_set_module_default",
                m,
                `${m.name} ${m.version} is the default`,
              )}>Make default</button>
          `} />
    </section>
  `;
}

function Queue() {
  const admin = app.value.admin!;
  const [data, reload] = useAdmin<{ items: Row[] }>("admin_get_queue");
  return html`
    <section class="card" aria-labelledby="q-h">
      <div class="screen-head"><h2 id="q-h">Outbound queue</h2>
          <button onClick=${reload}>Refresh</button></div>
      <${Table} label="Outbound queue" rows=${data?.items ?? []}
        columns=${["id", "domain", "attempts", "next_attempt", "last_error"]}
        actions=${(r: Row) =>
          html`
            <button onClick=${() =>
              act(
                admin,
                "admin_retry_queue",
                { id: r.id },
                "Retry now",
                reload,
              )}>Retry</button>
            <button onClick=${() =>
              act(
                admin,
                "admin_del_queue",
                { id: r.id },
                "Dropped",
                reload,
              )}>Drop</button>
          `} />
    </section>
  `;
}

function DnsCheck() {
  const admin = app.value.admin!;
  const [result, setResult] = useState<Row | undefined>();
  return html`<section class="card" aria-labelledby="dns-h">
    <h2 id="dns-h">DNS self-check</h2>
    <button onClick=${async () =>
    setResult(
      await act(admin, "admin_dns_check", {}, "DNS checked"),
    )}>Check DNS records</button>
    ${
    result
      ? html`
        <p class=${result.ok ? "good" : "bad"}>${result.ok
          ? "All records are right."
          : "Some records need attention."}</p>
        <${Table} label="DNS records" rows=${(result.records ?? []) as Row[]}
          columns=${[
            "name",
            "type",
            "status",
            "value",
            "found",
            "message",
          ]} />
      `
      : null
  }
  </section>`;
}

/** The admin console. */
export function AdminScreen() {
  const admin = app.value.admin!;
  return html`
    <main class="admin" id="main">
      <div class="screen-head"><h1>Admin: ${admin.name}</h1>
          ${app.value.user
            ? html`<button onClick=${() => show("mail")}>Back to mail</button>`
            : null}</div>
      <${SysInfo} />
      <${Domains} />
      <${Invitations} />
      <${Users} />
      <${Aliases} />
      <${Admins} />
      <${Modules} />
      <${Queue} />
      <${DnsCheck} />
    </main>
  `;
}
