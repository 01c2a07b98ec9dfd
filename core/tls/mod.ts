/**
 * The server's TLS certificate: configured PEM files (production, a real CA)
 * or a generated self-signed ECDSA P-256 certificate kept in the data folder
 * and renewed before it expires (WebTransport hash pinning allows at most 14
 * days of validity). Either way, a change is picked up without a restart.
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";
import { certificateHash } from "../../shared/pem.ts";
import { createCertificate } from "./cert.ts";

export * from "./cert.ts";
export { AcmeCertificates, ChallengeBoard } from "./acme.ts";

/** Days a generated certificate is valid. */
export const SELF_SIGNED_DAYS = 13;
/** Renew a generated certificate when fewer days than this remain. */
export const RENEW_BEFORE_DAYS = 4;

/** The certificate in use. */
export interface ServerCertificate {
  /** PEM chain. */
  certPem: string;
  /** PEM private key. */
  keyPem: string;
  /** SHA-256 of the leaf certificate, hex. */
  sha256: string;
  /** True when generated (clients must pin its hash). */
  selfSigned: boolean;
  /** End of validity (generated and ACME certificates). */
  notAfter?: Date;
  /** Start of validity (ACME certificates: renewal is timed from it). */
  notBefore?: Date;
}

/** Options of {@link loadCertificate}. */
export interface CertificateSource {
  /** Data folder for generated certificates. */
  dataDir: string;
  /** Names for a generated certificate. */
  names: string[];
  /** Configured PEM certificate file. */
  certFile?: string;
  /** Configured PEM key file. */
  keyFile?: string;
}

interface StoredMeta {
  notAfter: string;
  names: string[];
}

/** Load the configured certificate, or the generated one (creating or renewing it). */
export async function loadCertificate(
  source: CertificateSource,
  log: Logger,
): Promise<ServerCertificate> {
  if (source.certFile && source.keyFile) {
    const certPem = await Deno.readTextFile(source.certFile);
    const keyPem = await Deno.readTextFile(source.keyFile);
    return {
      certPem,
      keyPem,
      sha256: await certificateHash(certPem),
      selfSigned: false,
    };
  }
  const dir = `${source.dataDir}/tls`;
  const certPath = `${dir}/cert.pem`;
  const keyPath = `${dir}/key.pem`;
  const metaPath = `${dir}/cert.json`;
  try {
    const meta = JSON.parse(await Deno.readTextFile(metaPath)) as StoredMeta;
    const notAfter = new Date(meta.notAfter);
    const sameNames = meta.names.join(",") === source.names.join(",");
    if (
      sameNames &&
      notAfter.getTime() - Date.now() > RENEW_BEFORE_DAYS * 86_400_000
    ) {
      const certPem = await Deno.readTextFile(certPath);
      const keyPem = await Deno.readTextFile(keyPath);
      return {
        certPem,
        keyPem,
        sha256: await certificateHash(certPem),
        selfSigned: true,
        notAfter,
      };
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      log.warn("certificate_unreadable", { error: String(error) });
    }
  }
  const bundle = await createCertificate({
    names: source.names,
    days: SELF_SIGNED_DAYS,
  });
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(keyPath, bundle.keyPem, { mode: 0o600 });
  await Deno.writeTextFile(certPath, bundle.certPem);
  await Deno.writeTextFile(
    metaPath,
    JSON.stringify({
      notAfter: bundle.notAfter.toISOString(),
      names: source.names,
    }),
  );
  log.info("certificate_generated", {
    sha256: bundle.sha256,
    not_after: bundle.notAfter.toISOString(),
  });
  return {
    certPem: bundle.certPem,
    keyPem: bundle.keyPem,
    sha256: bundle.sha256,
    selfSigned: true,
    notAfter: bundle.notAfter,
  };
}

/**
 * Check the certificate every `intervalMs`: reload changed PEM files, renew a
 * generated certificate nearing expiry, and hand a new one to `apply`.
 * Returns a function that stops watching.
 */
export function watchCertificate(
  source: CertificateSource,
  current: ServerCertificate,
  options: {
    intervalMs: number;
    log: Logger;
    apply: (cert: ServerCertificate) => Promise<void>;
  },
): () => void {
  let active = current;
  let busy = false;
  const timer = setInterval(async () => {
    if (busy) return;
    busy = true;
    try {
      const next = await loadCertificate(source, options.log);
      if (next.sha256 !== active.sha256) {
        await options.apply(next);
        active = next;
        options.log.info("certificate_reloaded", { sha256: next.sha256 });
      }
    } catch (error) {
      options.log.error("certificate_reload_failed", { error: String(error) });
    } finally {
      busy = false;
    }
  }, options.intervalMs);
  return () => clearInterval(timer);
}
