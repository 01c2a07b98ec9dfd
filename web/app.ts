/// <reference lib="dom" />
/**
 * The web check page: the AMTP client library in a browser.
 *
 * @module
 */

import { AmtpClient } from "../client/mod.ts";

const params = new URLSearchParams(location.search);
const server = document.querySelector<HTMLInputElement>("#server")!;
const hash = document.querySelector<HTMLInputElement>("#hash")!;
const result = document.querySelector<HTMLDivElement>("#result")!;
server.value = params.get("server") ?? "";
hash.value = params.get("hash") ?? "";

async function check(): Promise<void> {
  result.className = "";
  result.textContent = "Connecting…";
  try {
    const client = await AmtpClient.connect({
      url: `https://${server.value.trim()}/amtp`,
      certHash: hash.value.trim() || undefined,
      keepAliveMs: 0,
    });
    const info = await client.call<
      {
        app_name: string;
        app_version: string;
        hostname: string;
        login_algorithms: string[];
        modules: { name: string }[];
      }
    >("info");
    const t0 = performance.now();
    await client.call("ping");
    const ms = performance.now() - t0;
    client.close();
    result.className = "ok";
    result.textContent = [
      `Connected over WebTransport.`,
      `server: ${info.app_name} ${info.app_version} (${info.hostname})`,
      `login algorithms: ${info.login_algorithms.join(", ")}`,
      `modules: ${info.modules.map((m) => m.name).join(", ") || "(none)"}`,
      `ping round trip: ${ms.toFixed(1)} ms`,
    ].join("\n");
  } catch (error) {
    result.className = "fail";
    result.textContent = `Failed: ${
      error instanceof Error ? error.message : String(error)
    }`;
  }
}

document.querySelector("#connect")!.addEventListener("click", check);
if (params.has("auto")) check();
