/**
 * `amtp`, the command-line client.
 *
 * ```
 * deno task amtp info [--server HOST:PORT] [--ws] [--json]
 * deno task amtp call '{"command":"ping"}'
 * deno task amtp keygen [--out NAME] [--alg ed25519|x25519|rsa]
 * deno task amtp login --admin NAME --key FILE.key | --user ADDRESS --key FILE.key
 * deno task amtp whoami | logout
 * deno task amtp admin SUBCOMMAND ...
 * deno task amtp user SUBCOMMAND ...
 * deno task amtp register ADDRESS --key FILE.pub
 * deno task amtp send|inbox|read|search|watch ...
 * ```
 *
 * Connection settings: `--server` (default: the saved session's, else
 * localhost:4433), `--cert-hash` (else the local server's data/tls/cert.pem,
 * else the saved one), `--ca FILE` for WebSocket to a self-signed server
 * (else the local data/tls/cert.pem), `--ws` for WebSocket.
 * The session (server and tokens) is saved to `$AMTP_CLI_STATE` or
 * `~/.config/amtp/session.json`, readable by its owner only.
 *
 * @module
 */

import { errorName } from "../shared/errors.ts";
import { certificateHash } from "../shared/pem.ts";
import {
  ADMIN_SUBCOMMANDS,
  buildParams,
  type SubcommandSpec,
  USER_SUBCOMMANDS,
} from "./admin_cli.ts";
import { type Args, parseArgs, UsageError } from "./cli_args.ts";
import { asJson, parseJson, readable } from "./format.ts";
import { readPrivateKey, writeKeyPair } from "../shared/login/keyfile.ts";
import { AmtpClient, AmtpError } from "./mod.ts";
import {
  inboxCommand,
  mail,
  readCommand,
  searchCommand,
  sendCommand,
  trustPath,
  watchCommand,
} from "./mail_cli.ts";
import {
  approveDevice,
  devicePath,
  FileTrustStore,
  initDevice,
  keysOf,
  loadDevice,
  revokeDevice,
} from "./e2e_cli.ts";
import { b64, confirmContact, deviceCode, safetyCode } from "./e2e.ts";
import { NotSentError } from "./mail_cli.ts";

/** What the CLI remembers between runs. */
interface State {
  server?: string;
  certHash?: string;
  admin?: string;
  admin_token?: string;
  user?: string;
  user_token?: string;
}

function statePath(): string {
  const explicit = Deno.env.get("AMTP_CLI_STATE");
  if (explicit) return explicit;
  const home = Deno.env.get("HOME") ?? ".";
  return `${home}/.config/amtp/session.json`;
}

async function loadState(): Promise<State> {
  try {
    return JSON.parse(await Deno.readTextFile(statePath())) as State;
  } catch {
    return {};
  }
}

async function saveState(state: State): Promise<void> {
  const path = statePath();
  const dir = path.replace(/[^/]*$/, "");
  if (dir) await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  // Deno applies `mode` to an existing file too: tokens never stay readable by others.
  await Deno.writeTextFile(path, JSON.stringify(state, null, 2), {
    mode: 0o600,
  });
}

async function readLocal(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
}

async function connect(args: Args, state: State): Promise<AmtpClient> {
  const server = args.flags.get("server") ?? state.server ?? "localhost:4433";
  const dataDir = Deno.env.get("AMTP_DATA") ?? "./data";
  const localCert = await readLocal(
    args.flags.get("ca") ?? `${dataDir}/tls/cert.pem`,
  );
  const certHash = args.flags.get("cert-hash") ??
    (localCert ? await certificateHash(localCert) : state.certHash);
  const ws = args.flags.has("ws");
  const client = await AmtpClient.connect({
    url: `${ws ? "wss" : "https"}://${server}/amtp`,
    transport: ws ? "websocket" : "webtransport",
    certHash,
    caCerts: localCert ? [localCert] : undefined,
    keepAliveMs: 0,
  });
  state.server = server;
  if (certHash) state.certHash = certHash;
  return client;
}

function print(args: Args, data: unknown): void {
  console.log(args.flags.has("json") ? asJson(data) : readable(data));
}

async function runCommand(
  client: AmtpClient,
  args: Args,
  command: string,
  params: Record<string, unknown>,
): Promise<unknown> {
  const data = await client.call(command, params);
  print(args, data ?? { ok: true });
  return data;
}

async function login(args: Args, state: State): Promise<void> {
  const admin = args.flags.get("admin");
  const user = args.flags.get("user");
  const keyFile = args.flags.get("key");
  if (!keyFile || (!admin && !user)) {
    throw new UsageError(
      "usage: amtp login (--admin NAME | --user ADDRESS) --key FILE.key [--label DEVICE]",
    );
  }
  const kind = admin ? "admin" : "user";
  const name = (admin ?? user)!;
  const key = await readPrivateKey(keyFile);
  const client = await connect(args, state);
  try {
    // Bound to the host this client connected to: a relaying server's
    // challenge does not open or verify (PROTOCOL.md §7.2).
    const { token, expires } = await client.login(kind, name, key, {
      label: args.flags.get("label") ?? "cli",
    });
    state[kind] = name;
    state[`${kind}_token`] = token;
    await saveState(state);
    console.log(
      `logged in as ${kind} ${name} (token saved to ${statePath()}, expires ${expires.toISOString()})`,
    );
  } finally {
    client.close();
  }
}

async function subcommand(
  args: Args,
  state: State,
  kind: "admin" | "user",
  table: Record<string, SubcommandSpec>,
): Promise<void> {
  const name = args.positional[1];
  const spec = name ? table[name] : undefined;
  if (!spec) {
    const lines = Object.entries(table).map(([n, s]) =>
      `  amtp ${kind} ${n.padEnd(13)} ${s.help}`
    );
    throw new UsageError(`subcommands:\n${lines.join("\n")}`);
  }
  const token = state[`${kind}_token`];
  if (!token) {
    throw new UsageError(`not logged in as ${kind}: amtp login first`);
  }
  const params = await buildParams(spec, {
    positional: args.positional.slice(2),
    flags: args.flags,
  });
  params[`${kind}_token`] = token;
  const client = await connect(args, state);
  try {
    await runCommand(client, args, spec.command, params);
  } finally {
    client.close();
  }
}

/** The answer of `admin_dns_check`. */
interface DnsCheck {
  hostname: string;
  ok: boolean;
  records: {
    name: string;
    type: string;
    value: string;
    status: string;
    found: string[];
    message: string;
  }[];
}

function formatDnsCheck(check: DnsCheck): string {
  const lines = [`Records to publish for ${check.hostname}:`, ""];
  for (const r of check.records) {
    const record = r.type === "TXT"
      ? `${r.name}. IN TXT "${r.value}"`
      : r.type === "HTTPS"
      ? `${r.name} serves ${r.value}`
      : `${r.name}. IN ${r.type} ${r.value}`;
    lines.push(
      `${
        r.status === "ok" ? "ok     " : r.status.toUpperCase().padEnd(7)
      } ${record}`,
    );
    if (r.status !== "ok") {
      lines.push(`        ${r.message}`);
      for (const found of r.found) {
        lines.push(`        published now: ${found}`);
      }
    } else if (r.type !== "TXT" && r.found.length) {
      lines.push(`        resolves to ${r.found.join(", ")}`);
    }
  }
  lines.push(
    "",
    check.ok
      ? "DNS is set up correctly."
      : "DNS needs the changes marked above.",
  );
  return lines.join("\n");
}

const USAGE = `amtp - AMTP command-line client

  amtp info                         server information (no login)
  amtp call '<json>'                send one command (Extended JSON), print the response
  amtp keygen [--out NAME] [--alg ed25519|x25519|rsa]   write NAME.key and NAME.pub
  amtp login --admin NAME --key FILE.key        log in as admin
  amtp login --user ADDRESS --key FILE.key      log in as user
  amtp register ADDRESS --key FILE.pub [--name NAME]   self-registration, where open
  amtp whoami | logout
  amtp send --to A,B --subject S --body TEXT [--attach F1,F2] [--cc ..] [--bcc ..] [--format markdown]
  amtp inbox [--folder F] [--unseen]   list a folder, newest first
  amtp read ID [--save DIR]          show a message (marks it seen), save its attachments
  amtp search TEXT [--from A]        search your mail
  amtp watch                         print messages as they arrive
  amtp send ... --plain | --encrypt   send in clear with consent | refuse unless encrypted
  amtp device init [--label NAME]    this device's encryption keys: the first device also creates
                                     your master key; later ones wait for approval
  amtp device list                   your device list (signed by your master key) and pending devices
  amtp device approve ID --code C    add a pending device (on a device with your master key)
  amtp device revoke ID              remove a device from your list
  amtp verify ADDRESS                the safety code to compare with ADDRESS out of band
  amtp trust ADDRESS [--code C]      confirm ADDRESS's current master key (after comparing the code)
  amtp dns [DOMAIN]                 the DNS records to publish, checked against live DNS (admin)
  amtp admin SUBCOMMAND ...         admin commands (amtp admin for the list)
  amtp user SUBCOMMAND ...          user commands (amtp user for the list)

flags: --server HOST:PORT  --ws (WebSocket)  --cert-hash HEX  --ca FILE  --json`;

/** `device init|list|approve|revoke`, `verify` and `trust`: the end-to-end keys. */
async function keyCommand(
  client: AmtpClient,
  token: string,
  user: string,
  args: Args,
): Promise<string> {
  const verb = args.positional[0];
  const address = user.toLowerCase();
  const stateFile = statePath();
  if (verb === "verify" || verb === "trust") {
    const other = args.positional[1]?.toLowerCase();
    if (!other) throw new UsageError(`usage: amtp ${verb} ADDRESS`);
    const theirs = (await keysOf(client, token, other)).list;
    if (!theirs) throw new Error(`${other} publishes no device list`);
    const file = await loadDevice(stateFile, address);
    const mine = (await keysOf(client, token, address)).list;
    const myMaster = file?.master?.public ?? mine?.master;
    if (!myMaster) {
      throw new Error("you have no master key yet (amtp device init)");
    }
    const code = await safetyCode(
      { address, master: myMaster },
      { address: other, master: theirs.master },
    );
    if (verb === "verify") {
      return [
        `safety code of you and ${other}: ${code}`,
        `compare it with ${other} (in person, by phone); if it matches: amtp trust ${other} --code "${code}"`,
      ].join("\n");
    }
    const given = args.flags.get("code");
    if (
      given !== undefined &&
      given.replace(/\s/g, "") !== code.replace(/\s/g, "")
    ) {
      throw new Error(
        `the code does not match (${code}): do not trust this key`,
      );
    }
    await confirmContact(theirs, new FileTrustStore(trustPath(stateFile)));
    return `confirmed the master key of ${other} (${
      b64(theirs.master).slice(0, 12)
    }..., ${theirs.devices.length} device(s): ${
      theirs.devices.map((d) => d.label).join(", ")
    })${
      given === undefined ? "; safety code: " + code : ", safety code matched"
    }`;
  }
  const sub = args.positional[1];
  if (sub === "init") {
    const result = await initDevice(client, {
      token,
      address,
      label: args.flags.get("label") ?? "device",
      stateFile,
      newMaster: args.flags.has("new-master"),
    });
    const where = devicePath(stateFile, address);
    if (result.kind === "listed") {
      return `device ${result.file.device.id} created and published in your device list (#${result.list.counter}), signed by your new master key; private keys: ${where}`;
    }
    return [
      `device ${result.file.device.id} created; private keys: ${where}`,
      `it waits for approval. Its code: ${await deviceCode(address, {
        enc: result.file.device.encryptPublic,
        sign: result.file.device.signPublic,
      })}`,
      `on a device with your master key: amtp device approve ${result.file.device.id} --code "<the code above>"`,
    ].join("\n");
  }
  if (sub === "list") {
    const keys = await keysOf(client, token, address);
    const file = await loadDevice(stateFile, address);
    const lines = keys.list
      ? [
        `device list #${keys.list.counter} (master key ${
          b64(keys.list.master).slice(0, 12)
        }...):`,
      ]
      : ["no device list (amtp device init)"];
    for (const d of keys.list?.devices ?? []) {
      lines.push(
        `  ${d.id}  ${d.label}${
          d.id === file?.device.id ? "  (this device)" : ""
        }`,
      );
    }
    for (const p of keys.pending) {
      lines.push(
        `  ${p.id}  ${p.label}  PENDING, code ${await deviceCode(address, p)}${
          p.id === file?.device.id ? "  (this device)" : ""
        }`,
      );
    }
    if (keys.invalid) {
      lines.push(`  ${keys.invalid} list(s) that do not verify (ignored)`);
    }
    return lines.join("\n");
  }
  if (sub === "approve" || sub === "revoke") {
    const id = args.positional[2];
    if (!id) throw new UsageError(`usage: amtp device ${sub} ID`);
    const file = await loadDevice(stateFile, address);
    if (!file) throw new Error("this device has no keys (amtp device init)");
    if (sub === "approve") {
      const pending = (await keysOf(client, token, address)).pending.find((
        p,
      ) => p.id === id);
      if (!pending) throw new Error(`no pending device ${id}`);
      const code = await deviceCode(address, pending);
      const given = args.flags.get("code");
      if (given === undefined) {
        throw new UsageError(
          `compare the code shown on the new device with ${code}, then: amtp device approve ${id} --code "${code}"`,
        );
      }
      if (given.replace(/\s/g, "") !== code.replace(/\s/g, "")) {
        throw new Error(
          `the code does not match (${code}): this is not the device you set up`,
        );
      }
      const list = await approveDevice(client, { token, file, id });
      return `device ${id} approved: device list #${list.counter} has ${list.devices.length} device(s)`;
    }
    const list = await revokeDevice(client, { token, file, id });
    return `device ${id} revoked: device list #${list.counter} has ${list.devices.length} device(s)`;
  }
  throw new UsageError(
    "usage: amtp device init [--label NAME] | list | approve ID --code C | revoke ID",
  );
}

/** Run the CLI with arguments; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  const state = await loadState();
  const verb = args.positional[0];
  try {
    switch (verb) {
      case "info":
      case "ping": {
        const client = await connect(args, state);
        try {
          await runCommand(client, args, verb, {});
        } finally {
          client.close();
        }
        return 0;
      }
      case "call": {
        const text = args.positional[1];
        if (!text) {
          throw new UsageError(`usage: amtp call '{"command":"ping"}'`);
        }
        const doc = parseJson(text);
        const command = String(doc.command ?? "");
        for (const kind of ["admin", "user"] as const) {
          if (
            command.startsWith(`${kind}_`) && doc[`${kind}_token`] === undefined
          ) {
            const token = state[`${kind}_token`];
            if (token) doc[`${kind}_token`] = token;
          }
        }
        if (
          doc.module !== undefined && doc.user_token === undefined &&
          state.user_token
        ) {
          doc.user_token = state.user_token;
        }
        const client = await connect(args, state);
        try {
          const { command: _, ...params } = doc;
          const response = await client.request(command, params);
          console.log(asJson(response));
          return response.error === 0 ? 0 : 1;
        } finally {
          client.close();
        }
      }
      case "keygen": {
        const algorithms = {
          ed25519: "Ed25519",
          x25519: "HPKE-X25519",
          rsa: "RSA-OAEP-256",
        } as const;
        const alg = (args.flags.get("alg") ?? "ed25519").toLowerCase();
        if (!Object.hasOwn(algorithms, alg)) {
          throw new UsageError("--alg is ed25519 (default), x25519 or rsa");
        }
        const out = await writeKeyPair(
          args.flags.get("out") ?? "amtp",
          algorithms[alg as keyof typeof algorithms],
        );
        console.log(
          `private key: ${out.keyFile} (keep it; readable by you only)\npublic key:  ${out.pubFile}\nkey id:      ${out.keyId}`,
        );
        return 0;
      }
      case "login":
        await login(args, state);
        return 0;
      case "register": {
        const address = args.positional[1];
        if (!address || !args.flags.get("key")) {
          throw new UsageError("usage: amtp register ADDRESS --key FILE.pub");
        }
        const params = await buildParams(
          {
            command: "user_register",
            positional: ["address"],
            flags: { key: ["public_key", "pubkey"], name: ["name", "string"] },
            help: "",
          },
          { positional: [address], flags: args.flags },
        );
        const client = await connect(args, state);
        try {
          await runCommand(client, args, "user_register", params);
        } finally {
          client.close();
        }
        return 0;
      }
      case "whoami":
        print(args, {
          server: state.server ?? null,
          admin: state.admin_token ? state.admin : null,
          user: state.user_token ? state.user : null,
        });
        return 0;
      case "logout": {
        const client = await connect(args, state);
        try {
          for (const kind of ["admin", "user"] as const) {
            const token = state[`${kind}_token`];
            if (!token) continue;
            await client.request(`${kind}_logout`, {
              [`${kind}_token`]: token,
            });
            console.log(`logged out ${kind} ${state[kind]}`);
            delete state[`${kind}_token`];
          }
        } finally {
          client.close();
        }
        await saveState(state);
        return 0;
      }
      case "send":
      case "inbox":
      case "read":
      case "search":
      case "watch": {
        const token = state.user_token;
        if (!token) {
          throw new UsageError(
            "not logged in as user: amtp login --user ADDRESS --key FILE first",
          );
        }
        const client = await connect(args, state);
        const m = mail(client, {
          token,
          address: state.user!,
          stateFile: statePath(),
        });
        try {
          if (verb === "watch") {
            await watchCommand(m, args, (text) => console.log(text));
          } else {
            const run = {
              send: sendCommand,
              inbox: inboxCommand,
              read: readCommand,
              search: searchCommand,
            }[verb];
            console.log(await run(m, args));
          }
        } finally {
          client.close();
        }
        return 0;
      }
      case "dns": {
        const token = state.admin_token;
        if (!token) {
          throw new UsageError(
            "not logged in as admin: amtp login --admin NAME --key FILE first",
          );
        }
        const client = await connect(args, state);
        try {
          const check = await client.call<DnsCheck>("admin_dns_check", {
            admin_token: token,
            domain: args.positional[1],
          });
          if (args.flags.has("json")) console.log(asJson(check));
          else console.log(formatDnsCheck(check));
          return check.ok ? 0 : 1;
        } finally {
          client.close();
        }
      }
      case "device":
      case "trust":
      case "verify": {
        const token = state.user_token;
        if (!token || !state.user) {
          throw new UsageError(
            "not logged in as user: amtp login --user ADDRESS --key FILE first",
          );
        }
        const client = await connect(args, state);
        try {
          console.log(await keyCommand(client, token, state.user, args));
        } finally {
          client.close();
        }
        return 0;
      }
      case "admin":
        await subcommand(args, state, "admin", ADMIN_SUBCOMMANDS);
        return 0;
      case "user":
        await subcommand(args, state, "user", USER_SUBCOMMANDS);
        return 0;
      default:
        console.log(USAGE);
        return verb && verb !== "help" ? 2 : 0;
    }
  } catch (error) {
    if (error instanceof AmtpError) {
      console.error(
        `error ${error.code} ${errorName(error.code)}: ${error.message}`,
      );
      return 1;
    }
    if (error instanceof UsageError) {
      console.error(error.message);
      return 2;
    }
    if (error instanceof NotSentError) {
      console.error(error.message);
      return 1;
    }
    console.error(
      `error: ${error instanceof Error ? error.message : String(error)}`,
    );
    return 1;
  } finally {
    if (state.server) await saveState(state).catch(() => {});
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
