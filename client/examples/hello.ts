/**
 * A program outside this repository using the AMTP client library: connect,
 * read `info`, and with an account log in, list the inbox and wait for new
 * mail. See docs/CLIENT.md for the set-up (a `deno.json` linking this
 * repository).
 *
 * ```sh
 * deno run --unstable-net --allow-net --allow-read hello.ts HOST:PORT CERT_SHA256 [ADDRESS KEY_FILE [SECONDS]]
 * ```
 *
 * @module
 */

import { AmtpClient, keyFromPem, type Push } from "@amtp/server/client";

const [server, certHash, address, keyFile, seconds] = Deno.args;
if (!server || !certHash) {
  console.error(
    "usage: hello.ts HOST:PORT CERT_SHA256 [ADDRESS KEY_FILE [SECONDS]]",
  );
  Deno.exit(2);
}

// One WebTransport session; the hash pins a self-signed certificate.
const client = await AmtpClient.connect({
  url: `https://${server}/amtp`,
  certHash,
});
const info = await client.call<{ app_name: string; hostname: string }>("info");
console.log(`connected to ${info.app_name} (${info.hostname})`);

if (address && keyFile) {
  // Challenge-response: the private key never leaves this program.
  const key = await keyFromPem(await Deno.readTextFile(keyFile));
  const { token } = await client.login("user", address, key);
  const mail = <T>(command: string, params: Record<string, unknown> = {}) =>
    client.call<T>(command, {
      module: "messages",
      user_token: token,
      ...params,
    });
  const inbox = await mail<{ messages: { from: string; subject: string }[] }>(
    "list",
    { folder: "inbox", limit: 10 },
  );
  console.log(`${address}: ${inbox.messages.length} message(s) in the inbox`);
  for (const m of inbox.messages) console.log(`  ${m.from}: ${m.subject}`);
  // New mail arrives as a push (the session was bound by the token's use).
  const wait = Number(seconds ?? 0);
  if (wait > 0) {
    console.log(`waiting ${wait} s for new mail`);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, wait * 1000);
      client.onPush((push: Push) => {
        if (push.event !== "message_new") return;
        const data = push.data as { from: string; subject: string };
        console.log(`new: ${data.from}: ${data.subject}`);
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
client.close();
