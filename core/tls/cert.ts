/**
 * X.509 certificates with Web Crypto: self-signed ECDSA P-256 certificates
 * for WebTransport certificate-hash pinning, and a small CA for tests.
 *
 * @module
 */

import {
  bitString,
  boolean,
  explicit,
  implicit,
  integer,
  octetString,
  oid,
  sequence,
  set,
  smallInteger,
  time,
  utf8String,
} from "./der.ts";
import { toHex, toPem } from "../../shared/pem.ts";

const ECDSA = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGN = { name: "ECDSA", hash: "SHA-256" } as const;

/** A certificate with its private key, in PEM and DER. */
export interface CertificateBundle {
  /** Certificate PEM. */
  certPem: string;
  /** PKCS#8 private key PEM. */
  keyPem: string;
  /** Certificate DER. */
  der: Uint8Array;
  /** SHA-256 of the DER, lowercase hex (what WebTransport pins). */
  sha256: string;
  /** End of validity. */
  notAfter: Date;
  /** The private key (to sign further certificates when this is a CA). */
  privateKey: CryptoKey;
  /** Common name of the subject (the issuer name of certificates it signs). */
  subject: string;
}

/** Options of {@link createCertificate}. */
export interface CertificateOptions {
  /** DNS names and IP addresses the certificate is valid for. */
  names: string[];
  /** Days of validity (WebTransport pinning allows at most 14). */
  days: number;
  /** Make a CA certificate that may sign others. */
  ca?: boolean;
  /** Sign with this CA instead of self-signing. */
  issuer?: CertificateBundle;
}

function ipBytes(text: string): Uint8Array | undefined {
  if (/^\d+\.\d+\.\d+\.\d+$/.test(text)) {
    return new Uint8Array(text.split(".").map(Number));
  }
  if (!text.includes(":")) return undefined;
  const [head, tail] = text.split("::");
  const parse = (s: string | undefined) =>
    s ? s.split(":").map((h) => parseInt(h, 16)) : [];
  const left = parse(head);
  const right = parse(tail);
  const words = tail === undefined
    ? left
    : [...left, ...new Array(8 - left.length - right.length).fill(0), ...right];
  const out = new Uint8Array(16);
  words.forEach((w, i) => {
    out[i * 2] = w >> 8;
    out[i * 2 + 1] = w & 0xff;
  });
  return out;
}

function name(commonName: string): Uint8Array {
  return sequence(set(sequence(oid("2.5.4.3"), utf8String(commonName))));
}

function extension(id: string, critical: boolean, value: Uint8Array) {
  return critical
    ? sequence(oid(id), boolean(true), octetString(value))
    : sequence(oid(id), octetString(value));
}

/** Convert a raw r||s ECDSA signature to DER. */
function signatureToDer(raw: Uint8Array): Uint8Array {
  const half = raw.length / 2;
  return sequence(integer(raw.subarray(0, half)), integer(raw.subarray(half)));
}

/** Create an ECDSA P-256 certificate, self-signed or signed by `issuer`. */
export async function createCertificate(
  options: CertificateOptions,
): Promise<CertificateBundle> {
  const keys = await crypto.subtle.generateKey(ECDSA, true, [
    "sign",
    "verify",
  ]);
  const spki = new Uint8Array(
    await crypto.subtle.exportKey("spki", keys.publicKey),
  );
  const serial = crypto.getRandomValues(new Uint8Array(16));
  serial[0] &= 0x7f;
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + options.days * 86_400_000);
  const subjectName = options.names[0] ?? "localhost";
  const sans = options.names.map((n) => {
    const ip = ipBytes(n);
    return ip ? implicit(7, ip) : implicit(2, new TextEncoder().encode(n));
  });
  const extensions = [
    extension(
      "2.5.29.19",
      true,
      options.ca ? sequence(boolean(true)) : sequence(),
    ),
    extension(
      "2.5.29.15",
      true,
      // keyCertSign + cRLSign for a CA, digitalSignature for a leaf.
      options.ca
        ? new Uint8Array([0x03, 0x02, 0x01, 0x06])
        : new Uint8Array([0x03, 0x02, 0x07, 0x80]),
    ),
  ];
  if (!options.ca) {
    extensions.push(
      extension("2.5.29.17", false, sequence(...sans)),
      extension(
        "2.5.29.37",
        false,
        sequence(oid("1.3.6.1.5.5.7.3.1"), oid("1.3.6.1.5.5.7.3.2")),
      ),
    );
  }
  const algorithm = sequence(oid("1.2.840.10045.4.3.2"));
  const subject = options.ca ? `${subjectName} CA` : subjectName;
  const issuerName = name(options.issuer?.subject ?? subject);
  const tbs = sequence(
    explicit(0, smallInteger(2)),
    integer(serial),
    algorithm,
    issuerName,
    sequence(time(notBefore), time(notAfter)),
    name(subject),
    spki,
    explicit(3, sequence(...extensions)),
  );
  const signer = options.issuer?.privateKey ?? keys.privateKey;
  const raw = new Uint8Array(
    await crypto.subtle.sign(SIGN, signer, tbs as Uint8Array<ArrayBuffer>),
  );
  const der = sequence(tbs, algorithm, bitString(signatureToDer(raw)));
  const pkcs8 = new Uint8Array(
    await crypto.subtle.exportKey("pkcs8", keys.privateKey),
  );
  const digest = await crypto.subtle.digest(
    "SHA-256",
    der as Uint8Array<ArrayBuffer>,
  );
  return {
    certPem: toPem("CERTIFICATE", der),
    keyPem: toPem("PRIVATE KEY", pkcs8),
    der,
    sha256: toHex(new Uint8Array(digest)),
    notAfter,
    privateKey: keys.privateKey,
    subject,
  };
}

/** Join PEM blocks (a leaf and its CA) into one chain. */
export function chainPem(...pems: string[]): string {
  return pems.map((p) => p.trim()).join("\n") + "\n";
}
