/**
 * Certificates from an ACME CA (RFC 8555; Let's Encrypt by default) with the
 * npm client `acme-client`: an account key and the certificate in
 * `<data>/acme/`, a challenge answered on the server's own ports, renewal
 * when a third of the lifetime remains, failures logged and retried with
 * backoff while the certificate in use stays.
 *
 * The challenge is HTTP-01: a plain HTTP listener (port 80 for a public CA,
 * `AMTP_ACME_HTTP_PORT`) serves `/.well-known/acme-challenge/<token>` from
 * the {@link ChallengeBoard}.
 *
 * Why not TLS-ALPN-01 on the TCP port (no port 80 needed): Deno 2.9.6's
 * `node:tls` does let an `ALPNCallback` pick the certificate by ALPN
 * (`this.setKeyCert`, a Deno addition), but it loads a certificate through
 * rustls/webpki, which refuses the critical `id-pe-acmeIdentifier` extension
 * RFC 8737 requires ("Failed to build server config"; the handshake then
 * hangs). Measured; tests/acme_test.ts keeps the fact checked.
 *
 * @module
 */

import https from "node:https";
import * as acme from "acme-client";
import type { AcmeConfig } from "../config/mod.ts";
import type { Logger } from "../log/mod.ts";
import { certificateHash } from "../../shared/pem.ts";
import type { ServerCertificate } from "./mod.ts";

/** Fraction of a certificate's lifetime left when it is renewed. */
export const RENEW_FRACTION = 1 / 3;
/** Longest sleep between looks at the certificate. */
const MAX_SLEEP_MS = 3_600_000;

/** The HTTP-01 challenges being answered right now. */
export class ChallengeBoard {
  /** Key authorizations by token. */
  readonly http = new Map<string, string>();

  /** The answer to an HTTP-01 request, or undefined when it is not one. */
  httpAnswer(request: Request): Response | undefined {
    const path = new URL(request.url).pathname;
    const prefix = "/.well-known/acme-challenge/";
    if (!path.startsWith(prefix)) return undefined;
    const answer = this.http.get(path.slice(prefix.length));
    return answer === undefined
      ? new Response("not found\n", { status: 404 })
      : new Response(answer, { headers: { "content-type": "text/plain" } });
  }
}

/** An issued certificate as stored (`acme/certificate.json`, one file: never a key of another certificate). */
interface Stored {
  names: string[];
  directory: string;
  notBefore: string;
  notAfter: string;
  certPem: string;
  keyPem: string;
}

/** Options of {@link AcmeCertificates}. */
export interface AcmeOptions {
  /** The ACME settings. */
  config: AcmeConfig;
  /** Data folder (`acme/` inside holds keys and certificates). */
  dataDir: string;
  /** Logger. */
  log: Logger;
  /** Where pending challenges are posted for the listeners. */
  board: ChallengeBoard;
  /** First retry delay after a failure (doubles up to an hour; default 60 s). */
  retryBaseMs?: number;
  /** Clock in epoch milliseconds. */
  now?: () => number;
  /** Told of each order's result (metrics). */
  observe?: (result: "issued" | "failed") => void;
}

/** Obtains, stores and renews the server's certificate. */
export class AcmeCertificates {
  readonly #options: AcmeOptions;
  readonly #dir: string;
  readonly #log: Logger;
  readonly #now: () => number;
  #timer?: ReturnType<typeof setTimeout>;
  #stopped = false;
  #failures = 0;

  /** Certificates for `options.config.names` from `options.config.directory`. */
  constructor(options: AcmeOptions) {
    this.#options = options;
    this.#dir = `${options.dataDir}/acme`;
    this.#log = options.log.child({ part: "acme" });
    this.#now = options.now ?? Date.now;
    // acme-client speaks through one axios instance of its own. Its retries
    // inside an order (5, waiting up to 75 s in all) are off: one retry loop,
    // ours, with its backoff and its log line per failure.
    // (acme-client's settings are not in its types.)
    const defaults = acme.axios.defaults as unknown as {
      acmeSettings: { retryMaxAttempts: number };
    };
    defaults.acmeSettings.retryMaxAttempts = 0;
    if (options.config.caFile) {
      // A test CA (Pebble's) for the directory's HTTPS.
      const ca = Deno.readTextFileSync(options.config.caFile);
      acme.axios.defaults.httpsAgent = new https.Agent({ ca });
    }
  }

  /** The stored certificate when it covers the names and is not expired. */
  async stored(): Promise<ServerCertificate | undefined> {
    try {
      const stored = JSON.parse(
        await Deno.readTextFile(`${this.#dir}/certificate.json`),
      ) as Stored;
      if (!this.#fits(stored)) return undefined;
      const notAfter = new Date(stored.notAfter);
      if (notAfter.getTime() <= this.#now()) return undefined;
      return {
        certPem: stored.certPem,
        keyPem: stored.keyPem,
        sha256: await certificateHash(stored.certPem),
        selfSigned: false,
        notAfter,
        notBefore: new Date(stored.notBefore),
      };
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) {
        this.#log.warn("acme_stored_unreadable", { error: String(error) });
      }
      return undefined;
    }
  }

  /** When `cert` is due for renewal (epoch ms): a third of its life before its end. */
  renewAt(cert: ServerCertificate | undefined): number {
    if (!cert?.notAfter || cert.selfSigned) return this.#now();
    const end = cert.notAfter.getTime();
    const start = cert.notBefore?.getTime() ?? end - 90 * 86_400_000;
    return end - (end - start) * RENEW_FRACTION;
  }

  /**
   * Keep a CA certificate in use: obtain one now if `current` is not one (or
   * is due), then renew ahead of expiry. Each new certificate is stored and
   * handed to `apply`; a failure is logged and retried with backoff, and
   * the certificate in use stays.
   */
  start(
    current: ServerCertificate,
    apply: (cert: ServerCertificate) => Promise<void>,
  ): void {
    let active = current;
    const run = async () => {
      if (this.#stopped) return;
      const due = this.renewAt(active);
      if (this.#now() < due) {
        this.#schedule(run, due - this.#now());
        return;
      }
      try {
        const next = await this.obtain();
        if (this.#stopped) return;
        await apply(next);
        active = next;
        this.#failures = 0;
        this.#options.observe?.("issued");
        this.#schedule(run, this.renewAt(next) - this.#now());
      } catch (error) {
        if (this.#stopped) return;
        const delay = Math.min(
          MAX_SLEEP_MS,
          (this.#options.retryBaseMs ?? 60_000) * 2 ** this.#failures,
        );
        this.#failures++;
        this.#options.observe?.("failed");
        this.#log.error("acme_failed", {
          error: describe(error),
          attempt: this.#failures,
          retry_in_ms: delay,
          in_use: active.selfSigned ? "self-signed" : active.sha256,
          not_after: active.notAfter?.toISOString(),
        });
        this.#schedule(run, delay);
      }
    };
    this.#schedule(run, 0);
  }

  /** Stop renewing. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  /** Order a certificate for the names now, store it and return it. */
  async obtain(): Promise<ServerCertificate> {
    const { config } = this.#options;
    const client = new acme.Client({
      directoryUrl: config.directory,
      accountKey: await this.#accountKey(),
      accountUrl: await this.#accountUrl(),
    });
    const [key, csr] = await acme.crypto.createCsr(
      { commonName: config.names[0], altNames: config.names },
      await acme.crypto.createPrivateEcdsaKey("P-256"),
    );
    this.#log.info("acme_order", {
      names: config.names.join(","),
      directory: config.directory,
    });
    const board = this.#options.board;
    const chain = await client.auto({
      csr,
      email: config.email,
      termsOfServiceAgreed: true,
      challengePriority: ["http-01"],
      // The CA validates; a look of our own would need the public DNS.
      skipChallengeVerification: true,
      challengeCreateFn: (_authz, challenge, keyAuthorization) => {
        board.http.set(
          (challenge as { token: string }).token,
          keyAuthorization,
        );
        return Promise.resolve();
      },
      challengeRemoveFn: (_authz, challenge) => {
        board.http.delete((challenge as { token: string }).token);
        return Promise.resolve();
      },
    });
    await this.#saveAccountUrl(client.getAccountUrl());
    const certPem = chain.toString();
    const info = acme.crypto.readCertificateInfo(certPem);
    const cert: ServerCertificate = {
      certPem,
      keyPem: key.toString(),
      sha256: await certificateHash(certPem),
      selfSigned: false,
      notBefore: info.notBefore,
      notAfter: info.notAfter,
    };
    await this.#store(cert);
    this.#log.info("acme_issued", {
      sha256: cert.sha256,
      not_after: info.notAfter.toISOString(),
      names: config.names.join(","),
    });
    return cert;
  }

  #fits(meta: Pick<Stored, "directory" | "names">): boolean {
    return meta.directory === this.#options.config.directory &&
      meta.names.join(",") === this.#options.config.names.join(",");
  }

  #schedule(run: () => Promise<void>, ms: number): void {
    clearTimeout(this.#timer);
    if (this.#stopped) return;
    // Long waits in steps: a clock that jumps is noticed within the hour.
    this.#timer = setTimeout(run, Math.max(0, Math.min(MAX_SLEEP_MS, ms)));
  }

  /** The account key, made once (it identifies this server at the CA). */
  async #accountKey(): Promise<string> {
    const path = `${this.#dir}/account-key.pem`;
    try {
      return await Deno.readTextFile(path);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    await Deno.mkdir(this.#dir, { recursive: true, mode: 0o700 });
    const key = (await acme.crypto.createPrivateEcdsaKey("P-256")).toString();
    await Deno.writeTextFile(path, key, { mode: 0o600 });
    return key;
  }

  /** The account's URL at this directory, once known. */
  async #accountUrl(): Promise<string | undefined> {
    try {
      const saved = JSON.parse(
        await Deno.readTextFile(`${this.#dir}/account.json`),
      ) as { url: string; directory: string };
      return saved.directory === this.#options.config.directory
        ? saved.url
        : undefined;
    } catch {
      return undefined;
    }
  }

  async #saveAccountUrl(url: string): Promise<void> {
    await atomicWrite(
      `${this.#dir}/account.json`,
      JSON.stringify({
        url,
        directory: this.#options.config.directory,
        email: this.#options.config.email,
      }),
    );
  }

  /**
   * One file holds the certificate and its key (written whole, renamed into
   * place); `cert.pem` and `key.pem` beside it are copies for other programs.
   */
  async #store(cert: ServerCertificate): Promise<void> {
    await Deno.mkdir(this.#dir, { recursive: true, mode: 0o700 });
    const stored: Stored = {
      names: this.#options.config.names,
      directory: this.#options.config.directory,
      notBefore: cert.notBefore!.toISOString(),
      notAfter: cert.notAfter!.toISOString(),
      certPem: cert.certPem,
      keyPem: cert.keyPem,
    };
    await atomicWrite(`${this.#dir}/certificate.json`, JSON.stringify(stored));
    await atomicWrite(`${this.#dir}/key.pem`, cert.keyPem);
    await atomicWrite(`${this.#dir}/cert.pem`, cert.certPem);
  }
}

/** Write through a temporary file and a rename: never half a file. */
async function atomicWrite(path: string, text: string): Promise<void> {
  const temporary = `${path}.tmp`;
  await Deno.writeTextFile(temporary, text, { mode: 0o600 });
  await Deno.rename(temporary, path);
}

/** An ACME error in one line (acme-client errors carry the CA's detail). */
function describe(error: unknown): string {
  if (error instanceof Error) return error.message.slice(0, 500);
  return String(error).slice(0, 500);
}
