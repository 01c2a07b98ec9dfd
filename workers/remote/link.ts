/**
 * The server's end of module links: each connection (Unix socket or module
 * port) must log in as one module version with a key an admin registered for
 * exactly that version, within {@link LINK_LOGIN_MS}, before it may send
 * anything else; then it becomes a {@link Channel} carrying the bridge, and
 * the host runs it as one instance of the version (pool.ts).
 *
 * Login is the admins' challenge-response (shared/login/context.ts) with
 * kind `module` and account `name@version`: the server's nonce, bound to the
 * server name the module connected to; the module signs the transcript. An
 * unknown module, version or key gets a challenge all the same and fails at
 * the proof (checked against a decoy key, so it costs the same time), so the
 * answer tells nothing about what is registered.
 *
 * Failed logins are counted and blocked by the users' and admins' guard
 * (core/auth/guard.ts, PROTOCOL.md §7.4) with the account
 * `module:NAME@VERSION`: per IP on the module port, per account only on the
 * Unix socket (every link there comes from `unix`, this host).
 *
 * @module
 */

import { generateKeyPairSync, type KeyObject } from "node:crypto";
import type { GuardState, LoginGuard } from "../../core/auth/guard.ts";
import {
  ServerKeyCache,
  verifySignature,
} from "../../core/auth/server_crypto.ts";
import type { Logger } from "../../core/log/mod.ts";
import {
  ErrorCode,
  type ErrorCodeValue,
  ProtocolError,
} from "../../core/protocol/mod.ts";
import type { Connection } from "../../core/transport/mod.ts";
import {
  decodeDocument,
  type Document,
  encodeDocument,
} from "../../core/wire/mod.ts";
import type { ModuleKeyRecord, ModuleKeyStore } from "../../kv/module_keys.ts";
import {
  CLIENT_NONCE_BYTES,
  loginContext,
  loginTranscript,
  NONCE_BYTES,
  normalizeServerName,
} from "../../shared/login/context.ts";
import type { Channel } from "../isolation/channel.ts";
import {
  LINK_LOGIN_MS,
  type LinkGrant,
  LOGIN_REQUEST,
  LOGIN_VERIFY,
  moduleAccount,
} from "./protocol.ts";

/** Frames handled before the reader lets the event loop run. */
const FRAMES_PER_TURN = 64;
/** Bytes queued for a module that does not read, before its link is dropped. */
const MAX_UNREAD = 64 * 1024 * 1024;

/** Where a logged-in link came from, as admins see it. */
export interface LinkInfo {
  /** `unix`, `webtransport` or `websocket`. */
  transport: string;
  /** The module's address (`unix` on the socket). */
  address: string;
  /** The key it logged in with. */
  keyId: string;
  /** When it logged in. */
  since: Date;
}

/** What the links need of the module host. */
export interface LinkHost {
  /**
   * The grant of a version placed `remote` that may take one more instance;
   * throws MODULE_UNAVAILABLE (not placed remote, disabled, unknown, full).
   */
  admit(name: string, version: string): LinkGrant;
  /** Run a logged-in link as an instance; rejects when it does not start. */
  attach(
    name: string,
    version: string,
    channel: Channel,
    info: LinkInfo,
  ): Promise<void>;
}

/** Options of {@link ModuleLinks}. */
export interface ModuleLinksOptions {
  /** The registered module keys. */
  keys: ModuleKeyStore;
  /** The login guard (shared with user and admin logins). */
  guard: LoginGuard;
  /** The names this server answers to (a login names one). */
  names: readonly string[];
  /** The module host. */
  host: LinkHost;
  /** Milliseconds a link has to log in (default {@link LINK_LOGIN_MS}). */
  loginMs?: number;
  /** Logger. */
  log: Logger;
}

/** A challenge sent, waiting for its proof. */
interface PendingLogin {
  name: string;
  version: string;
  keyId: string;
  /** The login context (undefined: no key can match). */
  context?: Uint8Array;
  /** The registered key, if any. */
  key?: ModuleKeyRecord;
  /** What the guard read for the login. */
  guard: GuardState;
  /** Epoch milliseconds. */
  expires: number;
  /** What the module is answered. */
  challenge: Document;
}

/** A failed login: answered with its code, then the link is closed. */
function refuse(code: ErrorCodeValue, message: string): ProtocolError {
  return new ProtocolError(code, message);
}

/** Accepts module links and logs them in. */
export class ModuleLinks {
  readonly #options: ModuleLinksOptions;
  readonly #names: Set<string>;
  readonly #parsed = new ServerKeyCache();
  /** Checked when no key is registered, so an unknown key costs the same. */
  readonly #decoy: KeyObject = generateKeyPairSync("ed25519").publicKey;
  /** Logged-in links, with the version and key they logged in with. */
  readonly #live = new Map<Connection, string>();

  /** Links for `options.host`. */
  constructor(options: ModuleLinksOptions) {
    this.#options = options;
    this.#names = new Set(options.names.map(normalizeServerName));
  }

  /** Serve a new connection: login, then the bridge. */
  accept(conn: Connection): void {
    this.#serve(conn).catch((error) => {
      this.#options.log.debug("module_link_failed", {
        ip: conn.remoteAddr,
        error: String(error),
      });
      conn.close("link failed");
    });
  }

  /** Close the links of a version that logged in with key `keyId` (it was removed). */
  dropKey(name: string, version: string, keyId: string): void {
    const login = `${moduleAccount(name, version)} ${keyId}`;
    for (const [conn, id] of this.#live) {
      if (id === login) conn.close("module key removed");
    }
  }

  async #serve(conn: Connection): Promise<void> {
    const log = this.#options.log;
    const frames = conn.frames()[Symbol.asyncIterator]();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error("no login in time")),
        this.#options.loginMs ?? LINK_LOGIN_MS,
      );
    });
    expired.catch(() => {});
    const next = async (): Promise<Document> => {
      const { value, done } = await Promise.race([frames.next(), expired]);
      if (done) throw new Error("the module closed the link");
      return decodeDocument(value);
    };
    const answer = (
      request: Document,
      data: unknown,
      error = 0,
      message?: string,
    ) =>
      conn.send(encodeDocument({
        command: request.command,
        requestID: request.requestID,
        error,
        ...(message ? { message } : {}),
        ...(data === undefined ? {} : { data }),
      }));
    let login: { name: string; version: string; keyId: string };
    let grant: LinkGrant;
    let current: Document = {};
    try {
      current = await next();
      const pending = await this.#challenge(current, conn);
      await answer(current, pending.challenge);
      current = await next();
      login = await this.#verify(current, pending);
      grant = this.#options.host.admit(login.name, login.version);
      await answer(current, grant);
    } catch (error) {
      clearTimeout(timer);
      const known = error instanceof ProtocolError;
      if (known) {
        await answer(current, error.data, error.code, error.message);
      }
      log.info("module_login_failed", {
        ip: conn.remoteAddr,
        transport: conn.transport,
        error: known ? error.message : String(error),
      });
      // The answer gets a moment to leave before the link closes.
      setTimeout(() => conn.close("login failed"), 50);
      return;
    }
    clearTimeout(timer);
    this.#live.set(
      conn,
      `${moduleAccount(login.name, login.version)} ${login.keyId}`,
    );
    conn.closed.then(() => this.#live.delete(conn));
    log.info("module_link", {
      module: login.name,
      version: login.version,
      signer: login.keyId,
      ip: conn.remoteAddr,
      transport: conn.transport,
    });
    await this.#options.host.attach(
      login.name,
      login.version,
      linkChannel(conn, frames, log),
      {
        transport: conn.transport,
        address: conn.remoteAddr,
        keyId: login.keyId,
        since: new Date(),
      },
    );
  }

  /**
   * The first request: a challenge for the version and key it names, unless
   * the guard blocks the version from this source (LOGIN_BLOCKED), whether
   * or not the key is registered.
   */
  async #challenge(
    request: Document,
    conn: Connection,
  ): Promise<PendingLogin> {
    if (request.command !== LOGIN_REQUEST) {
      throw refuse(
        ErrorCode.NOT_LOGGED_IN,
        `a module link starts with ${LOGIN_REQUEST}`,
      );
    }
    const text = (field: string, max: number) => {
      const value = request[field];
      if (typeof value !== "string" || value.length < 1 || value.length > max) {
        throw refuse(
          ErrorCode.INVALID_PARAMETER,
          `parameter "${field}" must be a string of 1 to ${max} characters`,
        );
      }
      return value;
    };
    const name = text("module", 64);
    const version = text("version", 32);
    const keyId = text("key_id", 64);
    const server = normalizeServerName(text("server", 255));
    if (!this.#names.has(server)) {
      throw refuse(
        ErrorCode.WRONG_SERVER,
        `this server is ${[...this.#names][0]}, not "${server}"`,
      );
    }
    const guard = await this.#options.guard.check(
      `module:${moduleAccount(name, version)}`,
      conn.remoteAddr,
      { perSource: conn.transport !== "unix" },
    );
    const nonce = crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
    const key = await this.#options.keys.get(name, version, keyId);
    let context: Uint8Array | undefined;
    try {
      context = loginContext({
        algorithm: "Ed25519",
        kind: "module",
        account: moduleAccount(name, version),
        keyId,
        server,
        nonce,
      });
    } catch {
      // A name or key id that is not printable: no key can match it.
    }
    return {
      name,
      version,
      keyId,
      context,
      key,
      guard,
      expires: Date.now() + LINK_LOGIN_MS,
      challenge: {
        algorithm: "Ed25519",
        key_id: keyId,
        nonce,
        expires_in: LINK_LOGIN_MS / 1000,
      },
    };
  }

  /**
   * The second request: the signature of the transcript. The guard is asked
   * again (blocks may have begun since); a wrong proof is counted, a right
   * one clears the source's failures for the version.
   */
  async #verify(
    request: Document,
    pending: PendingLogin,
  ): Promise<{ name: string; version: string; keyId: string }> {
    if (request.command !== LOGIN_VERIFY) {
      throw refuse(ErrorCode.NOT_LOGGED_IN, `expected ${LOGIN_VERIFY}`);
    }
    if (Date.now() > pending.expires) {
      throw refuse(ErrorCode.CHALLENGE_EXPIRED, "the challenge has expired");
    }
    const guard = this.#options.guard;
    const state = await guard.recheck(pending.guard);
    const { signature, client_nonce: clientNonce } = request;
    const verifyKey = pending.key
      ? (this.#parsed.get("Ed25519", pending.key.public_key) as {
        key: KeyObject;
      }).key
      : this.#decoy;
    const signed = signature instanceof Uint8Array &&
      clientNonce instanceof Uint8Array &&
      clientNonce.length >= CLIENT_NONCE_BYTES.min &&
      clientNonce.length <= CLIENT_NONCE_BYTES.max &&
      verifySignature(
        verifyKey,
        loginTranscript(
          pending.context ?? new Uint8Array(NONCE_BYTES),
          clientNonce,
        ),
        signature,
      );
    const proves = signed && pending.key !== undefined &&
      pending.context !== undefined;
    if (!proves) {
      await guard.failed(state);
      throw refuse(
        ErrorCode.LOGIN_FAILED,
        `login failed: no key ${pending.keyId} is registered for module ${pending.name} ${pending.version}, or the signature does not prove it`,
      );
    }
    await guard.succeeded(state);
    return {
      name: pending.name,
      version: pending.version,
      keyId: pending.keyId,
    };
  }
}

/**
 * A logged-in link as a bridge channel: what the module sends is read on
 * (at most {@link FRAMES_PER_TURN} frames before the event loop runs; the
 * transport's flow control holds a faster module back), what the core sends
 * is written with the bytes not yet taken counted, and a module that lets
 * {@link MAX_UNREAD} of them pile up is dropped.
 */
function linkChannel(
  conn: Connection,
  frames: AsyncIterator<Uint8Array>,
  log: Logger,
): Channel {
  let messageHandler: ((doc: Document) => void) | undefined;
  let exitHandler: ((reason: string) => void) | undefined;
  let stopped = false;
  let unread = 0;
  const exit = (reason: string) => {
    if (stopped) return;
    stopped = true;
    conn.close(reason);
    exitHandler?.(reason);
  };
  conn.closed.then(() => exit("the link closed"));
  (async () => {
    let count = 0;
    try {
      while (!stopped) {
        const { value, done } = await frames.next();
        if (done || stopped) break;
        messageHandler?.(decodeDocument(value));
        if (++count % FRAMES_PER_TURN === 0) {
          await new Promise((resolve) => setTimeout(resolve, 0));
        }
      }
      exit("the link closed");
    } catch (error) {
      log.warn("module_output_invalid", { error: String(error) });
      exit(`sent unreadable frames: ${String(error).slice(0, 200)}`);
    }
  })();
  return {
    killable: true,
    send(doc) {
      if (stopped) return;
      const frame = encodeDocument(doc);
      unread += frame.length;
      if (unread > MAX_UNREAD) {
        exit(`does not read what the server sends (${unread} bytes waiting)`);
        return;
      }
      conn.send(frame).then(() => unread -= frame.length);
    },
    onMessage(handler) {
      messageHandler = handler;
    },
    onExit(handler) {
      exitHandler = handler;
    },
    stop() {
      stopped = true;
      conn.close("module stopped");
    },
  };
}
