/**
 * A real ACME CA for tests: Pebble (the Debian package `pebble`) on loopback,
 * validating against our server's ports, with names resolved by a dnsmasq of
 * the test's. Its HTTPS certificate comes from a CA the test makes
 * (`caFile`, for `AMTP_ACME_CA`); the roots it issues under are read from its
 * management interface (`roots()`), to verify what it issued.
 *
 * Pebble's own challenge test server (`pebble-challtestsrv`) is not used:
 * dnsmasq answers the names (`-dnsserver`) and our server answers the
 * challenges itself. Pebble's settings here: `httpPort`/`tlsPort` (where it
 * validates HTTP-01 and TLS-ALPN-01, our test ports instead of 80 and 443),
 * `certificateValidityPeriod` (seconds; short ones exercise renewal),
 * `PEBBLE_VA_NOSLEEP=1` (validate at once, not after a random 0-15 s),
 * `PEBBLE_WFE_NONCEREJECT=0` (no deliberately rejected nonces),
 * `PEBBLE_AUTHZREUSE=0` (every order validates again).
 *
 * @module
 */

import { chainPem, createCertificate } from "../core/tls/mod.ts";
import { freePort } from "./dnsmasq.ts";

/** A running Pebble. */
export interface Pebble {
  /** The ACME directory URL (for `AMTP_ACME_DIRECTORY`). */
  directory: string;
  /** PEM file of the CA of Pebble's own HTTPS certificate (for `AMTP_ACME_CA`). */
  caFile: string;
  /** Pebble's current issuing root(s), PEM: what its certificates chain to. */
  roots(): Promise<string>;
  /** Everything Pebble printed. */
  output(): string;
  /** Stop it. */
  stop(): Promise<void>;
}

/** Options of {@link startPebble}. */
export interface PebbleOptions {
  /** dnsmasq address `127.0.0.1:port` resolving the names to validate. */
  dns: string;
  /** Port Pebble connects to for TLS-ALPN-01 (our server's TCP port). */
  tlsPort: number;
  /** Port Pebble connects to for HTTP-01. */
  httpPort: number;
  /** Seconds a certificate is valid (short ones exercise renewal). */
  validitySeconds?: number;
}

/** Whether the `pebble` command is installed. */
export function havePebble(): boolean {
  try {
    return Deno.statSync("/usr/bin/pebble").isFile;
  } catch {
    return false;
  }
}

/** Start Pebble in `dir` (its certificate, key and configuration go there). */
export async function startPebble(
  dir: string,
  options: PebbleOptions,
): Promise<Pebble> {
  const ca = await createCertificate({
    names: ["pebble test"],
    days: 2,
    ca: true,
  });
  const leaf = await createCertificate({
    names: ["localhost", "127.0.0.1"],
    days: 2,
    issuer: ca,
  });
  const caFile = `${dir}/pebble-ca.pem`;
  await Deno.writeTextFile(caFile, ca.certPem);
  await Deno.writeTextFile(
    `${dir}/pebble-cert.pem`,
    chainPem(leaf.certPem, ca.certPem),
  );
  await Deno.writeTextFile(`${dir}/pebble-key.pem`, leaf.keyPem);
  const port = freePort();
  const management = freePort();
  await Deno.writeTextFile(
    `${dir}/pebble.json`,
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${port}`,
        managementListenAddress: `127.0.0.1:${management}`,
        certificate: `${dir}/pebble-cert.pem`,
        privateKey: `${dir}/pebble-key.pem`,
        httpPort: options.httpPort,
        tlsPort: options.tlsPort,
        ocspResponderURL: "",
        externalAccountBindingRequired: false,
        ...(options.validitySeconds
          ? { certificateValidityPeriod: options.validitySeconds }
          : {}),
      },
    }),
  );
  const child = new Deno.Command("/usr/bin/pebble", {
    args: ["-config", `${dir}/pebble.json`, "-dnsserver", options.dns],
    env: {
      // Validate at once, and accept every nonce (fewer retries to follow).
      PEBBLE_VA_NOSLEEP: "1",
      PEBBLE_WFE_NONCEREJECT: "0",
      // Fresh authorizations each order: renewals validate again.
      PEBBLE_AUTHZREUSE: "0",
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out: string[] = [];
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) out.push(decoder.decode(chunk));
  };
  const reading = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const client = Deno.createHttpClient({ caCerts: [ca.certPem] });
  const directory = `https://127.0.0.1:${port}/dir`;
  let stopped: Promise<void> | undefined;
  const stop = () =>
    stopped ??= (async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
      await reading;
      client.close();
    })();
  for (let i = 0;; i++) {
    try {
      const response = await fetch(directory, { client });
      await response.body?.cancel();
      if (response.ok) break;
    } catch (error) {
      if (i > 100) {
        await stop();
        throw new Error(`pebble did not start: ${error}\n${out.join("")}`);
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    directory,
    caFile,
    async roots() {
      const response = await fetch(
        `https://127.0.0.1:${management}/roots/0`,
        { client },
      );
      return await response.text();
    },
    output: () => out.join(""),
    stop,
  };
}
