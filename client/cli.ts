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

import { errorName } from "../core/protocol/errors.ts";
import { certificateHash } from "../core/tls/cert.ts";
import {
  ADMIN_SUBCOMMANDS,
  buildParams,
  type SubcommandSpec,
  USER_SUBCOMMANDS,
} from "./admin_cli.ts";
import { type Args, parseArgs, UsageError } from "./cli_args.ts";
import { asJson, parseJson, readable } from "./format.ts";
import { readPrivateKey, writeKeyPair } from "../core/auth/keyfile.ts";
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
  devicePath,
  devicesFor,
  FileTrustStore,
  initDevice,
} from "./e2e_cli.ts";

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
  if (dir) await Deno.mkdir(dir, { recursive: true });
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
    } else if (r.type !== "TXT") {
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
  amtp device init [--label NAME]    create and publish this device's encryption keys
  amtp trust ADDRESS                 confirm a correspondent's current keys
  amtp dns [DOMAIN]                 the DNS records to publish, checked against live DNS (admin)
  amtp admin SUBCOMMAND ...         admin commands (amtp admin for the list)
  amtp user SUBCOMMAND ...          user commands (amtp user for the list)

flags: --server HOST:PORT  --ws (WebSocket)  --cert-hash HEX  --ca FILE  --json`;

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
      case "device": {
        const token = state.user_token;
        if (!token || !state.user) {
          throw new UsageError(
            "not logged in as user: amtp login --user ADDRESS --key FILE first",
          );
        }
        if (args.positional[1] !== "init") {
          throw new UsageError("usage: amtp device init [--label NAME]");
        }
        const client = await connect(args, state);
        try {
          const keys = await initDevice(client, {
            token,
            address: state.user,
            label: args.flags.get("label") ?? Deno.hostname(),
            stateFile: statePath(),
          });
          console.log(
            `device keys created (X25519 to receive, Ed25519 to sign) and published as ${keys.keyId}; private keys: ${
              devicePath(statePath(), state.user)
            }`,
          );
        } finally {
          client.close();
        }
        return 0;
      }
      case "trust": {
        const address = args.positional[1];
        if (!address || !state.user_token) {
          throw new UsageError("usage: amtp trust ADDRESS (logged in as user)");
        }
        const client = await connect(args, state);
        try {
          const devices = await devicesFor(client, state.user_token, address);
          const store = new FileTrustStore(trustPath(statePath()));
          const keys = devices.map((d) => ({
            key: btoa(String.fromCharCode(...d.sign)),
            confirmed: true,
          }));
          await store.set(address.toLowerCase(), keys);
          console.log(
            `confirmed ${keys.length} key(s) of ${address}: ${
              devices.map((d) => d.label).join(", ")
            }`,
          );
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
