/**
 * What the suite creates on the server under test, and undoes: one domain
 * of its own (`conformance-<random>.test`), its users and aliases, an admin,
 * messages; sessions to the server over both transports.
 *
 * @module
 */

import {
  generateLoginKeyPair,
  importLoginPrivateKey,
  keyId,
  type LoginAlgorithm,
} from "../shared/login/algorithms.ts";
import type { PrivateKeyFile } from "../shared/login/keyfile.ts";
import { connectServer } from "../client/connect.ts";
import {
  type AmtpClient,
  AmtpError,
  type Push,
  type Response,
} from "../client/mod.ts";
import type { Target } from "./raw.ts";
import { expect } from "./harness.ts";

/** A login key held by the suite. */
export interface Key {
  /** Algorithm. */
  algorithm: LoginAlgorithm;
  /** Private key. */
  privateKey: CryptoKey;
  /** SPKI. */
  publicKey: Uint8Array;
  /** Key id. */
  keyId: string;
}

/** A logged-in user session. */
export interface UserSession {
  /** The user. */
  address: string;
  /** Its client. */
  client: AmtpClient;
  /** Its token. */
  token: string;
  /** Pushes received on this session. */
  pushes: Push[];
  /** A user command (the token added); the whole response. */
  request(command: string, params?: Record<string, unknown>): Promise<Response>;
  /** A messages command; `data` or throws. */
  mail<T = Record<string, unknown>>(
    command: string,
    params?: Record<string, unknown>,
  ): Promise<T>;
  /** A user command; `data` or throws. */
  call<T = Record<string, unknown>>(
    command: string,
    params?: Record<string, unknown>,
  ): Promise<T>;
}

/** Options of the suite. */
export interface WorldOptions {
  /** The server. */
  target: Target & { nameServer?: string };
  /** The admin's name. */
  adminName: string;
  /** The admin's key. */
  adminKey: PrivateKeyFile;
}

/** Make a login key. */
export async function makeKey(algorithm: LoginAlgorithm): Promise<Key> {
  const pair = await generateLoginKeyPair(algorithm);
  const loaded = await importLoginPrivateKey(pair.privateKey);
  return {
    algorithm,
    privateKey: loaded.key,
    publicKey: pair.publicKey,
    keyId: await keyId(pair.publicKey),
  };
}

/** The server under test and what the suite made on it. */
export class World {
  readonly options: WorldOptions;
  /** The suite's own domain. */
  readonly domain: string;
  readonly #clients: AmtpClient[] = [];
  readonly #admins: string[] = [];
  #adminClient?: AmtpClient;
  #source = "";
  #adminToken?: string;
  /** `info` of the server. */
  info!: Record<string, unknown>;
  /** Wrong login answers the suite gave on purpose (counted against its source). */
  failedLogins = 0;

  /** A world on the server of `options`. */
  constructor(options: WorldOptions) {
    this.options = options;
    const tag = Array.from(
      crypto.getRandomValues(new Uint8Array(4)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    this.domain = `conformance-${tag}.test`;
  }

  /**
   * Connect (WebTransport unless asked); closed by {@link cleanup}. The
   * session pings often enough for the server's idle timeout unless
   * `silent`.
   */
  async connect(
    transport: "webtransport" | "websocket" = "webtransport",
    options: { silent?: boolean } = {},
  ): Promise<AmtpClient> {
    const client = await connectServer(
      { ...this.options.target, transport },
      { keepAliveMs: 0 },
    );
    if (!options.silent) client.keepAlive(this.#pingEvery());
    this.#clients.push(client);
    return client;
  }

  #pingEvery(): number {
    const idle = (this.info?.limits as { idle_timeout?: number } | undefined)
      ?.idle_timeout ?? 120;
    return Math.max(250, Math.min(30_000, idle * 1000 / 3));
  }

  /** Log the admin in, read `info`, create the suite's domain. */
  async start(): Promise<void> {
    this.#adminClient = await this.connect("websocket");
    this.info = await this.#adminClient.call("info");
    this.#adminClient.keepAlive(this.#pingEvery());
    const { token } = await this.#adminClient.login(
      "admin",
      this.options.adminName,
      this.options.adminKey,
      { label: "conformance" },
    );
    this.#adminToken = token;
    await this.admin("admin_add_domain", {
      domain: this.domain,
      description: "made by the AMTP conformance suite; deleted at its end",
    });
    // The source the server sees for the suite (its failure records).
    const probe = await this.session(await this.addUser("source-probe"));
    const { sessions } = await probe.call<
      { sessions: { ip: string; current: boolean }[] }
    >("user_get_sessions");
    this.#source = sessions.find((x) => x.current)?.ip ?? "";
    await probe.call("user_logout");
  }

  /** The admin's token. */
  get adminToken(): string {
    return this.#adminToken!;
  }

  /** An admin command; `data` or throws {@link AmtpError}. */
  admin<T = Record<string, unknown>>(
    command: string,
    params: Record<string, unknown> = {},
  ): Promise<T> {
    return this.#adminClient!.call<T>(command, {
      admin_token: this.#adminToken,
      ...params,
    });
  }

  /** An admin command; the whole response. */
  adminRequest(
    command: string,
    params: Record<string, unknown> = {},
  ): Promise<Response> {
    return this.#adminClient!.request(command, {
      admin_token: this.#adminToken,
      ...params,
    });
  }

  /** An address of the suite's domain. */
  address(local: string): string {
    return `${local}@${this.domain}`;
  }

  /** Create a user with a fresh key of `algorithm`. */
  async addUser(
    local: string,
    algorithm: LoginAlgorithm = "Ed25519",
  ): Promise<{ address: string; key: Key }> {
    const key = await makeKey(algorithm);
    const address = this.address(local);
    await this.admin("admin_add_user", {
      address,
      algorithm: key.algorithm,
      public_key: key.publicKey,
    });
    return { address, key };
  }

  /** Remember an admin the suite created, to delete it at the end. */
  madeAdmin(name: string): void {
    this.#admins.push(name);
  }

  /** Log a user in on a new session (or `client`). */
  async session(
    user: { address: string; key: Key },
    options: {
      transport?: "webtransport" | "websocket";
      client?: AmtpClient;
    } = {},
  ): Promise<UserSession> {
    const client = options.client ?? await this.connect(options.transport);
    const { token } = await client.login("user", user.address, user.key);
    const pushes: Push[] = [];
    client.onPush((push) => pushes.push(push));
    const request = (command: string, params: Record<string, unknown> = {}) =>
      client.request(command, { user_token: token, ...params });
    return {
      address: user.address,
      client,
      token,
      pushes,
      request,
      call: <T>(command: string, params: Record<string, unknown> = {}) =>
        client.call<T>(command, { user_token: token, ...params }),
      mail: <T>(command: string, params: Record<string, unknown> = {}) =>
        client.call<T>(command, {
          module: "messages",
          user_token: token,
          ...params,
        }),
    };
  }

  /** Whether the server offers a module. */
  hasModule(name: string): boolean {
    return ((this.info.modules ?? []) as { name: string }[]).some((m) =>
      m.name === name
    );
  }

  /** Delete what the suite made; returns what it did. */
  async cleanup(
    mailboxes: UserSession[],
  ): Promise<string[]> {
    const done: string[] = [];
    if (!this.#adminClient) return done;
    // Mail first: deleting a user does not empty its mailbox in every server.
    let messages = 0;
    for (const s of mailboxes) {
      try {
        const { folders } = await s.mail<
          { folders: { name: string; system: boolean }[] }
        >(
          "folders",
        );
        for (const folder of folders) {
          while (true) {
            const page = await s.mail<{ messages: { id: string }[] }>("list", {
              folder: folder.name,
              limit: 50,
            });
            if (page.messages.length === 0) break;
            await s.mail("delete", {
              ids: page.messages.map((m) => m.id),
              permanent: true,
            });
            messages += page.messages.length;
          }
          if (!folder.system) {
            await s.mail("folder_delete", { folder: folder.name });
          }
        }
      } catch {
        // The session may be gone (logged out by a check): nothing to do.
      }
    }
    if (messages) done.push(`${messages} message copies deleted`);
    for (const name of this.#admins) {
      try {
        await this.admin("admin_del_admin", { name });
        done.push(`admin ${name} deleted`);
      } catch (error) {
        if (!(error instanceof AmtpError && error.code === 201)) throw error;
      }
    }
    try {
      const gone = await this.admin<
        { deleted_users: number; deleted_aliases: number }
      >(
        "admin_del_domain",
        { domain: this.domain, force: true },
      );
      done.push(
        `domain ${this.domain} deleted with ${gone.deleted_users} users and ${gone.deleted_aliases} aliases`,
      );
    } catch (error) {
      if (!(error instanceof AmtpError && error.code === 201)) throw error;
    }
    await this.liftOwnBlocks(done);
    await this.adminRequest("admin_logout");
    return done;
  }

  /**
   * Remove the failure records the suite's wrong answers left: those of its
   * own accounts, and its source's count (the suite runs from the admin's own
   * machine; left, the next checks or runs would be blocked).
   */
  async liftOwnBlocks(done: string[] = []): Promise<void> {
    const { blocks } = await this.admin<
      { blocks: { scope: string; id: string; failures: number }[] }
    >("admin_get_blocks");
    for (const block of blocks) {
      const ours = block.id.includes(this.domain) ||
        (block.scope === "ip" && block.id === this.#source &&
          this.failedLogins > 0);
      if (ours) {
        await this.admin("admin_del_block", {
          scope: block.scope,
          id: block.id,
        }).catch(() => {});
        done.push(`failed-login record ${block.scope} ${block.id} removed`);
      }
    }
  }

  /** Close every connection. */
  close(): void {
    for (const client of this.#clients) client.close();
  }
}

/** The response's `error`, checked to be an int32-valued number. */
export function codeOf(response: Response): number {
  expect(typeof response.error === "number", "error is a number");
  return response.error;
}
