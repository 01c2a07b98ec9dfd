/**
 * Web Push (PROTOCOL.md §10.2) without a browser vendor's push service: a
 * local HTTPS push endpoint stands in for it (the push protocol is plain
 * HTTPS). The test subscribes through the same command the web app uses,
 * mail arrives, and the test checks the VAPID signature and decrypts the
 * payload (RFC 8291, aes128gcm) with the subscription's own keys.
 */

import assert from "node:assert/strict";
import { createCertificate } from "../core/tls/mod.ts";
import { ErrorCode } from "../core/protocol/mod.ts";
import { waitFor } from "../testing/helpers.ts";
import { mailWorld } from "../testing/mail.ts";

const enc = new TextEncoder();

function b64url(text: string): Uint8Array<ArrayBuffer> {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
}

async function hkdf(
  salt: Uint8Array,
  ikm: Uint8Array,
  info: Uint8Array,
  bytes: number,
): Promise<Uint8Array<ArrayBuffer>> {
  const key = await crypto.subtle.importKey(
    "raw",
    concat(ikm),
    "HKDF",
    false,
    ["deriveBits"],
  );
  return new Uint8Array(
    await crypto.subtle.deriveBits(
      { name: "HKDF", hash: "SHA-256", salt: concat(salt), info: concat(info) },
      key,
      bytes * 8,
    ),
  );
}

/** Decrypt an `aes128gcm` push message (RFC 8291 §3.4, RFC 8188) with the user agent's keys. */
async function decryptPush(
  body: Uint8Array,
  ua: CryptoKeyPair,
  auth: Uint8Array,
): Promise<string> {
  const salt = body.subarray(0, 16);
  const idlen = body[20];
  const asPublic = body.subarray(21, 21 + idlen);
  const ciphertext = body.subarray(21 + idlen);
  const uaPublic = new Uint8Array(
    await crypto.subtle.exportKey("raw", ua.publicKey),
  );
  const sender = await crypto.subtle.importKey(
    "raw",
    concat(asPublic),
    { name: "ECDH", namedCurve: "P-256" },
    false,
    [],
  );
  const secret = new Uint8Array(
    await crypto.subtle.deriveBits(
      { name: "ECDH", public: sender },
      ua.privateKey,
      256,
    ),
  );
  const ikm = await hkdf(
    auth,
    secret,
    concat(enc.encode("WebPush: info\0"), uaPublic, asPublic),
    32,
  );
  const cek = await hkdf(
    salt,
    ikm,
    enc.encode("Content-Encoding: aes128gcm\0"),
    16,
  );
  const nonce = await hkdf(
    salt,
    ikm,
    enc.encode("Content-Encoding: nonce\0"),
    12,
  );
  const plain = new Uint8Array(
    await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: nonce },
      await crypto.subtle.importKey("raw", cek, "AES-GCM", false, ["decrypt"]),
      concat(ciphertext),
    ),
  );
  // The last record: data, the delimiter 2, then zeros.
  let end = plain.length;
  while (end > 0 && plain[end - 1] === 0) end--;
  assert.equal(plain[end - 1], 2, "the last record's padding delimiter");
  return new TextDecoder().decode(plain.subarray(0, end - 1));
}

/** Check a VAPID `Authorization` (RFC 8292): an ES256 JWT for the endpoint's origin, signed by `k`. */
async function checkVapid(
  authorization: string,
  origin: string,
  serverKey: Uint8Array,
): Promise<Record<string, unknown>> {
  const m = authorization.match(/^vapid t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)$/);
  assert.ok(m, authorization);
  const k = b64url(m[2]);
  assert.deepEqual(k, new Uint8Array(serverKey), "k is the server's VAPID key");
  const [head, claims, signature] = m[1].split(".");
  const key = await crypto.subtle.importKey(
    "raw",
    k,
    { name: "ECDSA", namedCurve: "P-256" },
    false,
    ["verify"],
  );
  assert.ok(
    await crypto.subtle.verify(
      { name: "ECDSA", hash: "SHA-256" },
      key,
      b64url(signature),
      enc.encode(`${head}.${claims}`),
    ),
    "the JWT is signed by the VAPID key",
  );
  const payload = JSON.parse(new TextDecoder().decode(b64url(claims)));
  assert.equal(payload.aud, origin);
  assert.ok(payload.exp * 1000 > Date.now());
  return payload;
}

interface Received {
  headers: Headers;
  body: Uint8Array;
}

Deno.test("push: new mail reaches a subscription's HTTPS endpoint, VAPID-signed and encrypted to its keys; E2E mail without its subject", async () => {
  const cert = await createCertificate({ names: ["127.0.0.1"], days: 2 });
  const dir = await Deno.makeTempDir({ prefix: "amtp-push-" });
  const caFile = `${dir}/ca.pem`;
  await Deno.writeTextFile(caFile, cert.certPem);
  const received: Received[] = [];
  let status = 201;
  const endpoint = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: cert.certPem,
    key: cert.keyPem,
    onListen() {},
  }, async (request) => {
    received.push({
      headers: request.headers,
      body: new Uint8Array(await request.arrayBuffer()),
    });
    return new Response(null, { status });
  });
  const origin = `https://127.0.0.1:${endpoint.addr.port}`;
  const w = await mailWorld({
    AMTP_CA_FILE: caFile,
    AMTP_PUSH_PRIVATE: "on",
    AMTP_PUSH_CONTACT: "mailto:ops@example.org",
  });
  try {
    const bob = await w.session("bob@example.org");
    const alice = await w.session("alice@example.org");
    const user = (command: string, params: Record<string, unknown> = {}) =>
      bob.client.request(command, { user_token: bob.token, ...params });
    const { vapid_public_key } = (await user("user_get_push_key")).data as {
      vapid_public_key: Uint8Array;
    };
    assert.equal(vapid_public_key.length, 65);
    // The browser's side of a subscription: a P-256 pair and a secret.
    const ua = await crypto.subtle.generateKey(
      { name: "ECDH", namedCurve: "P-256" },
      true,
      ["deriveBits"],
    ) as CryptoKeyPair;
    const auth = crypto.getRandomValues(new Uint8Array(16));
    const added = await user("user_add_push_subscription", {
      endpoint: `${origin}/push/bob-browser`,
      p256dh: new Uint8Array(
        await crypto.subtle.exportKey("raw", ua.publicKey),
      ),
      auth,
      label: "test browser",
      preview: "full",
    });
    assert.equal(added.error, 0, added.message);
    const listed = (await user("user_get_push_subscriptions")).data as {
      subscriptions: { id: string; label: string }[];
    };
    assert.deepEqual(listed.subscriptions.map((s) => s.label), [
      "test browser",
    ]);

    await alice.call("send", {
      to: ["bob@example.org"],
      subject: "lunch?",
      body: "at noon",
    });
    await waitFor(() => received.length === 1, 10_000, "the push");
    const push = received[0];
    assert.equal(push.headers.get("content-encoding"), "aes128gcm");
    assert.ok(Number(push.headers.get("ttl")) > 0);
    const claims = await checkVapid(
      push.headers.get("authorization")!,
      origin,
      vapid_public_key,
    );
    assert.equal(claims.sub, "mailto:ops@example.org");
    const text = await decryptPush(push.body, ua, auth);
    const data = JSON.parse(text);
    assert.equal(data.event, "message_new");
    assert.equal(data.account, "bob@example.org");
    assert.equal(data.from, "alice@example.org");
    assert.equal(data.subject, "lunch?");
    assert.equal(JSON.stringify(data).includes("at noon"), false);

    // End-to-end encrypted mail: never its subject, whatever preview says.
    await alice.call("send", {
      to: ["bob@example.org"],
      subject: "secret plans",
      body: new Uint8Array([1, 2, 3]),
      encrypted: true,
    });
    await waitFor(() => received.length === 2, 10_000, "the second push");
    const secret = JSON.parse(await decryptPush(received[1].body, ua, auth));
    assert.equal(secret.encrypted, true);
    assert.equal(secret.from, "alice@example.org");
    assert.equal(secret.subject, undefined);
    // A gone endpoint (404/410) drops the subscription.
    status = 410;
    await alice.call("send", {
      to: ["bob@example.org"],
      subject: "again",
      body: "y",
    });
    await waitFor(
      async () => {
        const r = (await user("user_get_push_subscriptions")).data as {
          subscriptions: unknown[];
        };
        return r.subscriptions.length === 0;
      },
      10_000,
      "the gone subscription to be dropped",
    );
    // Payloads are padded to one size: their length tells nothing.
    assert.equal(new Set(received.map((r) => r.body.length)).size, 1);
  } finally {
    await w.t.close();
    await endpoint.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("push: endpoints on the server's own network are refused unless allowed", async () => {
  const w = await mailWorld();
  try {
    const bob = await w.session("bob@example.org");
    for (
      const endpoint of [
        "https://127.0.0.1:8443/x",
        "https://10.1.2.3/x",
        "https://[::1]/x",
        "https://localhost/x",
        "http://push.example.com/x",
        "https://user:pw@push.example.com/x",
      ]
    ) {
      const r = await bob.client.request("user_add_push_subscription", {
        user_token: bob.token,
        endpoint,
        p256dh: new Uint8Array(65).fill(4, 0, 1),
        auth: new Uint8Array(16),
      });
      assert.equal(r.error, ErrorCode.INVALID_PARAMETER, endpoint);
    }
  } finally {
    await w.t.close();
  }
});
