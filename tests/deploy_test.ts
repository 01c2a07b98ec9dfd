/**
 * The deployment files as an operator uses them: `deploy/amtp.service`
 * passes `systemd-analyze verify` with no warning and keeps its hardening
 * (`systemd-analyze security` exposure), and its `ExecStart` command starts
 * the server from another working folder.
 */

import assert from "node:assert/strict";
import { startServerProcess } from "../testing/process.ts";

const ROOT = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
const UNIT = `${ROOT}/deploy/amtp.service`;

function haveSystemdAnalyze(): boolean {
  try {
    return Deno.statSync("/usr/bin/systemd-analyze").isFile;
  } catch {
    return false;
  }
}

/** The unit with its Deno path replaced by this Deno's (verify checks it exists). */
async function unitHere(dir: string): Promise<string> {
  const text = (await Deno.readTextFile(UNIT)).replaceAll(
    "/usr/bin/deno",
    Deno.execPath(),
  );
  const path = `${dir}/amtp.service`;
  await Deno.writeTextFile(path, text);
  return path;
}

async function analyze(...args: string[]) {
  const out = await new Deno.Command("/usr/bin/systemd-analyze", {
    args,
    env: { SYSTEMD_COLORS: "0", SYSTEMD_PAGER: "" },
  }).output();
  const text = new TextDecoder();
  return {
    code: out.code,
    stdout: text.decode(out.stdout),
    stderr: text.decode(out.stderr),
  };
}

Deno.test({
  name:
    "deploy: amtp.service passes systemd-analyze verify without a warning, and its exposure stays low",
  ignore: !haveSystemdAnalyze(),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "amtp-unit-" });
    try {
      const unit = await unitHere(dir);
      const verify = await analyze("verify", unit);
      assert.equal(verify.code, 0, verify.stderr);
      assert.equal(verify.stderr.trim(), "");
      // The check can fail: an unknown directive is reported.
      await Deno.writeTextFile(
        unit,
        (await Deno.readTextFile(unit)).replace(
          "ProtectSystem=",
          "ProtectSystm=",
        ),
      );
      const broken = await analyze("verify", unit);
      assert.match(broken.stderr, /Unknown key 'ProtectSystm'/);

      const unitText = await Deno.readTextFile(UNIT);
      for (
        const line of [
          "DynamicUser=yes",
          "ProtectSystem=strict",
          "StateDirectory=amtp",
          "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
          "AmbientCapabilities=CAP_NET_BIND_SERVICE",
          "NoNewPrivileges=yes",
          "Restart=on-failure",
          "KillSignal=SIGTERM",
        ]
      ) assert.ok(unitText.includes(`\n${line}\n`), line);
      const security = await analyze(
        "security",
        "--offline=yes",
        await unitHere(dir),
      );
      const exposure = Number(
        security.stdout.match(/Overall exposure level for [^:]+: ([\d.]+)/)
          ?.[1],
      );
      assert.ok(exposure <= 2.0, `exposure ${exposure}\n${security.stdout}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("deploy: the unit's ExecStart (deno task --cwd <checkout> start) starts the server from another working folder", async () => {
  const unitText = await Deno.readTextFile(UNIT);
  const exec = unitText.match(/^ExecStart=(\S+) (.*)$/m)!;
  assert.equal(exec[2], "task --cwd /opt/amtp start");
  const dir = await Deno.makeTempDir({ prefix: "amtp-unit-" });
  const server = await startServerProcess(dir, {
    AMTP_DATA: `${dir}/data`,
    AMTP_PORT: "0",
    AMTP_HOST: "127.0.0.1",
  }, { args: exec[2].replace("/opt/amtp", ROOT).split(" ") });
  try {
    assert.ok(server.port > 0);
    await Deno.stat(`${dir}/data/amtp.kv`);
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
