/**
 * `amtp`, the command-line client. Its commands are the table
 * {@link COMMANDS}: each declares its arguments, flags and help, and a
 * function that runs it. `amtp help` lists them, `amtp COMMAND --help`
 * shows one; a flag no command declares is an error.
 *
 * What it keeps (sessions, keys) lives in the user's config folder
 * (`client/cli_config.ts`); the server is the one given with `--server`
 * (remembered), else the local server of the data folder, else
 * localhost:4433.
 *
 * @module
 */

import { errorName } from "../shared/errors.ts";
import { certificateHash } from "../shared/pem.ts";
import { loadEnvFile } from "../shared/env_file.ts";
import { readPrivateKey, writeKeyPair } from "../shared/login/keyfile.ts";
import {
  ADMIN_SUBCOMMANDS,
  buildParams,
  subcommandFlags,
  type SubcommandSpec,
  subcommandUsage,
  USER_SUBCOMMANDS,
} from "./admin_cli.ts";
import {
  type Args,
  flagHelp,
  type FlagSpec,
  GLOBAL_FLAGS,
  parseArgs,
  UsageError,
} from "./cli_args.ts";
import {
  keyBase,
  keyFile,
  loadState,
  localDataDir,
  localServer,
  parseServer,
  saveState,
  type ServerChoice,
  serverText,
  type State,
  statePath,
  userPath,
} from "./cli_config.ts";
import { ConnectError, connectServer, type ServerTarget } from "./connect.ts";
import { asJson, parseJson, readable } from "./format.ts";
import { type AmtpClient, AmtpError } from "./mod.ts";
import {
  inboxCommand,
  mail,
  NotSentError,
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
import {
  adminModuleCommand,
  MODULE_FLAGS,
  moduleCommand,
  type PackageCliContext,
} from "./package_cli.ts";

/** What a command runs with. */
interface Context {
  /** The arguments (the command is `positional[0]`). */
  args: Args;
  /** The profile's session file. */
  statePath: string;
  /** The profile's state. */
  state: State;
  /** Set when the state must be saved. */
  dirty: boolean;
  /** The server given with `--server`, remembered once the command succeeds. */
  chosen?: Pick<State, "server" | "certHash" | "ca">;
  /** Print a line to standard output. */
  out(text: string): void;
  /** Connect to the chosen server (options of the client library). */
  connect(options?: ConnectOptions): Promise<AmtpClient>;
  /** The server that would be used, and how it was chosen. */
  target(): Promise<ServerTarget & { source: string }>;
}

type ConnectOptions = Parameters<typeof connectServer>[1];

/** One command of the CLI. */
interface Command {
  /** Its arguments in usage, e.g. `ADDRESS`. */
  args?: string;
  /** What it does, one line. */
  summary: string;
  /** Its own flags. */
  flags?: Record<string, FlagSpec>;
  /** More help lines for `--help`. */
  details?: string[];
  /** Subcommands (`admin`, `user`): flags and help come from their table. */
  subcommands?: Record<string, SubcommandSpec>;
  /** Run it; returns the exit status. */
  run(ctx: Context): Promise<number>;
}

const LOCAL_NAMES = /^(localhost|127\.\d+\.\d+\.\d+|::1)$/;

async function readLocal(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
}

/** The server to use: `--server`, else the saved one, else the local one, else localhost:4433. */
async function chooseTarget(
  ctx: Context,
): Promise<ServerTarget & { source: string }> {
  const { flags } = ctx.args;
  const { state } = ctx;
  let choice: ServerChoice;
  let certHash = flags.get("cert-hash");
  const caFlag = flags.get("ca");
  let caFile = caFlag === undefined ? undefined : userPath(caFlag);
  const given = flags.get("server");
  if (given !== undefined) {
    choice = parseServer(given, "--server");
    // Remembered for the next commands of this profile once this one
    // succeeds: a server that cannot be reached or refuses the login
    // (wrong server, 106) does not replace the one saved.
    ctx.chosen = {
      server: serverText(choice),
      certHash,
      ca: caFile ? await Deno.realPath(caFile) : undefined,
    };
  } else if (state.server) {
    choice = parseServer(state.server, `the server of ${ctx.statePath}`);
    certHash ??= state.certHash;
    caFile ??= state.ca;
  } else {
    choice = await localServer() ??
      { host: "localhost", port: 4433, source: "the default" };
  }
  const source = given !== undefined
    ? "--server"
    : state.server
    ? `the server of ${ctx.statePath}`
    : choice.source;
  // A server on this machine is pinned by the certificate in the data folder.
  if (!certHash && !caFile && LOCAL_NAMES.test(choice.host)) {
    const pem = await readLocal(`${localDataDir()}/tls/cert.pem`);
    if (pem) certHash = await certificateHash(pem);
  }
  let caCerts: string[] | undefined;
  if (caFile) {
    const pem = await readLocal(caFile);
    if (pem === undefined) throw new UsageError(`cannot read --ca ${caFile}`);
    caCerts = [pem];
  }
  return {
    host: choice.host,
    port: choice.port,
    transport: flags.has("ws") ? "websocket" : "webtransport",
    certHash,
    caCerts,
    nameServer: Deno.env.get("AMTP_DNS") || undefined,
    timeoutMs: timeoutOf(flags),
    source,
  };
}

function timeoutOf(flags: Map<string, string>): number | undefined {
  const text = flags.get("timeout");
  if (text === undefined) return undefined;
  const seconds = Number(text);
  if (!(seconds > 0 && seconds <= 3600)) {
    throw new UsageError("--timeout takes a number of seconds (up to 3600)");
  }
  return seconds * 1000;
}

function print(ctx: Context, data: unknown): void {
  ctx.out(ctx.args.flags.has("json") ? asJson(data) : readable(data));
}

/** Connect, run `body`, close. */
async function withClient<T>(
  ctx: Context,
  body: (client: AmtpClient) => Promise<T>,
  options?: ConnectOptions,
): Promise<T> {
  const client = await ctx.connect(options);
  try {
    return await body(client);
  } finally {
    client.close();
  }
}

function needToken(ctx: Context, kind: "admin" | "user"): string {
  const token = ctx.state[`${kind}_token`];
  if (!token || !ctx.state[kind]) {
    throw new UsageError(
      `not logged in as ${kind === "admin" ? "an admin" : "a user"}${
        ctx.state[kind] ? ` (${ctx.state[kind]} logged out)` : ""
      }: amtp login --${kind} ${
        kind === "admin" ? "NAME" : "ADDRESS"
      } --key KEY first`,
    );
  }
  return token;
}

async function runSubcommand(
  ctx: Context,
  kind: "admin" | "user",
  table: Record<string, SubcommandSpec>,
): Promise<number> {
  const name = ctx.args.positional[1];
  if (kind === "admin" && name === "module" && !ctx.args.flags.has("help")) {
    return await adminModuleCommand(packageContext(ctx));
  }
  const spec = name ? table[name] : undefined;
  if (!name || ctx.args.flags.has("help")) {
    ctx.out(subcommandList(kind, table, name));
    return 0;
  }
  if (!spec) {
    throw new UsageError(
      `no subcommand "amtp ${kind} ${name}" (amtp ${kind} lists them)`,
    );
  }
  const token = needToken(ctx, kind);
  const params = await buildParams(spec, {
    positional: ctx.args.positional.slice(2),
    flags: ctx.args.flags,
  });
  params[`${kind}_token`] = token;
  return await withClient(ctx, async (client) => {
    const data = await client.call(spec.command, params);
    print(ctx, data ?? { ok: true });
    return 0;
  });
}

/**
 * A yes/no question at the terminal (false without one), answered without
 * blocking: the connection keeps being served while the admin thinks.
 */
async function ask(question: string): Promise<boolean> {
  if (!Deno.stdin.isTerminal()) return false;
  await Deno.stdout.write(new TextEncoder().encode(`${question} [y/N] `));
  const line = new Uint8Array(1024);
  const n = await Deno.stdin.read(line);
  const answer = new TextDecoder().decode(line.subarray(0, n ?? 0)).trim();
  return /^y(es)?$/i.test(answer);
}

/** What the package commands (package_cli.ts) need of a command's context. */
function packageContext(ctx: Context): PackageCliContext {
  return {
    args: ctx.args,
    out: ctx.out,
    adminToken: () => needToken(ctx, "admin"),
    withClient: (body) => withClient(ctx, body),
    confirm: ask,
  };
}

function subcommandList(
  kind: "admin" | "user",
  table: Record<string, SubcommandSpec>,
  only?: string,
): string {
  const names = only && table[only] ? [only] : Object.keys(table);
  const lines = [
    `amtp ${kind} SUBCOMMAND (as ${
      kind === "admin" ? "an admin" : "the logged-in user"
    }):`,
  ];
  for (const name of names) {
    const spec = table[name];
    lines.push(``, `  amtp ${kind} ${subcommandUsage(name, spec)}`);
    lines.push(`      ${spec.help} (${spec.command})`);
    if (only) {
      lines.push(
        ...flagHelp(subcommandFlags(spec)).map((l) => `    ${l}`),
      );
    }
  }
  return lines.join("\n");
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
      : r.type === "NAME"
      ? `${r.name}: ${r.value}`
      : `${r.name}. IN ${r.type} ${r.value}`;
    lines.push(
      `${
        r.status === "ok" ? "ok     " : r.status.toUpperCase().padEnd(7)
      } ${record}`,
    );
    if (r.message) lines.push(`        ${r.message}`);
    if (r.status !== "ok" && r.type !== "NAME") {
      for (const found of r.found) {
        lines.push(`        published now: ${found}`);
      }
    } else if (r.type !== "TXT" && r.type !== "NAME" && r.found.length) {
      lines.push(`        resolves to ${r.found.join(", ")}`);
    }
  }
  const failed = check.records.some((r) => r.status === "failed");
  lines.push(
    "",
    check.ok
      ? "DNS is set up correctly."
      : failed
      ? "DNS could not be checked completely: a lookup FAILED (the name server did not answer); the other changes marked above are needed."
      : "DNS needs the changes marked above.",
  );
  return lines.join("\n");
}

/** `device init|list|approve|revoke`, `verify` and `trust`: the end-to-end keys. */
async function keyCommand(
  client: AmtpClient,
  ctx: Context,
  token: string,
  user: string,
): Promise<string> {
  const args = ctx.args;
  const verb = args.positional[0];
  const address = user.toLowerCase();
  const stateFile = ctx.statePath;
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

async function mailCommand(ctx: Context): Promise<number> {
  const token = needToken(ctx, "user");
  const verb = ctx.args.positional[0];
  const flags = ctx.args.flags;
  if (verb === "watch") {
    const giveUp = Number(flags.get("give-up") ?? 600);
    const count = flags.has("count") ? Number(flags.get("count")) : undefined;
    if (!Number.isFinite(giveUp) || giveUp < 1) {
      throw new UsageError("--give-up takes a number of seconds");
    }
    if (count !== undefined && !(Number.isInteger(count) && count > 0)) {
      throw new UsageError("--count takes a positive number");
    }
    const client = await ctx.connect({
      reconnect: true,
      reconnectTimeoutMs: giveUp * 1000,
    });
    try {
      // Ping well within the server's idle timeout.
      const info = await client.call<{ limits?: { idle_timeout?: number } }>(
        "info",
      );
      const idle = info.limits?.idle_timeout ?? 120;
      client.keepAlive(Math.max(500, Math.min(30_000, idle * 1000 / 3)));
      const m = mail(client, {
        token,
        address: ctx.state.user!,
        stateFile: ctx.statePath,
      });
      return await watchCommand(
        m,
        { count, quiet: flags.has("quiet") },
        (text) => ctx.out(text),
      );
    } finally {
      client.close();
    }
  }
  return await withClient(ctx, async (client) => {
    const m = mail(client, {
      token,
      address: ctx.state.user!,
      stateFile: ctx.statePath,
    });
    const run = {
      send: sendCommand,
      inbox: inboxCommand,
      read: readCommand,
      search: searchCommand,
    }[verb as "send"];
    ctx.out(await run(m, ctx.args));
    return 0;
  });
}

async function keyCommands(ctx: Context): Promise<number> {
  const token = needToken(ctx, "user");
  return await withClient(ctx, async (client) => {
    ctx.out(await keyCommand(client, ctx, token, ctx.state.user!));
    return 0;
  });
}

const KEY_HELP = "a key file, or the NAME of a key made by amtp keygen NAME";

/** Every command of the CLI, in the order of `amtp help`. */
export const COMMANDS: Record<string, Command> = {
  info: {
    summary: "server information (no login)",
    run: (ctx) =>
      withClient(ctx, async (client) => {
        print(ctx, await client.call("info"));
        return 0;
      }),
  },
  ping: {
    summary: "check that the server answers",
    run: (ctx) =>
      withClient(ctx, async (client) => {
        print(ctx, await client.call("ping"));
        return 0;
      }),
  },
  call: {
    args: "'<json>'",
    summary: "send any command (Extended JSON); the session's token is added",
    details: [
      `example: amtp call '{"command":"admin_get_modules"}'`,
      `binary values: {"$binary":{"base64":"...","subType":"00"}}`,
    ],
    run: async (ctx) => {
      const text = ctx.args.positional[1];
      if (!text) throw new UsageError(`usage: amtp call '{"command":"ping"}'`);
      const doc = parseJson(text);
      const command = String(doc.command ?? "");
      for (const kind of ["admin", "user"] as const) {
        if (
          command.startsWith(`${kind}_`) && doc[`${kind}_token`] === undefined
        ) {
          const token = ctx.state[`${kind}_token`];
          if (token) doc[`${kind}_token`] = token;
        }
      }
      if (
        doc.module !== undefined && doc.user_token === undefined &&
        ctx.state.user_token
      ) {
        doc.user_token = ctx.state.user_token;
      }
      return await withClient(ctx, async (client) => {
        const { command: _, ...params } = doc;
        const response = await client.request(command, params);
        ctx.out(asJson(response));
        return response.error === 0 ? 0 : 1;
      });
    },
  },
  keygen: {
    args: "NAME",
    summary:
      "make a login key pair: keys/NAME.key (private) and NAME.pub in the config folder",
    flags: {
      alg: {
        value: "ALG",
        help:
          "ed25519 (default: signs), x25519 or rsa (the server encrypts a challenge)",
      },
      out: {
        value: "PATH",
        help: "write PATH.key and PATH.pub instead (a path with a /)",
      },
      force: { help: "replace an existing key of that name" },
    },
    run: async (ctx) => {
      const algorithms = {
        ed25519: "Ed25519",
        x25519: "HPKE-X25519",
        rsa: "RSA-OAEP-256",
      } as const;
      const alg = (ctx.args.flags.get("alg") ?? "ed25519").toLowerCase();
      if (!Object.hasOwn(algorithms, alg)) {
        throw new UsageError("--alg is ed25519 (default), x25519 or rsa");
      }
      const name = ctx.args.flags.get("out") ?? ctx.args.positional[1];
      if (!name) throw new UsageError("usage: amtp keygen NAME [--alg ALG]");
      const base = keyBase(name);
      if (!ctx.args.flags.has("force")) {
        const taken = await Deno.stat(`${base}.key`).then(
          () => true,
          () => false,
        );
        if (taken) {
          throw new UsageError(
            `${base}.key exists: choose another name, or --force to replace it`,
          );
        }
      }
      await Deno.mkdir(base.replace(/[^/]*$/, "") || ".", {
        recursive: true,
        mode: 0o700,
      });
      const out = await writeKeyPair(
        base,
        algorithms[alg as keyof typeof algorithms],
      );
      ctx.out(
        [
          `private key: ${out.keyFile} (keep it; readable by you only)`,
          `public key:  ${out.pubFile}`,
          `key id:      ${out.keyId}`,
          `name it as --key ${name.includes("/") ? out.keyFile : name}`,
        ].join("\n"),
      );
      return 0;
    },
  },
  login: {
    args: "(--admin NAME | --user ADDRESS) --key KEY",
    summary:
      "log in with a private key (challenge-response; the key stays here)",
    flags: {
      admin: { value: "NAME", help: "as this admin" },
      user: { value: "ADDRESS", help: "as this user" },
      key: { value: "KEY", help: KEY_HELP },
      label: {
        value: "LABEL",
        help: "a name for this session in amtp user sessions (default cli)",
      },
    },
    run: async (ctx) => {
      const admin = ctx.args.flags.get("admin");
      const user = ctx.args.flags.get("user");
      const keyArg = ctx.args.flags.get("key");
      if (!keyArg || (!admin && !user) || (admin && user)) {
        throw new UsageError(
          "usage: amtp login (--admin NAME | --user ADDRESS) --key KEY [--label LABEL]",
        );
      }
      const kind = admin ? "admin" : "user";
      const name = (admin ?? user)!;
      const key = await readPrivateKey(await keyFile(keyArg, "private"));
      const target = await ctx.target();
      return await withClient(ctx, async (client) => {
        // Bound to the host this client connected to: a relaying server's
        // challenge does not open or verify (PROTOCOL.md §7.2).
        const { token, expires } = await client.login(kind, name, key, {
          label: ctx.args.flags.get("label") ?? "cli",
        });
        ctx.state[kind] = name;
        ctx.state[`${kind}_token`] = token;
        ctx.dirty = true;
        ctx.out(
          `logged in ${
            kind === "admin" ? `as the admin "${name}"` : `as ${name}`
          } at ${
            serverText(target)
          }; session saved in ${ctx.statePath} (expires ${
            expires.toISOString().slice(0, 16).replace("T", " ")
          } UTC unless used)`,
        );
        return 0;
      });
    },
  },
  logout: {
    summary: "log out (both the admin and the user, unless one is named)",
    flags: {
      admin: { help: "log out only the admin" },
      user: { help: "log out only the user" },
    },
    run: async (ctx) => {
      const only = ctx.args.flags.has("admin")
        ? ["admin"] as const
        : ctx.args.flags.has("user")
        ? ["user"] as const
        : ["admin", "user"] as const;
      const kinds = only.filter((kind) => ctx.state[`${kind}_token`]);
      if (kinds.length === 0) {
        ctx.out("not logged in");
        return 0;
      }
      await withClient(ctx, async (client) => {
        for (const kind of kinds) {
          await client.request(`${kind}_logout`, {
            [`${kind}_token`]: ctx.state[`${kind}_token`],
          });
          ctx.out(
            `logged out ${
              kind === "admin"
                ? `the admin "${ctx.state[kind]}"`
                : ctx.state[kind]
            }`,
          );
          delete ctx.state[`${kind}_token`];
          ctx.dirty = true;
        }
      });
      return 0;
    },
  },
  whoami: {
    summary: "who is logged in, where, and the session file",
    run: async (ctx) => {
      const target = await ctx.target();
      print(ctx, {
        server: `${serverText(target)} (${target.source})`,
        admin: ctx.state.admin_token ? ctx.state.admin : null,
        user: ctx.state.user_token ? ctx.state.user : null,
        session: ctx.statePath,
      });
      return 0;
    },
  },
  register: {
    args: "ADDRESS --key KEY",
    summary: "register an address yourself, where a domain allows it",
    flags: {
      key: { value: "KEY", help: `your public key: ${KEY_HELP}` },
      name: { value: "NAME", help: "your display name" },
    },
    run: async (ctx) => {
      const address = ctx.args.positional[1];
      if (!address || !ctx.args.flags.get("key")) {
        throw new UsageError("usage: amtp register ADDRESS --key KEY");
      }
      const params = await buildParams(
        {
          command: "user_register",
          positional: ["address"],
          flags: {
            key: { param: "public_key", type: "pubkey", help: "" },
            name: { param: "name", type: "string", help: "" },
          },
          help: "",
        },
        { positional: [address], flags: ctx.args.flags },
      );
      return await withClient(ctx, async (client) => {
        print(ctx, await client.call("user_register", params));
        return 0;
      });
    },
  },
  accept: {
    args: "CODE --key KEY",
    summary:
      "redeem an invitation with your own public key (your account, or a new device of it)",
    flags: {
      key: { value: "KEY", help: `your public key: ${KEY_HELP}` },
      name: { value: "NAME", help: "your display name (a new account)" },
      "key-label": { value: "LABEL", help: "a name for this device's key" },
    },
    run: async (ctx) => {
      const code = ctx.args.positional[1];
      if (!code || !ctx.args.flags.get("key")) {
        throw new UsageError("usage: amtp accept CODE --key KEY");
      }
      const params = await buildParams(
        {
          command: "invitation_accept",
          positional: ["code"],
          flags: {
            key: { param: "public_key", type: "pubkey", help: "" },
            name: { param: "name", type: "string", help: "" },
            "key-label": { param: "key_label", type: "string", help: "" },
          },
          help: "",
        },
        { positional: [code], flags: ctx.args.flags },
      );
      return await withClient(ctx, async (client) => {
        print(ctx, await client.call("invitation_accept", params));
        return 0;
      });
    },
  },
  send: {
    args: "--to A[,B] [--subject TEXT] (--body TEXT | --body-file FILE)",
    summary:
      "send mail: end-to-end encrypted when every recipient has keys, never silently in clear",
    flags: {
      to: { value: "A,B", help: "recipients" },
      cc: { value: "A,B", help: "copy recipients" },
      bcc: {
        value: "A,B",
        help: "blind copy recipients (each gets its own envelope)",
      },
      subject: { value: "TEXT", help: "subject" },
      body: { value: "TEXT", help: "the message" },
      "body-file": { value: "FILE", help: "the message from a file" },
      format: { value: "FORMAT", help: "text (default), markdown or html" },
      attach: { value: "F1,F2", help: "attach files" },
      "reply-to": {
        value: "ID",
        help: "answer one of your messages (an id from amtp inbox)",
      },
      "client-id": {
        value: "ID",
        help:
          "your id for this message: sending again with it sends nothing twice",
      },
      plain: {
        help:
          "send in clear even where encryption was used before (your consent)",
      },
      encrypt: { help: "refuse to send unless it can be encrypted" },
    },
    run: mailCommand,
  },
  inbox: {
    summary:
      "list a folder, newest first (flags: N new, F flagged, @ attachments, E encrypted)",
    flags: {
      folder: {
        value: "FOLDER",
        help: "inbox (default), sent, archive, trash or yours",
      },
      unseen: { help: "only messages not read yet" },
      limit: { value: "N", help: "at most N (default 30, at most 200)" },
      cursor: {
        value: "C",
        help: "the next page, as the previous one printed",
      },
    },
    run: mailCommand,
  },
  read: {
    args: "ID",
    summary:
      "show a message (decrypted and checked when encrypted); marks it seen",
    flags: {
      save: { value: "DIR", help: "save its attachments into DIR" },
    },
    run: mailCommand,
  },
  search: {
    args: "[TEXT]",
    summary: "search your mail (subject, sender, text)",
    flags: {
      from: { value: "ADDRESS", help: "only from this sender" },
      subject: { value: "TEXT", help: "only with TEXT in the subject" },
      folder: { value: "FOLDER", help: "only in this folder" },
    },
    run: mailCommand,
  },
  watch: {
    summary:
      "print messages as they arrive; keeps the session alive, reconnects and catches up",
    flags: {
      count: { value: "N", help: "stop after N new messages" },
      quiet: { help: "print only new messages, not other changes" },
      "give-up": {
        value: "SECONDS",
        help:
          "stop with status 1 after this long unable to reconnect (default 600)",
      },
    },
    run: mailCommand,
  },
  device: {
    args: "init | list | approve ID --code C | revoke ID",
    summary: "this device's end-to-end encryption keys and your device list",
    flags: {
      label: {
        value: "NAME",
        help: "init: a name for this device (default device)",
      },
      "new-master": {
        help: "init: replace your master key (every correspondent is told)",
      },
      code: { value: "CODE", help: "approve: the code the new device shows" },
    },
    details: [
      "init: the first device also creates your master key; a later one waits",
      "      until you approve it on a device holding the master key",
    ],
    run: keyCommands,
  },
  verify: {
    args: "ADDRESS",
    summary: "the safety code to compare with ADDRESS out of band",
    run: keyCommands,
  },
  trust: {
    args: "ADDRESS",
    summary: "confirm ADDRESS's current master key (after comparing the code)",
    flags: { code: { value: "CODE", help: "the safety code you compared" } },
    run: keyCommands,
  },
  dns: {
    args: "[DOMAIN]",
    summary:
      "the DNS records federation needs, checked against live DNS (admin)",
    run: async (ctx) => {
      const token = needToken(ctx, "admin");
      return await withClient(ctx, async (client) => {
        const check = await client.call<DnsCheck>("admin_dns_check", {
          admin_token: token,
          domain: ctx.args.positional[1],
        });
        ctx.out(
          ctx.args.flags.has("json") ? asJson(check) : formatDnsCheck(check),
        );
        return check.ok ? 0 : 1;
      });
    },
  },
  module: {
    args: "init DIR | keygen [NAME] | pack DIR --key KEY",
    summary:
      "for module authors: start a module, make a signing key, pack a signed package",
    flags: MODULE_FLAGS,
    run: (ctx) => moduleCommand(packageContext(ctx)),
  },
  admin: {
    args: "SUBCOMMAND ...",
    summary: "admin commands (amtp admin lists them)",
    subcommands: ADMIN_SUBCOMMANDS,
    run: (ctx) => runSubcommand(ctx, "admin", ADMIN_SUBCOMMANDS),
  },
  user: {
    args: "SUBCOMMAND ...",
    summary: "user commands (amtp user lists them)",
    subcommands: USER_SUBCOMMANDS,
    run: (ctx) => runSubcommand(ctx, "user", USER_SUBCOMMANDS),
  },
  help: {
    args: "[COMMAND]",
    summary: "this help, or a command's",
    run: (ctx) => {
      const name = ctx.args.positional[1];
      ctx.out(name && COMMANDS[name] ? commandHelp(name) : usage());
      return Promise.resolve(name && !COMMANDS[name] ? 2 : 0);
    },
  },
};

function commandUsage(name: string, command: Command): string {
  return `amtp ${name}${command.args ? ` ${command.args}` : ""}`;
}

/** The help of one command: usage, summary, its flags. */
export function commandHelp(name: string): string {
  const command = COMMANDS[name];
  if (command.subcommands) {
    return subcommandList(name as "admin" | "user", command.subcommands);
  }
  return [
    commandUsage(name, command),
    `  ${command.summary}`,
    ...(command.details ?? []).map((d) => `  ${d}`),
    ...(command.flags ? ["", "flags:", ...flagHelp(command.flags)] : []),
    "",
    "and the global flags (amtp help).",
  ].join("\n");
}

/** The list of commands. */
export function usage(): string {
  const rows = Object.entries(COMMANDS).map(([name, c]) => [
    commandUsage(name, c),
    c.summary,
  ]);
  return [
    "amtp - AMTP command-line client",
    "",
    ...rows.map(([left, summary]) => `  ${left}\n      ${summary}`),
    "",
    "global flags:",
    ...flagHelp(GLOBAL_FLAGS),
    "",
    "amtp COMMAND --help shows a command's flags. Sessions and keys live in",
    "~/.config/amtp (or $AMTP_CONFIG); --profile NAME keeps a separate session.",
  ].join("\n");
}

/** The flags a command line may use, from the command (and subcommand) named so far. */
function flagsOf(positional: string[]): Record<string, FlagSpec> {
  const command = COMMANDS[positional[0]];
  if (!command) return {};
  if (command.subcommands) {
    return subcommandFlags(command.subcommands[positional[1]]);
  }
  return command.flags ?? {};
}

/** Run the CLI with arguments; returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  let ctx: Context | undefined;
  try {
    await loadEnvFile(".env").catch(() => {});
    const args = parseArgs(argv, flagsOf);
    const name = args.positional[0];
    const command = name ? COMMANDS[name] : undefined;
    if (!command) {
      if (name) {
        console.error(`no command "${name}"\n\n${usage()}`);
        return 2;
      }
      console.log(usage());
      return 0;
    }
    if (args.flags.has("help") && !command.subcommands) {
      console.log(commandHelp(name!));
      return 0;
    }
    const path = statePath(args.flags.get("profile"));
    const context: Context = {
      args,
      statePath: path,
      state: await loadState(path),
      dirty: false,
      out: (text) => console.log(text),
      target: () => chooseTarget(context),
      async connect(options) {
        const target = await chooseTarget(context);
        return await connectServer(target, { keepAliveMs: 0, ...options });
      },
    };
    ctx = context;
    const code = await command.run(context);
    const { chosen, state } = context;
    if (
      code === 0 && chosen && (state.server !== chosen.server ||
        state.certHash !== chosen.certHash || state.ca !== chosen.ca)
    ) {
      Object.assign(state, chosen);
      context.dirty = true;
    }
    return code;
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
    if (error instanceof NotSentError || error instanceof ConnectError) {
      console.error(error.message);
      return 1;
    }
    console.error(
      `error: ${error instanceof Error ? error.message : String(error)}`,
    );
    return 1;
  } finally {
    if (ctx?.dirty) await saveState(ctx.statePath, ctx.state).catch(() => {});
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
