/**
 * Where the CLI keeps what it keeps, and how it finds a server.
 *
 * Everything lives in the user's config folder, never in the working
 * folder: `$AMTP_CONFIG`, else `$XDG_CONFIG_HOME/amtp`, else
 * `~/.config/amtp` (owner-only):
 *
 * ```
 * session.json                  the default profile: server, tokens
 * profiles/NAME/session.json    another profile (--profile NAME or $AMTP_PROFILE)
 * keys/NAME.key, keys/NAME.pub  login keys made by `amtp keygen NAME`
 * ```
 *
 * A profile's end-to-end keys (`device-ADDRESS.json`) and the keys of its
 * correspondents (`trust.json`) sit beside its session file.
 * `$AMTP_CLI_STATE` names a session file directly.
 *
 * @module
 */

import { loadEnvFile } from "../shared/env_file.ts";
import { UsageError } from "./cli_args.ts";

/** What the CLI remembers between runs (one profile). */
export interface State {
  /** `host:port` given with `--server` (a local server is found afresh each time). */
  server?: string;
  /** The certificate hash pinned for that server. */
  certHash?: string;
  /** A CA file for that server. */
  ca?: string;
  /** The admin logged in. */
  admin?: string;
  /** Its token. */
  admin_token?: string;
  /** The user logged in. */
  user?: string;
  /** Its token. */
  user_token?: string;
}

/** The config folder. */
export function configDir(): string {
  const explicit = Deno.env.get("AMTP_CONFIG");
  if (explicit) return explicit.replace(/\/+$/, "");
  const xdg = Deno.env.get("XDG_CONFIG_HOME");
  if (xdg) return `${xdg.replace(/\/+$/, "")}/amtp`;
  const home = Deno.env.get("HOME");
  if (!home) {
    throw new UsageError(
      "no config folder: set HOME, XDG_CONFIG_HOME or AMTP_CONFIG",
    );
  }
  return `${home}/.config/amtp`;
}

/** The session file of a profile (`--profile`, `$AMTP_PROFILE`), or `$AMTP_CLI_STATE`. */
export function statePath(profile?: string): string {
  const explicit = Deno.env.get("AMTP_CLI_STATE");
  const name = profile ?? Deno.env.get("AMTP_PROFILE");
  if (explicit && !profile) return explicit;
  if (!name || name === "default") return `${configDir()}/session.json`;
  if (!/^[a-zA-Z0-9._-]{1,64}$/.test(name) || name.startsWith(".")) {
    throw new UsageError(
      `profile "${name}": 1 to 64 letters, digits, . _ - (not starting with .)`,
    );
  }
  return `${configDir()}/profiles/${name}/session.json`;
}

/** The folder of a file path ("./" for a bare name). */
export function folderOf(path: string): string {
  return path.replace(/[^/]*$/, "") || "./";
}

/** Read a profile's state ({} when there is none). */
export async function loadState(path: string): Promise<State> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as State;
  } catch {
    return {};
  }
}

/** Create a folder owner-only (and make an existing one so). */
export async function privateFolder(dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await Deno.chmod(dir, 0o700).catch(() => {});
}

/** Save a profile's state, owner-only. */
export async function saveState(path: string, state: State): Promise<void> {
  await privateFolder(folderOf(path));
  // Deno applies `mode` to an existing file too: tokens never stay readable by others.
  await Deno.writeTextFile(path, JSON.stringify(state, null, 2) + "\n", {
    mode: 0o600,
  });
}

/** Where `amtp keygen NAME` writes: the config folder's `keys/`, or the path given. */
export function keyBase(name: string): string {
  if (name.includes("/")) return name.replace(/\.(key|pub)$/, "");
  return `${configDir()}/keys/${name.replace(/\.(key|pub)$/, "")}`;
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * A path the user typed, from where the user typed it: `deno task` runs in
 * the server's folder and says where the user was in `INIT_CWD`.
 */
export function userPath(path: string): string {
  if (path.startsWith("/")) return path;
  const init = Deno.env.get("INIT_CWD");
  const base = init && Deno.cwd() === ROOT ? init : Deno.cwd();
  return `${base}/${path}`;
}

/**
 * The file a `--key` argument names: the path as given when it exists, else
 * for a bare name the key of that name in the config folder (`alice`,
 * `alice.key` and `alice.pub` all name `keys/alice.*`).
 */
export async function keyFile(
  given: string,
  kind: "private" | "public",
): Promise<string> {
  if (await exists(userPath(given))) return userPath(given);
  const ext = kind === "private" ? "key" : "pub";
  if (!given.includes("/")) {
    const inConfig = `${keyBase(given)}.${ext}`;
    if (await exists(inConfig)) return inConfig;
    throw new UsageError(
      `no key file ${userPath(given)} nor ${inConfig} (amtp keygen ${
        given.replace(/\.(key|pub)$/, "")
      } makes one)`,
    );
  }
  throw new UsageError(`no key file ${given}`);
}

/** A server this CLI may talk to, and how it was found. */
export interface ServerChoice {
  /** Host name or address as the user knows it. */
  host: string;
  /** Port. */
  port: number;
  /** How it was chosen, for messages. */
  source: string;
}

/** Split `host:port` (`[v6]:port`); the port defaults to 4433. */
export function parseServer(text: string, source: string): ServerChoice {
  const v6 = text.match(/^\[([^\]]+)\](?::(\d+))?$/);
  const plain = text.match(/^([^:[\]]+)(?::(\d+))?$/);
  const match = v6 ?? plain;
  const port = Number(match?.[2] ?? 4433);
  if (!match || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new UsageError(`${source}: "${text}" is not HOST[:PORT]`);
  }
  return { host: match[1], port, source };
}

/** The text form of a server choice. */
export function serverText(choice: { host: string; port: number }): string {
  return `${
    choice.host.includes(":") ? `[${choice.host}]` : choice.host
  }:${choice.port}`;
}

/** The data folder of a local server: `$AMTP_DATA` (also from ./.env), else ./data. */
export function localDataDir(): string {
  return Deno.env.get("AMTP_DATA") ?? "./data";
}

/**
 * A server on this machine: the address the server in the data folder
 * wrote when it started (`listening.json`), else `AMTP_HOST`/`AMTP_PORT`
 * from the environment or ./.env; undefined when none says anything.
 */
export async function localServer(): Promise<ServerChoice | undefined> {
  await loadEnvFile(".env").catch(() => {});
  const data = localDataDir();
  try {
    const written = JSON.parse(
      await Deno.readTextFile(`${data}/listening.json`),
    ) as { host: string; port: number };
    if (Number.isInteger(written.port) && written.port > 0) {
      return {
        host: reachable(written.host),
        port: written.port,
        source: `the local server (${data}/listening.json)`,
      };
    }
  } catch {
    // No server has run from this folder, or it stopped.
  }
  const port = Deno.env.get("AMTP_PORT");
  const host = Deno.env.get("AMTP_HOST");
  if ((port && port !== "0") || host) {
    return {
      host: reachable(host ?? "0.0.0.0"),
      port: port && port !== "0" ? Number(port) : 4433,
      source: "AMTP_HOST/AMTP_PORT",
    };
  }
  return undefined;
}

/** A listen address as a client reaches it (the wildcard: this machine). */
function reachable(host: string): string {
  return host === "0.0.0.0" || host === "::" || host === ""
    ? "localhost"
    : host;
}
