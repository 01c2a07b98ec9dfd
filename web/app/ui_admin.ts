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

/**
 * A section of the console: its heading `id` and `title` (beside a Refresh
 * button when it has a `reload`), then what it shows (text, a table, forms).
 */
function Section(
  { id, title, reload, children }: {
    id: string;
    title: string;
    reload?: () => void;
    children?: unknown;
  },
) {
  const heading = html`<h2 id=${id}>${title}</h2>`;
  return html`<section class="card" aria-labelledby=${id}>
    ${
    reload
      ? html`<div class="screen-head">${heading}
          <button onClick=${reload}>Refresh</button></div>`
      : heading
  }
    ${children}
  </section>`;
}

/** A one-line form: its fields (and other buttons), then its submit button. */
function RowForm(
  { submit, onSubmit, children }: {
    submit: string;
    onSubmit: () => unknown;
    children?: unknown;
  },
) {
  return html`<form class="row-form" onSubmit=${(e: Event) => {
    e.preventDefault();
    onSubmit();
  }}>
    ${children}
    <button type="submit">${submit}</button>
  </form>`;
}

/**
 * A button that runs one admin command ({@link act}), after `ask` is
 * confirmed when there is one.
 */
function CommandButton(
  { label, command, params, done, reload, ask }: {
    label: string;
    command: string;
    params: Row;
    done: string;
    reload?: () => void;
    ask?: string;
  },
) {
  const admin = app.value.admin!;
  return html`<button onClick=${() =>
    (!ask || confirm(ask)) &&
    act(admin, command, params, done, reload)}>${label}</button>`;
}

function SysInfo() {
  const [info, reload] = useAdmin<Row>("admin_sysinfo");
  return html`<${Section} id="sys-h" title="Server" reload=${reload}>
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
  }<//>`;
}

function Domains() {
  const admin = app.value.admin!;
  const [data, reload] = useAdmin<{ domains: Row[] }>("admin_get_domains", {
    limit: 500,
  });
  const [name, setName] = useState("");
  const [open, setOpen] = useState(false);
  return html`
    <${Section} id="dom-h" title="Domains">
      <${Table} label="Domains" rows=${data?.domains ?? []}
        columns=${["name", "registration_open", "description"]}
        actions=${(r: Row) =>
          html`
            <${CommandButton} label="Delete" command="admin_del_domain"
              params=${{ domain: r.name, force: true }}
              done=${`Domain ${r.name} deleted`} reload=${reload}
              ask=${`Delete ${r.name} and all its users and aliases?`} />
          `} />
      <${RowForm} submit="Add domain" onSubmit=${() =>
        act(
          admin,
          "admin_add_domain",
          { domain: name.trim(), registration_open: open },
          `Domain ${name} added`,
          reload,
        ).then((r) => r && setName(""))}>
          ${field("dom-name", "New domain", name, setName)}
          <div><label><input type="checkbox" checked=${open}
            onChange=${(e: Event) =>
              setOpen(
                (e.target as HTMLInputElement).checked,
              )} /> open for self-registration</label></div>
        <//>
      <//>
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
  return html`
    <${Section} id="ainv-h" title="Invitations" reload=${reload}>
      <p>An invitation lets a person's own browser make their keys and create
          their account: no private key is made here. The code is shown once.</p>
      <${RowForm} submit="Create invitation" onSubmit=${async () => {
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
        <//>
        ${made
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
          : null}
        <${Table} label="Open invitations" rows=${data?.invitations ?? []}
          columns=${["address", "kind", "created_by", "expires"]}
          actions=${(r: Row) =>
            html`
              <${CommandButton} label="Withdraw" command="admin_del_invitation"
                params=${{
                  id: r.id,
                }} done="Invitation withdrawn" reload=${reload} />
            `} />
      <//>
  `;
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
    <${Section} id="usr-h" title="Users" reload=${reload}>
      <${Table} label="Users" rows=${rows}
        columns=${["address", "name", "disabled", "quota", "devices"]}
        actions=${(r: Row) =>
          html`
            <${CommandButton} label=${r.disabled ? "Enable" : "Disable"}
              command="admin_set_user"
              params=${{ address: r.address, disabled: !r.disabled }}
              done=${`${r.address} ${r.disabled ? "enabled" : "disabled"}`}
              reload=${reload} />
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
            <${CommandButton} label="Delete" command="admin_del_user"
              params=${{ address: r.address }} done=${`${r.address} deleted`}
              reload=${reload} ask=${`Delete ${r.address}?`} />
          `} />
      <//>
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
    <${Section} id="ali-h" title="Aliases and catch-alls">
      <${Table} label="Aliases" rows=${data?.aliases ?? []}
        columns=${["address", "recipients", "description"]}
        actions=${(r: Row) =>
          html`
            <${CommandButton} label="Delete" command="admin_del_alias"
              params=${{ address: r.address }} done="Alias deleted"
              reload=${reload} />
          `} />
      <${RowForm} submit="Add alias" onSubmit=${() =>
        act(
          admin,
          "admin_add_alias",
          {
            address: address.trim(),
            recipients: to.split(/[,\s]+/).filter(Boolean),
          },
          `Alias ${address} added`,
          reload,
        )}>
          ${field("ali-address", "Alias", address, setAddress)}
          ${field("ali-to", "Delivers to (comma separated)", to, setTo)}
        <//>
        <${RowForm} submit="Set catch-all" onSubmit=${() =>
          act(admin, "admin_set_catchall", {
            domain: domain.trim(),
            recipients: catchall.split(/[,\s]+/).filter(Boolean),
          }, `Catch-all of ${domain} set`)}>
          ${field("ca-domain", "Catch-all of domain", domain, setDomain)}
          ${field("ca-to", "Delivers to (empty: off)", catchall, setCatchall)}
          <button type="button" onClick=${async () => {
            const r = await act(admin, "admin_get_catchall", {
              domain: domain.trim(),
            }, `Catch-all of ${domain} read`);
            if (r) setCatchall((r.recipients as string[]).join(", "));
          }}>Read</button>
        <//>
      <//>
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
    <${Section} id="adm-h" title="Admins">
      <p
        class="muted">New admins are added with their public key: <code>deno task amtp admin add-admin</code>.</p>
      <${Table} label="Admins" rows=${rows} columns=${[
        "name",
        "disabled",
        "keys",
      ]}
        actions=${(r: Row) =>
          r.name === admin.name ? null : html`
            <${CommandButton} label=${r.disabled ? "Enable" : "Disable"}
              command="admin_set_admin"
              params=${{ name: r.name, disabled: !r.disabled }}
              done=${`Admin ${r.name} updated`} reload=${reload} />
          `} />
      <//>
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
  const [data, reload] = useAdmin<{ modules: Row[] }>("admin_get_modules");
  const verb = (label: string, command: string, m: Row, done: string) =>
    html`
      <${CommandButton} label=${label} command=${command}
        params=${{ name: m.name, version: m.version }} done=${done}
        reload=${reload} />
    `;
  return html`
    <${Section} id="mod-h" title="Modules" reload=${reload}>
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
            ${verb(
              "Reload",
              "admin_reload_module",
              m,
              `${m.name} ${m.version} reloaded`,
            )}
            ${verb(
              m.enabled ? "Disable" : "Enable",
              m.enabled ? "admin_disable_module" : "admin_enable_module",
              m,
              `${m.name} ${m.version} ${m.enabled ? "disabled" : "enabled"}`,
            )}
            ${verb(
              "Make default",
              "admin_set_module_default",
              m,
              `${m.name} ${m.version} is the default`,
            )}
          `} />
      <//>
  `;
}

function Queue() {
  const [data, reload] = useAdmin<{ items: Row[] }>("admin_get_queue");
  return html`
    <${Section} id="q-h" title="Outbound queue" reload=${reload}>
      <${Table} label="Outbound queue" rows=${data?.items ?? []}
        columns=${["id", "domain", "attempts", "next_attempt", "last_error"]}
        actions=${(r: Row) =>
          html`
            <${CommandButton} label="Retry" command="admin_retry_queue"
              params=${{ id: r.id }} done="Retry now" reload=${reload} />
            <${CommandButton} label="Drop" command="admin_del_queue"
              params=${{ id: r.id }} done="Dropped" reload=${reload} />
          `} />
      <//>
  `;
}

function DnsCheck() {
  const admin = app.value.admin!;
  const [result, setResult] = useState<Row | undefined>();
  return html`<${Section} id="dns-h" title="DNS self-check">
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
          columns=${["name", "type", "status", "value", "found", "message"]} />
      `
      : null
  }
  <//>`;
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
