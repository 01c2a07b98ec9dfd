/**
 * Mail by hand with the CLI, as a new user would: send with an attachment,
 * watch it arrive live, list, read and save the attachment, search.
 */

import assert from "node:assert/strict";
import {
  cleanEnv,
  cliEnv,
  runCli,
  startServerProcess,
  taskArgs,
} from "../testing/process.ts";

Deno.test("cli: send, watch, inbox, read with attachments, search", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "amtp-mailcli-" });
  const server = await startServerProcess(cwd, { AMTP_PORT: "0" });
  const as = (who: string) => ({
    AMTP_DATA: `${cwd}/data`,
    AMTP_CLI_STATE: `${cwd}/${who}.json`,
  });
  const ok = async (who: string, ...args: string[]) => {
    const r = await runCli(args, as(who), cwd);
    assert.equal(r.code, 0, `amtp ${args.join(" ")}\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  };
  try {
    const server1 = `127.0.0.1:${server.port}`;
    await ok(
      "admin",
      "login",
      "--admin",
      "admin",
      "--key",
      "data/admin.key",
      "--server",
      server1,
    );
    await ok("admin", "admin", "add-domain", "example.org");
    for (const name of ["alice", "bob"]) {
      await ok("admin", "keygen", "--out", name);
      await ok(
        "admin",
        "admin",
        "add-user",
        `${name}@example.org`,
        "--key",
        `${name}.pub`,
      );
      await ok(
        name,
        "login",
        "--user",
        `${name}@example.org`,
        "--key",
        `${name}.key`,
        "--server",
        server1,
      );
    }
    // Bob watches; Alice sends.
    const watch = new Deno.Command(Deno.execPath(), {
      args: ["run", ...taskArgs("amtp"), "watch", "--count", "1"],
      cwd,
      env: cleanEnv(cliEnv(as("bob"))),
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const reader = watch.stdout.pipeThrough(new TextDecoderStream())
      .getReader();
    let watched = "";
    while (!watched.includes("watching")) {
      watched += (await reader.read()).value ?? "";
    }
    const report = new Uint8Array(300_000).map((_, i) => (i * 7) % 256);
    await Deno.writeFile(`${cwd}/report.bin`, report);
    const sent = await ok(
      "alice",
      "send",
      "--to",
      "bob@example.org,ghost@example.org",
      "--subject",
      "Quarterly report",
      "--body",
      "Numbers attached.",
      "--attach",
      "report.bin",
    );
    assert.match(sent, /bob@example\.org: delivered/);
    assert.match(sent, /ghost@example\.org: failed \(error 201/);
    const messageId = sent.match(/message ([0-9a-f]+)/)![1];
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      watched += value;
    }
    assert.equal((await watch.status).code, 0);
    assert.match(
      watched,
      /new: N @ {2}[0-9a-f]+ .*alice@example\.org\s+Quarterly report/,
    );
    const inbox = await ok("bob", "inbox");
    assert.match(inbox, new RegExp(`${messageId}.*Quarterly report`));
    const read = await ok("bob", "read", messageId, "--save", "saved");
    assert.match(read, /Subject: Quarterly report/);
    assert.match(read, /Numbers attached\./);
    assert.match(read, /report\.bin \(300000 bytes.*checksum ok/);
    assert.deepEqual(await Deno.readFile(`${cwd}/saved/report.bin`), report);
    assert.match(await ok("bob", "inbox", "--unseen"), /no messages/);
    assert.match(await ok("bob", "search", "numbers"), /Quarterly report/);
    assert.match(
      await ok("alice", "inbox", "--folder", "sent"),
      /Quarterly report/,
    );
  } finally {
    await server.stop();
    await Deno.remove(cwd, { recursive: true });
  }
});
