/**
 * Commands that need no login: `ping` and `info`.
 *
 * @module
 */

import { type Command, defineCommand } from "../protocol/mod.ts";
import {
  APP_NAME,
  APP_VERSION,
  PROTOCOL_VERSION,
} from "../../shared/version.ts";

/** What `info` reports; supplied by the server at start. */
export interface InfoSource {
  /** The server's host name. */
  hostname: string;
  /** Login key algorithms accepted. */
  loginAlgorithms: readonly string[];
  /** Limits a client must respect. */
  limits: Record<string, number>;
  /** SHA-256 of the TLS certificate in use (hex). */
  certificateSha256: () => string;
  /** Modules available to clients, name and versions. */
  modules: () => { name: string; versions: string[]; default?: string }[];
}

/** The `ping` and `info` commands. */
export function infoCommands(source: InfoSource): Command[] {
  return [
    defineCommand({
      name: "ping",
      auth: "none",
      params: {},
      handler: () => ({ pong: true, time: new Date() }),
    }),
    defineCommand({
      name: "info",
      auth: "none",
      params: {},
      handler: () => ({
        app_name: APP_NAME,
        app_version: APP_VERSION,
        protocol_version: PROTOCOL_VERSION,
        hostname: source.hostname,
        login_algorithms: [...source.loginAlgorithms],
        limits: source.limits,
        certificate_sha256: source.certificateSha256(),
        modules: source.modules(),
      }),
    }),
  ];
}
