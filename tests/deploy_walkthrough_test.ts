/**
 * docs/DEPLOY.md's "From a fresh server, step by step", followed as a
 * newcomer would on loopback: its settings block (read from the document,
 * names and paths mapped to the test's), the server started as the unit
 * starts it, Pebble as the CA, dnsmasq as the public DNS, then the CLI: log
 * in as the first admin, add the domain, publish what `amtp dns` prints
 * until every record is `ok`, and a backup.
 */

import assert from "node:assert/strict";
import { freePort, startDns } from "../testing/dnsmasq.ts";
import { havePebble, startPebble } from "../testing/pebble.ts";
import {
  cleanEnv,
  runCli,
  startServerProcess,
  taskArgs,
} from "../testing/process.ts";
import { waitFor } from "../testing/helpers.ts";

const ROOT = new URL("../", import.meta.url).pathname.replace(/\/$/, "");

/** The settings of step 2 of docs/DEPLOY.md, as name/value pairs. */
async function documentedSettings(): Promise<Record<string, string>> {
  const doc = await Deno.readTextFile(`${ROOT}/docs/DEPLOY.md`);
  const step = doc.slice(doc.indexOf("2. **Settings**"));
  const block = step.match(/```sh\n([\s\S]*?)```/)![1];
  const settings: Record<string, string> = {};
  for (const line of block.split("\n")) {
    const match = line.trim().match(/^(AMTP_\w+)=(\S+)/);
    if (match) settings[match[1]] = match[2];
  }
  return settings;
}

Deno.test({
  name:
    "deploy walkthrough: DEPLOY.md's steps on loopback with Pebble as the CA give a CA-certified server that passes its own DNS check and backs up",
  ignore: !havePebble(),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "amtp-walk-" });
    const dns = await startDns(dir);
    const port = freePort();
    const httpPort = freePort();
    const pebble = await startPebble(dir, {
      dns: dns.address,
      tlsPort: port,
      httpPort,
    });
    const txt: [string, string][] = [];
    const publish = () =>
      dns.set({
        txt,
        hosts: [
          ["mail.example.test", "127.0.0.1"],
          ["amtp-policy.example.test", "127.0.0.1"],
        ],
      });
    await publish();
    const data = `${dir}/var-lib-amtp`;
    const metricsPort = freePort();
    // Step 2 as written, with the test's names, paths and ports.
    const documented = await documentedSettings();
    assert.deepEqual(Object.keys(documented).sort(), [
      "AMTP_ACME",
      "AMTP_ACME_EMAIL",
      "AMTP_ACME_NAMES",
      "AMTP_BACKUP_DIR",
      "AMTP_HOSTNAME",
      "AMTP_METRICS_PORT",
    ]);
    const settings: Record<string, string> = {};
    for (const [name, value] of Object.entries(documented)) {
      settings[name] = value.replaceAll("example.org", "example.test")
        .replace("/var/lib/amtp", data);
    }
    settings.AMTP_METRICS_PORT = String(metricsPort);
    const roots = `${dir}/pebble-roots.pem`;
    let server;
    try {
      await Deno.mkdir(data);
      await Deno.writeTextFile(roots, await pebble.roots());
      // What the unit sets, then what only a test needs: Pebble instead of
      // Let's Encrypt, dnsmasq instead of the public DNS, free ports.
      server = await startServerProcess(dir, {
        ...settings,
        AMTP_DATA: data,
        AMTP_PORT: String(port),
        AMTP_HOST: "127.0.0.1",
        AMTP_ACME_DIRECTORY: pebble.directory,
        AMTP_ACME_CA: pebble.caFile,
        AMTP_ACME_HTTP_PORT: String(httpPort),
        AMTP_DNS: dns.address,
        AMTP_DNS_CACHE: "0",
        // Pebble's root among those trusted (Let's Encrypt's are the system's).
        AMTP_CA_FILE: roots,
      }, { args: ["task", "--cwd", ROOT, "start"] });
      // Step 3: the certificate arrives; the server is ready.
      await waitFor(
        () => server!.stderr().includes("event=acme_issued"),
        30_000,
        "the ACME certificate",
      );
      const ready = await fetch(`http://127.0.0.1:${metricsPort}/readyz`);
      assert.equal(await ready.text(), "ready\n");

      // Step 4: the first admin logs in with the CLI, verifying the CA's
      // certificate and the name (through the test's DNS).
      const cli = {
        AMTP_DNS: dns.address,
        AMTP_CLI_STATE: `${dir}/cli.json`,
      };
      const login = await runCli([
        "login",
        "--admin",
        "admin",
        "--key",
        `${data}/admin.key`,
        "--server",
        `mail.example.test:${port}`,
        "--ca",
        roots,
      ], cli);
      assert.equal(login.code, 0, login.stdout + login.stderr);
      const added = await runCli(
        ["admin", "add-domain", "example.test"],
        cli,
      );
      assert.equal(added.code, 0, added.stdout + added.stderr);

      // Step 5: publish what `amtp dns` prints until every line is ok.
      const first = await runCli(["dns", "example.test"], cli);
      assert.equal(first.code, 1, first.stdout + first.stderr);
      assert.match(first.stdout, /Records to publish for mail\.example\.test/);
      for (
        const [, name, value] of first.stdout.matchAll(
          /^MISSING\s+(\S+)\. IN TXT "([^"]+)"/gm,
        )
      ) txt.push([name, value]);
      assert.ok(txt.length >= 2, first.stdout);
      await publish();
      const second = await runCli(["dns", "example.test"], cli);
      assert.equal(second.code, 0, second.stdout + second.stderr);
      assert.doesNotMatch(second.stdout, /MISSING|WRONG/);

      // Step 6: a backup while it runs.
      const backup = await new Deno.Command(Deno.execPath(), {
        args: ["run", ...taskArgs("admin"), "backup", `${dir}/backup`],
        env: cleanEnv({ AMTP_DATA: data }),
        clearEnv: true,
      }).output();
      assert.equal(backup.code, 0, new TextDecoder().decode(backup.stderr));
      await Deno.stat(`${dir}/backup/manifest.json`);
      await Deno.stat(`${dir}/backup/acme/certificate.json`);
    } finally {
      await server?.stop();
      await pebble.stop();
      await dns.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
