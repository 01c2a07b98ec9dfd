/// <reference lib="dom" />
/**
 * A signed-in user in this browser: the login (reusing the last token until
 * the server refuses it, then signing the challenge again with the stored
 * key), the end-to-end device set-up (PROTOCOL.md §16.1: the first device
 * makes the master key and the device list; a later one waits for approval,
 * or approves itself with a restored master key), and the ways in: an
 * invitation, self-registration, a key file.
 *
 * @module
 */

import { type AmtpClient, AmtpError, type LoginKey } from "../../client/mod.ts";
import type { DeviceKeys, MasterKeys } from "../../client/e2e.ts";
import {
  type AccountDevice,
  approveDevice,
  initDevice,
  type InitResult,
} from "../../client/e2e_account.ts";
import type { MailAccount } from "../../client/mail.ts";
import { ErrorCode } from "../../shared/errors.ts";
import type { StoredAccount } from "./db.ts";
import {
  backupText,
  BrowserTrustStore,
  type FreshLoginKey,
  loginKeyOf,
  newLoginKey,
  newMasterKey,
  readKeyFile,
  saveAccount,
} from "./keys.ts";

/** A label for this browser's keys and sessions. */
export function browserLabel(): string {
  const ua = navigator.userAgent;
  const name = /Firefox\//.test(ua)
    ? "Firefox"
    : /Edg\//.test(ua)
    ? "Edge"
    : /Chrom/.test(ua)
    ? "Chromium"
    : /Safari\//.test(ua)
    ? "Safari"
    : "browser";
  return `web: ${name}`;
}

/**
 * Calls with a token that a login renews: a call that finds it refused (not
 * logged in: expired or revoked) logs in once and is made again. Calls
 * refused together share that login: the server keeps one pending
 * challenge per account and session.
 */
class RenewedToken {
  readonly #client: AmtpClient;
  readonly #field: "user_token" | "admin_token";
  readonly #login: () => Promise<string>;
  #loggingIn?: Promise<void>;
  /** The token in use. */
  token: string;

  constructor(
    client: AmtpClient,
    field: "user_token" | "admin_token",
    token: string,
    login: () => Promise<string>,
  ) {
    this.#client = client;
    this.#field = field;
    this.token = token;
    this.#login = login;
  }

  /** A command with the token. */
  async call<T>(command: string, params: Record<string, unknown>): Promise<T> {
    const attempt = () =>
      this.#client.call<T>(command, { ...params, [this.#field]: this.token });
    try {
      return await attempt();
    } catch (error) {
      if (
        !(error instanceof AmtpError) || error.code !== ErrorCode.NOT_LOGGED_IN
      ) throw error;
      await this.renew();
      return await attempt();
    }
  }

  /** Log in again (shared by everyone who asks meanwhile). */
  renew(): Promise<void> {
    return this.#loggingIn ??= this.#login().then((token) => {
      this.token = token;
    }).finally(() => this.#loggingIn = undefined);
  }
}

/** A user signed in here. */
export class UserSession {
  /** The client. */
  readonly client: AmtpClient;
  /** What this browser keeps of the account. */
  stored: StoredAccount;
  /** Pinned contacts and seen ids. */
  readonly trust: BrowserTrustStore;
  /** The messages module, with this session's token. */
  readonly mail: MailAccount;
  readonly #auth: RenewedToken;

  private constructor(
    client: AmtpClient,
    stored: StoredAccount,
    token: string,
  ) {
    this.client = client;
    this.stored = stored;
    this.#auth = new RenewedToken(client, "user_token", token, async () => {
      const { token } = await client.login(
        "user",
        this.stored.address,
        loginKeyOf(this.stored.login),
        { label: browserLabel() },
      );
      this.stored = { ...this.stored, token };
      await saveAccount(this.stored);
      return token;
    });
    this.trust = new BrowserTrustStore(
      stored.address,
      () => this.stored.master?.public,
    );
    const auth = this.#auth;
    this.mail = {
      client,
      get token() {
        return auth.token;
      },
      address: stored.address,
      call: (command, params = {}) =>
        this.call(command, { module: "messages", ...params }),
      // Chunks go on the command stream here (its calls renew the token).
      transfer: (command, params = {}) =>
        this.call(command, { module: "messages", ...params }),
    };
  }

  /** The address. */
  get address(): string {
    return this.stored.address;
  }

  /** The token in use. */
  get token(): string {
    return this.#auth.token;
  }

  /** Sign in with the keys this browser holds: the last token if it still works, else a new login. */
  static async signIn(
    client: AmtpClient,
    stored: StoredAccount,
  ): Promise<UserSession> {
    if (stored.token) {
      const response = await client.request("user_serverinfo", {
        user_token: stored.token,
      });
      if (response.error === 0) {
        return new UserSession(client, stored, stored.token);
      }
    }
    const session = new UserSession(client, stored, "");
    await session.#auth.renew();
    return session;
  }

  /**
   * A user command (or a module command, with `module`) with this session's
   * token; an expired or revoked token is replaced by a new login once.
   */
  call<T = Record<string, unknown>>(
    command: string,
    params: Record<string, unknown> = {},
  ): Promise<T> {
    return this.#auth.call<T>(command, params);
  }

  /** This device's end-to-end keys, when it has them. */
  get device(): DeviceKeys | undefined {
    return this.stored.device;
  }

  /** This device as the end-to-end code takes it. */
  get accountDevice(): AccountDevice | undefined {
    const device = this.stored.device;
    return device
      ? { address: this.address, device, master: this.stored.master }
      : undefined;
  }

  /**
   * Set up this device's end-to-end keys (non-extractable): with a new list
   * (and `master`) when the account has none, else as a pending device —
   * which approves itself when this browser holds the master key.
   */
  async setUpDevice(label: string, master?: MasterKeys): Promise<InitResult> {
    const save = async (file: AccountDevice) => {
      this.stored = {
        ...this.stored,
        device: file.device as StoredAccount["device"],
        master: file.master as StoredAccount["master"],
      };
      await saveAccount(this.stored);
    };
    const result = await initDevice(this.client, {
      token: this.#auth.token,
      address: this.address,
      label,
      save,
      keys: { extractable: false },
      master,
    });
    if (result.kind === "pending" && master) {
      // A restored master key: approve this device at once.
      const file = { ...result.file, master };
      await save(file);
      const list = await approveDevice(this.client, {
        token: this.#auth.token,
        file,
        id: file.device.id,
      });
      return { kind: "listed", file, list };
    }
    return result;
  }

  /** Sign out: the token is revoked; the keys stay unless `forget`. */
  async signOut(forget: boolean): Promise<void> {
    await this.client.call("user_logout", { user_token: this.#auth.token })
      .catch(
        () => {},
      );
    this.stored = { ...this.stored, token: undefined };
    const { db } = await import("./db.ts");
    if (forget) await (await db()).delete("accounts", this.address);
    else await saveAccount(this.stored);
  }
}

/** What joining made: the session, and the backup file's text (shown once). */
export interface Joined {
  /** The signed-in session. */
  session: UserSession;
  /** The backup to offer (the login key, and the master key when made here). */
  backup: string;
  /** This device is pending approval on a device holding the master key. */
  pending: boolean;
}

/**
 * Store the login key, sign in, set up the device keys. `master`: a new
 * master key made here (its bytes go into the backup when it makes the
 * list), one restored from a backup, or none (a device joining an account
 * whose master key is on another device).
 */
async function finishJoin(
  client: AmtpClient,
  address: string,
  login: FreshLoginKey,
  label: string,
  master: { master: MasterKeys; pkcs8?: Uint8Array } | undefined,
): Promise<Joined> {
  const stored: StoredAccount = {
    address,
    login: login.stored,
    added: new Date(),
  };
  await saveAccount(stored);
  const session = await UserSession.signIn(client, stored);
  const result = await session.setUpDevice(label, master?.master);
  // A master key that did not make the list (the account has one) is not kept.
  const kept = result.kind === "listed" ? master?.pkcs8 : undefined;
  return {
    session,
    backup: backupText(address, login.pkcs8, kept),
    pending: result.kind === "pending",
  };
}

/**
 * The way in with keys made here: an invitation's `code`
 * (`invitation_accept`), or an `address` on a domain open for registration
 * (`user_register`).
 */
export type JoinWay =
  | { command: "invitation_accept"; code: string }
  | { command: "user_register"; address: string };

/** Join with keys made here: the public key is registered by the way's command. */
export async function joinWith(
  client: AmtpClient,
  way: JoinWay,
  options: { name?: string; label: string },
): Promise<Joined> {
  const { command, ...named } = way;
  const login = await newLoginKey();
  const done = await client.call<{ address: string; kind?: string }>(
    command,
    {
      ...named,
      algorithm: login.stored.algorithm,
      public_key: login.stored.spki,
      key_label: options.label,
      name: options.name || undefined,
    },
  );
  // A device invitation joins an account whose master key is elsewhere.
  return await finishJoin(
    client,
    done.address,
    login,
    options.label,
    done.kind === "device" ? undefined : await newMasterKey(),
  );
}

/**
 * Sign in with a key file (a key made by `amtp keygen`, or this app's
 * backup, whose master key lets this device approve itself).
 */
export async function importKeyFile(
  client: AmtpClient,
  address: string,
  text: string,
  label: string,
): Promise<Joined> {
  const keys = await readKeyFile(text);
  return await finishJoin(
    client,
    address.trim().toLowerCase(),
    keys.login,
    label,
    keys.master ? { master: keys.master } : undefined,
  );
}

/** An admin signed in here (token of 15 minutes, renewed with the key). */
export class AdminSession {
  /** The client. */
  readonly client: AmtpClient;
  /** Admin name. */
  readonly name: string;
  readonly #auth: RenewedToken;

  private constructor(
    client: AmtpClient,
    name: string,
    key: LoginKey,
    token: string,
  ) {
    this.client = client;
    this.name = name;
    this.#auth = new RenewedToken(
      client,
      "admin_token",
      token,
      async () => (await client.login("admin", name, key)).token,
    );
  }

  /** Log in as an admin. */
  static async signIn(
    client: AmtpClient,
    name: string,
    key: LoginKey,
  ): Promise<AdminSession> {
    const { token } = await client.login("admin", name, key, {
      label: browserLabel(),
    });
    return new AdminSession(client, name, key, token);
  }

  /** An admin command; an expired token is renewed once. */
  call<T = Record<string, unknown>>(
    command: string,
    params: Record<string, unknown> = {},
  ): Promise<T> {
    return this.#auth.call<T>(command, params);
  }

  /** Log out (the token is revoked). */
  async signOut(): Promise<void> {
    await this.client.call("admin_logout", { admin_token: this.#auth.token })
      .catch(() => {});
  }
}
