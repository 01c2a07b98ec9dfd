/**
 * A server process to measure or attack: shared by the benchmark and the
 * fuzzer.
 *
 * @module
 */

import { AmtpClient } from "../client/mod.ts";
import type { LoginAlgorithm } from "../shared/login/algorithms.ts";
import { certificateHash } from "../shared/pem.ts";
import { bootstrapKey, login, makeKey, type TestKey } from "./helpers.ts";
import { type ServerProcess, startServerProcess } from "./process.ts";

/**
 * An AMTP server process for measuring (limits raised, warnings only) in
 * `<root>/<name>`, with an admin session, domain `bench.test` and the user
 * `u@bench.test`; `env` adds variables (the web app, for one),
 * `options.denoFlags` flags of Deno (the inspector, for one).
 */
export async function startAmtp(
  root: string,
  name: string,
  env: Record<string, string> = {},
  options: { denoFlags?: string[] } = {},
) {
  const cwd = `${root}/${name}`;
  await Deno.mkdir(cwd);
  const server: ServerProcess = await startServerProcess(
    cwd,
    {
      ...env,
      AMTP_PORT: "0",
      AMTP_HOST: "127.0.0.1",
      AMTP_RATE_LIMIT: "10000000",
      AMTP_MAX_SESSIONS_PER_IP: "50000",
      AMTP_MAX_SESSIONS: "50000",
      AMTP_LOG_LEVEL: "warn",
      AMTP_IDLE_TIMEOUT: "3600",
      ...env,
    },
    options,
  );
  const pem = await Deno.readTextFile(`${cwd}/data/tls/cert.pem`);
  const hash = await certificateHash(pem);
  const connect = (transport: "webtransport" | "websocket" = "webtransport") =>
    AmtpClient.connect({
      url: `${
        transport === "websocket" ? "wss" : "https"
      }://127.0.0.1:${server.port}/amtp`,
      transport,
      certHash: hash,
      caCerts: [pem],
      keepAliveMs: 0,
      requestTimeoutMs: 120_000,
    });
  const admin = await connect();
  const adminToken = await login(
    admin,
    "admin",
    "admin",
    await bootstrapKey(`${cwd}/data`),
  );
  await admin.call("admin_add_domain", {
    admin_token: adminToken,
    domain: "bench.test",
  });
  const keys = new Map<string, TestKey>();
  const user = async (
    address: string,
    algorithm: LoginAlgorithm = "HPKE-X25519",
  ) => {
    const key = await makeKey(algorithm);
    await admin.call("admin_add_user", {
      admin_token: adminToken,
      address,
      algorithm,
      public_key: key.publicKey,
    });
    keys.set(address, key);
    return key;
  };
  await user("u@bench.test");
  return { server, cwd, connect, admin, adminToken, keys, user };
}
