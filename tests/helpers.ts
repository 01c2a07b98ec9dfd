/**
 * Test helpers: real servers on loopback with real KV files in temporary
 * folders, and real clients.
 *
 * @module
 */

import { AmtpClient, type ClientOptions } from "../client/mod.ts";
import {
  decryptChallenge,
  generateLoginKeyPair,
  importLoginPrivateKey,
  keyId,
  type LoginAlgorithm,
} from "../core/auth/algorithms.ts";
import { fromPem } from "../core/tls/cert.ts";
import { loadConfig } from "../core/config/mod.ts";
import { Logger } from "../core/log/mod.ts";
import {
  type ServerHandle,
  type StartOptions,
  startServer,
} from "../core/server/mod.ts";

/** A server started for a test. */
export interface TestServer {
  /** The running server. */
  server: ServerHandle;
  /** Its data folder. */
  dataDir: string;
  /** Log lines written so far. */
  logs: string[];
  /** Connect a client (WebTransport by default). */
  connect(options?: Partial<ClientOptions>): Promise<AmtpClient>;
  /** Stop the server and remove its folder. */
  close(): Promise<void>;
}

/** Start a server on 127.0.0.1 with a free port and a fresh data folder. */
export async function startTestServer(
  env: Record<string, string> = {},
  options: Omit<StartOptions, "log"> = {},
): Promise<TestServer> {
  const dataDir = env.AMTP_DATA ??
    await Deno.makeTempDir({ prefix: "amtp-test-" });
  const config = loadConfig({
    AMTP_HOST: "127.0.0.1",
    AMTP_PORT: "0",
    AMTP_DATA: dataDir,
    AMTP_LOG_LEVEL: "debug",
    // Federation lookups stay on loopback: a closed port unless a test runs dnsmasq.
    AMTP_DNS: "127.0.0.1:9",
    ...env,
  });
  const logs: string[] = [];
  const log = new Logger({
    level: "debug",
    sink: (line) => logs.push(line),
  });
  const server = await startServer(config, { log, ...options });
  const clients: AmtpClient[] = [];
  return {
    server,
    dataDir,
    logs,
    async connect(options = {}) {
      const ws = options.transport === "websocket";
      const client = await AmtpClient.connect({
        url: `${ws ? "wss" : "https"}://127.0.0.1:${server.port}/amtp`,
        certHash: server.certSha256(),
        caCerts: [server.certificate().certPem],
        keepAliveMs: 0,
        ...options,
      });
      clients.push(client);
      return client;
    },
    async close() {
      for (const client of clients) client.close();
      await server.close();
      if (!env.AMTP_DATA) await Deno.remove(dataDir, { recursive: true });
    },
  };
}

/** Wait until `check` is true, polling, or fail after `ms`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  ms = 5000,
  what = "condition",
): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A login key pair held by a test "device". */
export interface TestKey {
  /** Algorithm. */
  algorithm: LoginAlgorithm;
  /** Private key. */
  privateKey: CryptoKey;
  /** SPKI DER. */
  publicKey: Uint8Array;
  /** Key id. */
  keyId: string;
}

/** Generate a key for a test account. */
export async function makeKey(algorithm: LoginAlgorithm): Promise<TestKey> {
  const pair = await generateLoginKeyPair(algorithm);
  const loaded = await importLoginPrivateKey(pair.privateKey);
  return {
    algorithm,
    privateKey: loaded.key,
    publicKey: pair.publicKey,
    keyId: await keyId(pair.publicKey),
  };
}

/** Load the bootstrap admin's key from a data folder. */
export async function bootstrapKey(dataDir: string): Promise<TestKey> {
  const loaded = await importLoginPrivateKey(
    fromPem(await Deno.readTextFile(`${dataDir}/admin.key`)),
  );
  return {
    algorithm: loaded.algorithm,
    privateKey: loaded.key,
    publicKey: loaded.publicKey,
    keyId: await keyId(loaded.publicKey),
  };
}

/** Log in with challenge-response; returns the token. */
export async function login(
  client: AmtpClient,
  kind: "admin" | "user",
  user: string,
  key: TestKey,
): Promise<string> {
  const challenge = await client.call<{ verification_string: string }>(
    `${kind}_login_request`,
    { user, key_id: key.keyId },
  );
  const answer = await decryptChallenge(
    key.algorithm,
    key.privateKey,
    challenge.verification_string,
  );
  const result = await client.call<Record<string, string>>(
    `${kind}_login_verify`,
    { user, verification_string: answer },
  );
  return result[`${kind}_token`];
}

/**
 * Creates each user once (concurrent callers share the creation) through an
 * admin call; returns the user's key.
 */
export function userMaker(
  admin: (command: string, params: Record<string, unknown>) => Promise<unknown>,
): (address: string) => Promise<TestKey> {
  const keys = new Map<string, Promise<TestKey>>();
  return (address) => {
    let pending = keys.get(address);
    if (!pending) {
      pending = makeKey("HPKE-X25519").then(async (key) => {
        await admin("admin_add_user", {
          address,
          algorithm: key.algorithm,
          public_key: key.publicKey,
        });
        return key;
      });
      keys.set(address, pending);
    }
    return pending;
  };
}

/** Log the bootstrap admin of `dataDir` in on `client`; returns a caller of admin commands. */
export async function adminCaller(
  client: AmtpClient,
  dataDir: string,
): Promise<
  (
    command: string,
    params?: Record<string, unknown>,
  ) => Promise<Record<string, unknown>>
> {
  const token = await login(
    client,
    "admin",
    "admin",
    await bootstrapKey(dataDir),
  );
  return (command, params = {}) =>
    client.call<Record<string, unknown>>(command, {
      admin_token: token,
      ...params,
    });
}
