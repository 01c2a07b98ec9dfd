/**
 * Ordinary email through a relay host (`AMTP_SMTP_RELAY*`), for servers whose
 * port 25 is blocked: the gateway logs in (AUTH) after STARTTLS, and trusts
 * the relay's certificate only when it chains to the system's CAs or, when
 * named, the admin's own (`AMTP_SMTP_RELAY_CA`, a file the module may read
 * by a declared permission). The relay is `smtp-server` on loopback (STARTTLS,
 * AUTH PLAIN/LOGIN required); a relay whose certificate nobody vouches for
 * gets nothing, not even the login.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { simpleParser } from "mailparser";
import { SMTPServer } from "smtp-server";
import { createCertificate } from "../core/tls/cert.ts";
import { SMTP_MAX_SIZE_CEILING } from "../core/config/mod.ts";
import { MAX_MESSAGE_BYTES } from "../workers/bridge/services.ts";
import { startEmailWorld } from "../testing/email_world.ts";
import { freePort } from "../testing/dnsmasq.ts";
import { waitFor } from "../testing/helpers.ts";
import { uploadAttachment } from "../testing/mail.ts";
import { postfixAvailable } from "../testing/postfix.ts";

Deno.test("config: the gateway's size ceiling (AMTP_SMTP_MAX_SIZE) is what crosses the module bridge in one call", () => {
  assert.equal(SMTP_MAX_SIZE_CEILING, MAX_MESSAGE_BYTES);
});

/** What the relay saw of one connection. */
interface Seen {
  secure: boolean;
  user?: string;
  from?: string;
  to: string[];
  raw?: Uint8Array;
}

Deno.test({
  name:
    "email out through a relay host: STARTTLS with a certificate of the admin's CA, then AUTH; an unvouched certificate gets nothing",
  ignore: !postfixAvailable(),
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const root = await Deno.makeTempDir({ prefix: "amtp-relay-" });
  const ca = await createCertificate({
    names: ["Relay Test CA"],
    days: 30,
    ca: true,
  });
  const caFile = `${root}/relay-ca.pem`;
  await Deno.writeTextFile(caFile, ca.certPem);
  const cert = await createCertificate({
    names: ["127.0.0.1"],
    days: 13,
    issuer: ca,
  });
  const seen: Seen[] = [];
  const logins: string[] = [];
  const relayPort = freePort();
  const relay = new SMTPServer({
    key: cert.keyPem,
    cert: cert.certPem,
    authMethods: ["PLAIN", "LOGIN"],
    // Port 587 rules: no AUTH before STARTTLS, no mail without AUTH.
    allowInsecureAuth: false,
    authOptional: false,
    logger: false,
    onConnect(_session, done) {
      seen.push({ secure: false, to: [] });
      done();
    },
    onSecure(_socket, _session, done) {
      seen.at(-1)!.secure = true;
      done();
    },
    onAuth(auth, _session, done) {
      logins.push(`${auth.username}:${auth.password}`);
      if (auth.username === "gateway" && auth.password === "s3cret") {
        seen.at(-1)!.user = auth.username;
        done(null, { user: auth.username });
      } else done(new Error("Invalid username or password"));
    },
    onMailFrom(address, _session, done) {
      seen.at(-1)!.from = address.address;
      done();
    },
    onRcptTo(address, _session, done) {
      seen.at(-1)!.to.push(address.address);
      done();
    },
    onData(stream, _session, done) {
      (async () => {
        const parts: Uint8Array[] = [];
        for await (const chunk of stream) parts.push(chunk);
        seen.at(-1)!.raw = Buffer.concat(parts);
        done();
      })();
    },
  });
  // The gateway's refusals of the certificate (TLS alerts) end up here.
  relay.on("error", () => {});
  await new Promise<void>((resolve) =>
    relay.listen(relayPort, "127.0.0.1", resolve)
  );
  const mail = await startEmailWorld({
    AMTP_FEDERATION_LIFETIME: "120",
    AMTP_SMTP_RELAY: `127.0.0.1:${relayPort}`,
    AMTP_SMTP_RELAY_USER: "gateway",
    AMTP_SMTP_RELAY_PASSWORD: "s3cret",
  });
  const { world, postfix } = mail;
  try {
    const bob = await world.mail("bob@example.test");
    const file = crypto.getRandomValues(new Uint8Array(40_000));
    const attachment = await uploadAttachment(bob, "photo.bin", file);
    await bob.call("send", {
      to: ["carol@other.test"],
      subject: "Through the relay",
      body: "Hello from behind a blocked port 25.\n",
      attachments: [attachment],
    });
    // Without the admin's CA the relay's certificate is refused: the queue
    // keeps the message, the relay sees no login and no mail.
    await waitFor(() => seen.length >= 2, 30_000, "two tries at the relay");
    assert.deepEqual(logins, []);
    assert.ok(
      seen.every((s) => !s.secure && s.from === undefined),
      JSON.stringify(seen),
    );
    // The admin names the CA: the gateway restarts with it and the queued
    // message goes through the relay, over TLS, logged in.
    const node = world.nodes[0];
    node.env.AMTP_SMTP_RELAY_CA = caFile;
    await node.server!.stop();
    await world.start(node);
    await waitFor(
      () => seen.some((s) => s.raw !== undefined),
      60_000,
      "the message at the relay",
    );
    const delivered = seen.find((s) => s.raw !== undefined)!;
    assert.equal(delivered.secure, true);
    assert.equal(delivered.user, "gateway");
    assert.equal(delivered.from, "bob@example.test");
    assert.deepEqual(delivered.to, ["carol@other.test"]);
    const parsed = await simpleParser(Buffer.from(delivered.raw!));
    assert.equal(parsed.subject, "Through the relay");
    // Signed by the sending domain before it left (the core signs).
    assert.match(
      new TextDecoder().decode(delivered.raw!),
      /^DKIM-Signature:[^]*?d=example\.test/im,
    );
    const got = parsed.attachments.find((a) => a.filename === "photo.bin");
    assert.ok(got, "the attachment");
    assert.deepEqual(new Uint8Array(got.content), file);
    // Postfix (the MX of other.test) got nothing directly.
    assert.deepEqual(await postfix.maildir("carol@other.test"), []);
  } finally {
    await mail.close();
    await new Promise<void>((resolve) => relay.close(() => resolve()));
    await Deno.remove(root, { recursive: true });
  }
});
