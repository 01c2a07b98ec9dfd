/**
 * What the server's admin sets for the gateway through the environment
 * (granted in module.json): read once at start, each value checked; a bad
 * one stops the start with the variable named.
 *
 * @module
 */

import { MAX_MESSAGE_BYTES } from "../../../workers/sdk/mod.ts";

/** The gateway's settings. */
export interface Settings {
  /** The name it greets with (EHLO, banner): `AMTP_HOSTNAME`. */
  hostname: string;
  /** Listen address (`AMTP_SMTP_HOST`, 0.0.0.0). */
  host: string;
  /** Listen port (`AMTP_SMTP_PORT`, 2525; 25 in production). */
  port: number;
  /** Port of other mail servers (`AMTP_SMTP_REMOTE_PORT`, 25; tests set another). */
  remotePort: number;
  /**
   * A relay to send everything through (`AMTP_SMTP_RELAY`, host:port), if
   * any, with its login (`AMTP_SMTP_RELAY_USER`, `AMTP_SMTP_RELAY_PASSWORD`)
   * and the CA certificates its certificate must chain to instead of the
   * system's (`AMTP_SMTP_RELAY_CA`: a PEM file, read at start).
   */
  relay?: {
    host: string;
    port: number;
    user?: string;
    password?: string;
    ca?: string;
  };
  /** Name server `ip:port` (`AMTP_DNS`), or the system's. */
  dns?: { ipAddr: string; port: number };
  /** Largest message in bytes (`AMTP_SMTP_MAX_SIZE`). */
  maxSize: number;
  /** Recipients of one message (`AMTP_SMTP_MAX_RECIPIENTS`). */
  maxRecipients: number;
  /** Connections at once (`AMTP_SMTP_MAX_CONNECTIONS`). */
  maxConnections: number;
  /** Connections at once from one IP address (`AMTP_SMTP_MAX_PER_IP`). */
  maxPerIp: number;
  /** Messages per minute from one IP address (`AMTP_SMTP_RATE`). */
  rate: number;
  /** Seconds of silence before a connection is dropped, either way (`AMTP_SMTP_TIMEOUT`). */
  timeout: number;
}

/** A setting with a bad value. */
export class SettingError extends Error {
  /** Stable error code. */
  readonly code = "setting_invalid";

  /** Name the variable and what it allows. */
  constructor(variable: string, allowed: string) {
    super(`${variable}: ${allowed}`);
    this.name = "SettingError";
  }
}

function read(name: string): string | undefined {
  try {
    const value = Deno.env.get(name);
    return value === "" ? undefined : value;
  } catch {
    return undefined; // not granted: the default
  }
}

function whole(name: string, fallback: number, min: number, max: number) {
  const raw = read(name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new SettingError(name, `a whole number from ${min} to ${max}`);
  }
  return value;
}

function hostPort(name: string, raw: string): { host: string; port: number } {
  const at = raw.lastIndexOf(":");
  const port = Number(raw.slice(at + 1));
  const host = raw.slice(0, at).replace(/^\[|\]$/g, "");
  if (at < 1 || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new SettingError(name, "host:port");
  }
  return { host, port };
}

/** The PEM certificates of a CA file, or undefined when none is named. */
function caFile(path: string | undefined): string | undefined {
  if (path === undefined) return undefined;
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    throw new SettingError(
      "AMTP_SMTP_RELAY_CA",
      `a readable PEM file (${(error as Error).message})`,
    );
  }
  if (!text.includes("-----BEGIN CERTIFICATE-----")) {
    throw new SettingError("AMTP_SMTP_RELAY_CA", "a PEM file of certificates");
  }
  return text;
}

/** Read the settings. */
export function loadSettings(): Settings {
  const relay = read("AMTP_SMTP_RELAY");
  const dns = read("AMTP_DNS");
  return {
    hostname: read("AMTP_HOSTNAME") ?? "localhost",
    host: read("AMTP_SMTP_HOST") ?? "0.0.0.0",
    port: whole("AMTP_SMTP_PORT", 2525, 0, 65535),
    remotePort: whole("AMTP_SMTP_REMOTE_PORT", 25, 1, 65535),
    relay: relay
      ? {
        ...hostPort("AMTP_SMTP_RELAY", relay),
        user: read("AMTP_SMTP_RELAY_USER"),
        password: read("AMTP_SMTP_RELAY_PASSWORD"),
        ca: caFile(read("AMTP_SMTP_RELAY_CA")),
      }
      : undefined,
    dns: dns
      ? (({ host, port }) => ({ ipAddr: host, port }))(
        hostPort("AMTP_DNS", dns),
      )
      : undefined,
    maxSize: whole(
      "AMTP_SMTP_MAX_SIZE",
      10 * 1024 * 1024,
      1024,
      MAX_MESSAGE_BYTES,
    ),
    maxRecipients: whole("AMTP_SMTP_MAX_RECIPIENTS", 100, 1, 1000),
    maxConnections: whole("AMTP_SMTP_MAX_CONNECTIONS", 200, 1, 10_000),
    maxPerIp: whole("AMTP_SMTP_MAX_PER_IP", 20, 1, 10_000),
    rate: whole("AMTP_SMTP_RATE", 120, 1, 1_000_000),
    timeout: whole("AMTP_SMTP_TIMEOUT", 60, 5, 3600),
  };
}
