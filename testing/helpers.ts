/**
 * Test helpers: real servers on loopback with real KV files in temporary
 * folders, and real clients.
 *
 * @module
 */

import {
  AmtpClient,
  type ClientOptions,
  type ClientTransport,
} from "../client/mod.ts";
import {
  DEFAULT_LOGIN_ALGORITHM,
  generateLoginKeyPair,
  importLoginPrivateKey,
  keyId,
  type LoginAlgorithm,
} from "../shared/login/algorithms.ts";
import { WebSocket as NodeWebSocket } from "ws";
import { overNodeWebSocket } from "../client/connect.ts";
import { fromPem } from "../shared/pem.ts";
import { loadConfig } from "../core/config/mod.ts";
import { Logger } from "../core/log/mod.ts";
import {
  type ServerHandle,
  type StartOptions,
  startServer,
} from "../server/mod.ts";

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
  /**
   * Connect a client over WebSocket from another loopback address (e.g.
   * `127.0.0.2`): the server sees a different client IP.
   */
  connectFrom(localAddress: string): Promise<AmtpClient>;
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
    // The email gateway listens on a port: only the tests of email start it.
    AMTP_MODULES_OFF: "smtp",
    // The web app only where a test asks for it (its loopback port then any free one).
    AMTP_WEB: "off",
    AMTP_WEB_PORT: "0",
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
    async connectFrom(localAddress) {
      const client = await AmtpClient.connect({
        url: `wss://127.0.0.1:${server.port}/amtp`,
        caCerts: [server.certificate().certPem],
        keepAliveMs: 0,
        open: (options) => openWebSocketFrom(localAddress, options),
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

/**
 * A WebSocket transport from a chosen local address, through the `ws`
 * package (Deno's own WebSocket cannot choose one): one frame per binary
 * message, as the server's WebSocket transport expects.
 */
export async function openWebSocketFrom(
  localAddress: string,
  options: ClientOptions,
): Promise<ClientTransport> {
  const socket = new NodeWebSocket(options.url, {
    localAddress,
    ca: options.caCerts,
    maxPayload: options.maxFrame ?? 16 * 1024 * 1024,
  });
  const transport = overNodeWebSocket(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once("open", () => resolve());
    socket.once("error", reject);
  });
  socket.on("error", () => {});
  return transport;
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

/** Generate a key for a test account (Ed25519, the default, unless asked). */
export async function makeKey(
  algorithm: LoginAlgorithm = DEFAULT_LOGIN_ALGORITHM,
): Promise<TestKey> {
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

/** Log in with challenge-response (bound to the server the client reached); returns the token. */
export async function login(
  client: AmtpClient,
  kind: "admin" | "user",
  user: string,
  key: TestKey,
): Promise<string> {
  return (await client.login(kind, user, key)).token;
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
      pending = makeKey().then(async (key) => {
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
