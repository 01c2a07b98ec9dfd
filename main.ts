/**
 * Start an AMTP server: configuration from the environment, then serve until
 * SIGINT or SIGTERM.
 *
 * @module
 */

import { ConfigError, loadConfig } from "./core/config/mod.ts";
import { loadEnvFile } from "./shared/env_file.ts";
import { Logger } from "./core/log/mod.ts";
import { startServer } from "./server/mod.ts";
import { raiseDescriptorLimit } from "./core/transport/mod.ts";

/** Where a running server tells local clients its address (`<data>/listening.json`). */
export function listeningFile(dataDir: string): string {
  return `${dataDir}/listening.json`;
}

if (import.meta.main) {
  // Settings from ./.env, when there is one; the environment wins.
  await loadEnvFile(".env");
  let config;
  try {
    config = loadConfig(Deno.env.toObject());
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`configuration error: ${error.message}`);
      Deno.exit(2);
    }
    throw error;
  }
  const log = new Logger({ level: config.logLevel, format: config.logFormat });
  // Every client TCP connection is a descriptor: use all the system allows.
  await raiseDescriptorLimit(log);
  let server;
  try {
    server = await startServer(config, { log });
  } catch (error) {
    // Data a newer server wrote, a port it cannot have: one line, not a stack.
    const code = (error as { code?: string }).code;
    if (
      code === "schema_too_new" || code === "data_too_new" ||
      code === "listen_failed"
    ) {
      console.error(`cannot start: ${(error as Error).message}`);
      Deno.exit(1);
    }
    throw error;
  }
  const where = config.host === "0.0.0.0" ? "localhost" : config.host;
  // One write: whoever reads the output gets the whole banner at once.
  const banner = [
    `AMTP server listening on ${config.host}:${server.port} (UDP: WebTransport, TCP: WebSocket)`,
    `  WebTransport: https://${where}:${server.port}/amtp`,
    `  WebSocket:    wss://${where}:${server.port}/amtp`,
    `  certificate sha256: ${server.certSha256()}${
      server.certificate().selfSigned
        ? " (self-signed: clients pin this hash)"
        : ""
    }`,
    `  data: ${config.dataDir}  kv: ${config.kvPath}`,
  ];
  if (server.metricsPort !== undefined) {
    banner.push(
      `  metrics: http://${config.metrics!.host}:${server.metricsPort}/metrics`,
    );
  }
  if (server.webUrl) {
    banner.push(`  web app: ${server.webUrl}  (open it in a browser)`);
  }
  if (server.modulePort !== undefined) {
    banner.push(
      `  remote modules: ${
        config.modulePort!.host
      }:${server.modulePort} (deno task module-run DIR --server HOST:${server.modulePort} --key FILE --cert-hash ${server.certSha256()})`,
    );
  }
  if (server.moduleSocket !== undefined) {
    banner.push(
      `  remote modules on this host: ${server.moduleSocket} (deno task module-run DIR --socket ${server.moduleSocket} --key FILE)`,
    );
  }
  if (server.bootstrap.created) {
    const away = server.port === 4433
      ? ""
      : ` --server ${where}:${server.port}`;
    banner.push(
      `  first admin "${server.bootstrap.created}" created; private key: ${server.bootstrap.keyFile}`,
      `  log in with: deno task amtp login --admin ${server.bootstrap.created} --key ${server.bootstrap.keyFile}${away}`,
    );
    if (server.webUrl) {
      banner.push(
        `  or in the web app: "Sign in as an admin" with the file ${server.bootstrap.keyFile}`,
      );
    }
  }
  // The CLI finds a local server here (the port may have been picked at start).
  const listening = listeningFile(config.dataDir);
  await Deno.writeTextFile(
    listening,
    JSON.stringify({
      host: config.host,
      port: server.port,
      hostname: config.hostname,
      web: server.webUrl,
      pid: Deno.pid,
      ...(server.metricsPort !== undefined
        ? { metrics_port: server.metricsPort }
        : {}),
      ...(server.modulePort !== undefined
        ? { module_port: server.modulePort }
        : {}),
      ...(server.moduleSocket !== undefined
        ? { module_socket: server.moduleSocket }
        : {}),
    }) + "\n",
  ).catch(() => {});
  console.log(banner.join("\n"));
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await server.close();
    await Deno.remove(listening).catch(() => {});
    // Let the closing frames of QUIC connections leave before exiting.
    await new Promise((resolve) => setTimeout(resolve, 100));
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
