/**
 * `deno task module-run DIR --server HOST:PORT --key FILE`: run a module
 * folder as a remote module. The same folder runs unchanged as a Worker, a
 * process or remote: here its code is checked as the server checks it
 * (isolation/imports.ts) and runs in a capped subprocess with its manifest's
 * permissions (isolation/process.ts); this process holds the link to the
 * server, logs in with the module's own Ed25519 key, and relays the bridge's
 * frames both ways. Storage goes through the core (the module's data stays
 * on the server).
 *
 * The server is reached over WebTransport (WebSocket when that fails, or
 * with `--ws`) on its module port, its certificate pinned (`--cert-hash`) or verified against a CA
 * (`--ca`, else the system's roots); or, on the same host, over the Unix
 * socket (`--socket PATH`). A lost link, or a module process that ends, is
 * followed by a new login and a fresh module process, with backoff; a login
 * the server refuses (an unknown key, the wrong server) ends the run (exit
 * code 2), but one it blocks for a while (too many failed logins from here)
 * is tried again after the `retry_after` it was told.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Logger } from "../../core/log/mod.ts";
import {
  decodeDocument,
  type Document,
  encodeDocument,
  FrameDecoder,
} from "../../core/wire/mod.ts";
import { ErrorCode, errorName } from "../../shared/errors.ts";
import {
  answerChallenge,
  type LoginChallenge,
} from "../../shared/login/answer.ts";
import { readPrivateKey } from "../../shared/login/keyfile.ts";
import { normalizeServerName } from "../../shared/login/context.ts";
import { openServerTransport } from "../../client/connect.ts";
import { userPath } from "../../client/cli_config.ts";
import type { ClientTransport } from "../../client/transport.ts";
import { ImportPolicy, type ModuleImports } from "../isolation/imports.ts";
import { startProcess } from "../isolation/process.ts";
import { loadManifest, type Manifest } from "../manifest.ts";
import { SendQueue } from "./send_queue.ts";
import {
  LINK_MAX_FRAME,
  type LinkGrant,
  LOGIN_REQUEST,
  LOGIN_VERIFY,
  moduleAccount,
} from "./protocol.ts";

const USAGE =
  `usage: deno task module-run DIR (--server HOST:PORT [--cert-hash HEX | --ca FILE] [--ws] [--bind ADDRESS] | --socket PATH) --key FILE

  DIR              the module folder (module.json and its code)
  --server H:P     the server's module port (AMTP_MODULE_PORT)
  --socket PATH    the server's Unix socket (AMTP_MODULE_SOCKET), on this host
  --key FILE       the module's Ed25519 private key (PEM; amtp keygen makes one),
                   whose public key an admin registered for this name and version
  --cert-hash HEX  pin the server's certificate by its SHA-256 (a self-signed server)
  --ca FILE        trust the CA certificates (PEM) in FILE for the server
  --ws             WebSocket (TLS over TCP) only (without it: WebTransport,
                   WebSocket when WebTransport cannot be reached)
  --bind ADDRESS   connect from this local address (WebSocket)
  --retry-ms N     first delay before logging in again after a lost link (default 500)`;

/**
 * Bytes from the module process queued for the link, beyond which its output
 * is not read until the link takes them (plus at most one frame).
 */
export const MAX_QUEUED = 4 * 1024 * 1024;

/** The server refused the login: trying again would not help. */
export class LoginRefusedError extends Error {
  /** Stable error code. */
  readonly code = "module_login_refused";
  /** The protocol code the server answered. */
  readonly error: number;
  /** Seconds to wait before trying again (LOGIN_BLOCKED), if told. */
  readonly retryAfter?: number;

  /** The server's refusal. */
  constructor(error: number, message: string, retryAfter?: number) {
    super(`${errorName(error)} (${error}): ${message}`);
    this.name = "LoginRefusedError";
    this.error = error;
    this.retryAfter = retryAfter;
  }
}

/** Where the server is and how to trust it. */
export interface LinkTarget {
  /** `host:port` of the module port. */
  server?: string;
  /** Path of the Unix socket. */
  socket?: string;
  /** Pinned certificate hash. */
  certHash?: string;
  /** CA certificates. */
  caCerts?: string[];
  /** WebSocket instead of WebTransport. */
  websocket?: boolean;
  /** Local address to connect from (WebSocket). */
  bind?: string;
}

/** A Unix socket as a client transport. */
async function openUnix(path: string): Promise<ClientTransport> {
  const conn = await Deno.connect({ transport: "unix", path });
  const writer = conn.writable.getWriter();
  let closed = false;
  return {
    send: (frame) => writer.write(frame),
    async *frames() {
      const decoder = new FrameDecoder(LINK_MAX_FRAME);
      try {
        for await (const chunk of conn.readable) {
          yield* decoder.pushOrThrow(chunk);
        }
      } catch (error) {
        if (!closed) throw error;
      }
    },
    close() {
      if (closed) return;
      closed = true;
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    },
  };
}

/** The name of the server a login is bound to (the host dialled; `localhost` over the socket). */
function serverName(target: LinkTarget): string {
  if (!target.server) return "localhost";
  return normalizeServerName(target.server.replace(/:\d+$/, ""));
}

/**
 * Open the link (not yet logged in): WebTransport, and WebSocket when
 * WebTransport cannot be reached (UDP blocked on the way) or was not asked
 * for; over the socket on the same host.
 */
export async function openLink(
  target: LinkTarget,
  log?: Logger,
): Promise<ClientTransport> {
  if (target.socket) return await openUnix(target.socket);
  const at = target.server!.lastIndexOf(":");
  const open = (transport: "webtransport" | "websocket") =>
    openServerTransport({
      host: target.server!.slice(0, at).replace(/^\[|\]$/g, ""),
      port: Number(target.server!.slice(at + 1)),
      transport,
      certHash: target.certHash,
      caCerts: target.caCerts,
    }, { maxFrame: LINK_MAX_FRAME, localAddress: target.bind });
  if (target.websocket || target.bind) return await open("websocket");
  try {
    return await open("webtransport");
  } catch (error) {
    log?.warn("module_link_fallback", {
      error: (error as Error).message,
      transport: "websocket",
    });
    return await open("websocket");
  }
}

/**
 * Log in on an open link as `manifest`'s version with `keyFile`'s key;
 * resolves with what the server grants.
 *
 * @throws {LoginRefusedError} when the server refuses
 */
export async function login(
  link: ClientTransport,
  frames: AsyncIterator<Uint8Array>,
  manifest: Pick<Manifest, "name" | "version">,
  key: Awaited<ReturnType<typeof readPrivateKey>>,
  server: string,
): Promise<LinkGrant> {
  const ask = async (request: Document): Promise<Document> => {
    await link.send(encodeDocument(request));
    const { value, done } = await frames.next();
    if (done) throw new Error("the server closed the link during login");
    const answer = decodeDocument(value);
    if (answer.error !== ErrorCode.OK) {
      const retry = (answer.data as Document | undefined)?.retry_after;
      throw new LoginRefusedError(
        Number(answer.error),
        String(answer.message ?? ""),
        typeof retry === "number" && retry >= 0 ? retry : undefined,
      );
    }
    return (answer.data ?? {}) as Document;
  };
  const challenge = await ask({
    command: LOGIN_REQUEST,
    requestID: 1,
    module: manifest.name,
    version: manifest.version,
    key_id: key.keyId,
    server,
  });
  const proof = await answerChallenge(
    { algorithm: key.algorithm, privateKey: key.privateKey, keyId: key.keyId },
    challenge as unknown as LoginChallenge,
    {
      kind: "module",
      account: moduleAccount(manifest.name, manifest.version),
      server,
    },
  );
  return await ask({
    command: LOGIN_VERIFY,
    requestID: 2,
    ...proof,
  }) as unknown as LinkGrant;
}

/**
 * Run the module's code in a capped subprocess and relay the bridge between
 * it and the link until either ends; resolves with why.
 */
async function relay(
  link: ClientTransport,
  frames: AsyncIterator<Uint8Array>,
  manifest: Manifest,
  imports: ModuleImports,
  log: Logger,
): Promise<string> {
  const child = await startProcess(manifest, { imports, log });
  // In order, one after the other; over the bound the module process's
  // output is not read until the link has taken enough (its pipe fills, its
  // writes wait): a slow link slows the module down, memory stays bounded.
  const queue = new SendQueue((frame) => link.send(frame), {
    maxBytes: MAX_QUEUED,
    onError: () => link.close(),
  });
  child.onMessage((doc) => queue.push(encodeDocument(doc)));
  const exited = new Promise<string>((resolve) =>
    child.onExit((reason) => resolve(`the module process ended: ${reason}`))
  );
  const closed = (async () => {
    try {
      while (true) {
        const { value, done } = await frames.next();
        if (done) return "the server closed the link";
        child.send(decodeDocument(value));
      }
    } catch (error) {
      return `the link broke: ${(error as Error).message}`;
    }
  })();
  const why = await Promise.race([exited, closed]);
  child.stop();
  link.close();
  return why;
}

/** Run `dir` as a remote module until stopped; a refused login throws. */
export async function runRemoteModule(
  dir: string,
  options: LinkTarget & { keyFile: string; retryMs?: number; log?: Logger },
): Promise<never> {
  const log = options.log ?? new Logger({ level: "info" });
  const manifest = await loadManifest(dir);
  const key = await readPrivateKey(options.keyFile);
  if (key.algorithm !== "Ed25519") {
    throw new Error(
      `${options.keyFile} holds an ${key.algorithm} key: a module logs in with Ed25519`,
    );
  }
  const policy = await ImportPolicy.create(
    new URL("../../deno.json", import.meta.url).pathname,
  );
  const imports = await policy.check(manifest);
  await policy.fetchPackages(manifest, imports);
  const first = options.retryMs ?? 500;
  let delay = first;
  const where = options.socket ?? options.server;
  while (true) {
    let link: ClientTransport | undefined;
    try {
      link = await openLink(options, log);
      const frames = link.frames()[Symbol.asyncIterator]();
      const grant = await login(
        link,
        frames,
        manifest,
        key,
        serverName(options),
      );
      log.info("module_linked", {
        module: grant.module,
        version: grant.version,
        server: where,
        commands: grant.commands.join(","),
        services: grant.services.join(","),
      });
      delay = first;
      const why = await relay(link, frames, manifest, imports, log);
      log.warn("module_link_ended", { reason: why });
    } catch (error) {
      link?.close();
      const refused = error instanceof LoginRefusedError ? error : undefined;
      if (
        refused && refused.error !== ErrorCode.MODULE_UNAVAILABLE &&
        refused.error !== ErrorCode.LOGIN_BLOCKED
      ) throw error;
      // Blocked: not before the server said (at most an hour).
      const wait = Math.max(
        delay,
        Math.min(3_600_000, (refused?.retryAfter ?? 0) * 1000),
      );
      log.warn("module_link_failed", {
        server: where,
        error: (error as Error).message,
        retry_ms: wait,
      });
      await new Promise((resolve) => setTimeout(resolve, wait));
      delay = Math.min(10_000, delay * 2);
      continue;
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(10_000, delay * 2);
  }
}

if (import.meta.main) {
  let parsed;
  try {
    parsed = parseArgs({
      args: Deno.args,
      allowPositionals: true,
      options: {
        server: { type: "string" },
        socket: { type: "string" },
        key: { type: "string" },
        "cert-hash": { type: "string" },
        ca: { type: "string" },
        ws: { type: "boolean" },
        bind: { type: "string" },
        "retry-ms": { type: "string" },
        help: { type: "boolean" },
      },
    });
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    Deno.exit(64);
  }
  const { values, positionals } = parsed;
  if (
    values.help || positionals.length !== 1 || !values.key ||
    Boolean(values.server) === Boolean(values.socket) ||
    (values.server && !/^.+:\d{1,5}$/.test(values.server))
  ) {
    console.error(USAGE);
    Deno.exit(values.help ? 0 : 64);
  }
  try {
    // Paths as the user typed them, from where they typed them.
    const dir = await Deno.realPath(userPath(positionals[0]));
    await runRemoteModule(dir, {
      server: values.server,
      socket: values.socket && userPath(values.socket),
      keyFile: userPath(values.key),
      certHash: values["cert-hash"],
      caCerts: values.ca
        ? (await Deno.readTextFile(userPath(values.ca))).match(
          /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g,
        ) ?? []
        : undefined,
      websocket: values.ws,
      bind: values.bind,
      retryMs: values["retry-ms"] ? Number(values["retry-ms"]) : undefined,
    });
  } catch (error) {
    console.error(`module-run: ${(error as Error).message}`);
    Deno.exit(2);
  }
}
