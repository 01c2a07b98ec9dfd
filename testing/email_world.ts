/**
 * An AMTP server with its SMTP gateway on, beside a real Postfix, with the
 * DNS of both domains in dnsmasq: the world the email tests run in.
 *
 * - `example.test` is hosted by the AMTP server `mx.example.test` (MX record
 *   naming it); Postfix relays mail for it to the gateway's port.
 * - `other.test` is hosted by Postfix (Maildirs); its MX names
 *   `postfix.other.test`, and the gateway sends to Postfix's port.
 * - `sender.test` is a domain that sends through Postfix: SPF allows
 *   127.0.0.1, a DKIM key (RSA, the test signs with it) and a DMARC reject
 *   policy are published; `bank.test` publishes only SPF excluding
 *   127.0.0.1 and DMARC reject (a forgery target).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { generateKeyPairSync } from "node:crypto";
import { dkimSign } from "mailauth/lib/dkim/sign.js";
import { freePort } from "./dnsmasq.ts";
import { startWorld, type World } from "./federation_world.ts";
import { type Postfix, startPostfix } from "./postfix.ts";

/** The email world. */
export interface EmailWorld {
  /** The AMTP side. */
  world: World;
  /** Postfix. */
  postfix: Postfix;
  /** The gateway's SMTP port. */
  port: number;
  /** Sign a message as `sender.test` (DKIM, RSA, selector `s1`). */
  sign(raw: Uint8Array): Promise<Uint8Array>;
  /** Publish the zone again, with `extra` TXT records beside the others. */
  publish(extra?: [string, string][]): Promise<void>;
  /** Stop everything. */
  close(): Promise<void>;
}

/** Start the email world; `env` adds to the AMTP server's environment. */
export async function startEmailWorld(
  env: Record<string, string> = {},
): Promise<EmailWorld> {
  const port = freePort();
  const postfix = await startPostfix({
    mailboxes: ["carol@other.test", "dave@other.test"],
    failing: ["gone@other.test"],
    relay: { "example.test": { host: "127.0.0.1", port } },
    hostname: "postfix.other.test",
  });
  let world: World;
  try {
    world = await startWorld([["mx.example.test", "example.test"]], {
      AMTP_MODULES_OFF: "",
      AMTP_SMTP_HOST: "127.0.0.1",
      AMTP_SMTP_PORT: String(port),
      AMTP_SMTP_REMOTE_PORT: String(postfix.port),
      ...env,
    });
  } catch (error) {
    await postfix.close();
    throw error;
  }
  const { privateKey, publicKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
  });
  const privatePem = privateKey.export({ type: "pkcs8", format: "pem" })
    .toString();
  const publicDer = publicKey.export({ type: "spki", format: "der" });
  const txt: [string, string][] = [
    ["sender.test", "v=spf1 ip4:127.0.0.1 -all"],
    [
      "s1._domainkey.sender.test",
      `v=DKIM1; k=rsa; p=${Buffer.from(publicDer).toString("base64")}`,
    ],
    ["_dmarc.sender.test", "v=DMARC1; p=reject"],
    ["bank.test", "v=spf1 ip4:192.0.2.1 -all"],
    ["_dmarc.bank.test", "v=DMARC1; p=reject"],
    ["other.test", "v=spf1 ip4:127.0.0.1 -all"],
  ];
  const publish = async (extra: [string, string][] = []) => {
    await world.publish({
      append: [...txt, ...extra],
      policies: ["example.test"],
      hosts: [["postfix.other.test", "127.0.0.1"]],
      mx: [
        ["example.test", "mx.example.test", 10],
        ["other.test", "postfix.other.test", 10],
      ],
    });
  };
  await publish();
  return {
    world,
    postfix,
    port,
    publish,
    async sign(raw) {
      const key = {
        signingDomain: "sender.test",
        selector: "s1",
        privateKey: privatePem,
        algorithm: "rsa-sha256",
        canonicalization: "relaxed/relaxed",
      };
      // The signer reads `signatureData` (the top-level copy is its type's).
      const signed = await dkimSign(Buffer.from(raw), {
        ...key,
        signatureData: [key],
      });
      const head = new TextEncoder().encode(signed.signatures);
      const out = new Uint8Array(head.length + raw.length);
      out.set(head);
      out.set(raw, head.length);
      return out;
    },
    async close() {
      await world.close();
      await postfix.close();
    },
  };
}
