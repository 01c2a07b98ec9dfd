/**
 * Server configuration: the one place that knows every `AMTP_*` variable.
 *
 * Every variable has a default so that `deno task start` works on first run
 * with no configuration at all. An invalid value stops the start with a
 * {@link ConfigError} naming the variable and what it allows.
 *
 * @module
 */

import type { LogFormat, LogLevel } from "../log/mod.ts";

export type { LogFormat, LogLevel } from "../log/mod.ts";

/** The validated server configuration. */
export interface Config {
  /** Listen address for both QUIC (UDP) and WebSocket/HTTPS (TCP). */
  host: string;
  /** One port number: UDP for QUIC, TCP for WebSocket/HTTPS. 0 picks a free one. */
  port: number;
  /** Data folder (KV file, certificates, first admin key). */
  dataDir: string;
  /** Deno KV path or KV Connect URL. */
  kvPath: string;
  /** The name clients and other servers use for this server. */
  hostname: string;
  /** PEM certificate file, or undefined for a generated self-signed one. */
  certFile?: string;
  /** PEM private key file, or undefined for a generated self-signed one. */
  keyFile?: string;
  /** Minimum level of log lines written. */
  logLevel: LogLevel;
  /** `text` (logfmt) or `json` (one JSON object per line). */
  logFormat: LogFormat;
  /** Largest accepted frame (BSON document) in bytes. */
  maxFrame: number;
  /** Simultaneous sessions allowed from one client IP address. */
  maxSessionsPerIp: number;
  /** Simultaneous sessions allowed in total. */
  maxSessions: number;
  /** Seconds without any frame from a client before its session is closed. */
  idleTimeout: number;
  /**
   * Seconds a new connection has to establish its session: TLS and the
   * HTTP request head (TCP), or QUIC, WebTransport CONNECT and first stream.
   */
  handshakeTimeout: number;
  /** Descriptors kept free beyond those open at start (KV, modules, outbound connections). */
  descriptorReserve: number;
  /** Requests per second allowed on one session (token bucket, burst twice this). */
  rateLimit: number;
  /** Requests of one session being processed at once; reading pauses beyond it. */
  maxInflight: number;
  /** Bytes per second of large answers per session (0: unpaced). */
  transferRate: number;
  /** Bytes per second of large answers per user, all sessions together (0: none). */
  transferRateUser: number;
  /** Seconds an admin token stays valid after its last use. */
  adminTokenTtl: number;
  /** Seconds a user token stays valid after its last use. */
  userTokenTtl: number;
  /** Seconds a login challenge stays valid. */
  challengeTtl: number;
  /** Seconds a command may run before it is answered with a timeout. */
  commandTimeout: number;
  /** Folder of modules (`<name>/<version>/module.json`). */
  modulesDir: string;
  /** Modules not started at start (an admin may still load them). */
  modulesOff: string[];
  /**
   * Where modules keep their data: `files` (each its own KV database in
   * `<dataDir>/modules/`, opened inside its sandbox) or `core` (the core's
   * database, through the core: for KV Connect deployments without a disk).
   */
  moduleStorage: "files" | "core";
  /**
   * The module port (remote modules over WebTransport and WebSocket, on UDP
   * and TCP), or undefined when off; port 0 picks a free one.
   */
  modulePort?: { host: string; port: number };
  /** The Unix socket remote modules on this host connect to, or undefined when off. */
  moduleSocket?: string;
  /** Name server `ip:port` for federation lookups; the system resolver when absent. */
  dns?: string;
  /** PEM file of extra CAs trusted for other servers. */
  caFile?: string;
  /** Seconds a queued remote delivery may wait before it bounces. */
  federationLifetime: number;
  /** Seconds an instance holds a queued delivery it took (another takes it over after). */
  queueLease: number;
  /** Milliseconds between reads of other instances' pushes; 0: this is the only instance. */
  clusterPoll: number;
  /** First retry delay of a remote delivery in seconds. */
  federationRetry: number;
  /** Longest retry delay of a remote delivery in seconds. */
  federationRetryMax: number;
  /** Seconds allowed to connect to another server. */
  federationTimeout: number;
  /** Remote deliveries per request for a domain's backlog (1: each alone). */
  federationBatch: number;
  /** Algorithm of a new server signing key. */
  serverKeyAlgorithm: "ed25519" | "rsa";
  /** Seconds federation reuses a DNS answer. */
  dnsCache: number;
  /** The delivery policy this server publishes for its domains: `enforce`, `testing` or `off`. */
  policyMode: "enforce" | "testing" | "off";
  /** Seconds other servers may cache the published policy. */
  policyMaxAge: number;
  /** Servers (`host[:port]`) the policy lists; this server alone when empty. */
  policyServers: string[];
  /** `amtp-dkim` values of the other servers of these domains, added to the policy's keys. */
  policyKeys: string[];
  /** Listen address of QUIC (UDP); `host` unless set. */
  udpHost: string;
  /** Listen address of TLS/WebSocket (TCP); `host` unless set. */
  tcpHost: string;
  /** Certificates from an ACME CA, or undefined when off. */
  acme?: AcmeConfig;
  /** The metrics listener (`/metrics`, `/healthz`, `/readyz`), or undefined when off. */
  metrics?: { host: string; port: number };
  /** Backups taken by the server itself, or undefined when off. */
  backup?: { dir: string; everySeconds: number; keep: number };
  /** Serve the web app (on the TCP port, and on loopback with a self-signed certificate). */
  web: boolean;
  /** Port of the web app's loopback listener (`http://localhost:PORT`); 0 picks a free one. */
  webPort: number;
  /** Whether `AMTP_WEB_PORT` was set (the loopback listener then runs with a CA certificate too). */
  webPortSet: boolean;
  /** `host:port` browsers reach the AMTP port at, when it differs from this server's (a port mapping). */
  webConnect?: string;
  /** The VAPID contact (`mailto:` or `https:`) push services see. */
  pushContact: string;
  /** Allow push endpoints on loopback and private addresses. */
  pushPrivate: boolean;
  /**
   * The email gateway's settings (`AMTP_SMTP_*`). The gateway module reads
   * them itself; they are checked here too, so a bad one stops the start
   * with the variable named rather than leaving the module failing.
   */
  smtp: SmtpConfig;
}

/** The email gateway's settings, checked. */
export interface SmtpConfig {
  /** Listen address (`AMTP_SMTP_HOST`). */
  host: string;
  /** Listen port (`AMTP_SMTP_PORT`). */
  port: number;
  /** Port of other mail servers (`AMTP_SMTP_REMOTE_PORT`). */
  remotePort: number;
  /** The relay (`AMTP_SMTP_RELAY`, host:port), its login and extra CA file. */
  relay?: { host: string; port: number; user?: string; caFile?: string };
  /** Largest message received (`AMTP_SMTP_MAX_SIZE`). */
  maxSize: number;
  /** Recipients of one message (`AMTP_SMTP_MAX_RECIPIENTS`). */
  maxRecipients: number;
  /** Connections at once (`AMTP_SMTP_MAX_CONNECTIONS`). */
  maxConnections: number;
  /** Connections at once from one IP address (`AMTP_SMTP_MAX_PER_IP`). */
  maxPerIp: number;
  /** Messages per minute from one IP address (`AMTP_SMTP_RATE`). */
  rate: number;
  /** Seconds of silence before a connection is dropped (`AMTP_SMTP_TIMEOUT`). */
  timeout: number;
}

/**
 * Largest email the gateway may take (`AMTP_SMTP_MAX_SIZE` at most): what
 * crosses the module bridge in one call (`MAX_MESSAGE_BYTES` of
 * workers/bridge/services.ts, equal by a test).
 */
export const SMTP_MAX_SIZE_CEILING = 15 * 1024 * 1024;

/** Certificates from an ACME CA (RFC 8555). */
export interface AcmeConfig {
  /** The CA's directory URL. */
  directory: string;
  /** Contact address of the ACME account. */
  email: string;
  /** Names of the certificate: `AMTP_HOSTNAME` first, then `AMTP_ACME_NAMES`. */
  names: string[];
  /** Port of the HTTP-01 challenge listener (80 for a public CA). */
  httpPort: number;
  /** PEM file of CAs trusted for the directory's HTTPS (a test CA); system roots otherwise. */
  caFile?: string;
}

/** Let's Encrypt's production directory. */
export const LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory";

/** A configuration variable with an invalid value. */
export class ConfigError extends Error {
  /** Stable error code. */
  readonly code = "config_invalid";
  /** The variable at fault. */
  readonly variable: string;

  /** Create an error for `variable`, saying what is allowed. */
  constructor(variable: string, message: string) {
    super(`${variable}: ${message}`);
    this.name = "ConfigError";
    this.variable = variable;
  }
}

/** Description of one variable, used for validation and for the README table. */
export interface VariableSpec {
  /** Variable name. */
  name: string;
  /** Default value as text, or empty when it is derived. */
  default: string;
  /** What it sets. */
  description: string;
}

/** Every variable the server reads, with its default and meaning. */
export const VARIABLES: readonly VariableSpec[] = [
  { name: "AMTP_HOST", default: "0.0.0.0", description: "listen address" },
  {
    name: "AMTP_PORT",
    default: "4433",
    description: "UDP port for QUIC and TCP port for WebSocket (0 = any free)",
  },
  { name: "AMTP_DATA", default: "./data", description: "data folder" },
  {
    name: "AMTP_KV",
    default: "<AMTP_DATA>/amtp.kv",
    description: "Deno KV file path or KV Connect URL",
  },
  {
    name: "AMTP_HOSTNAME",
    default: "localhost",
    description: "name clients and other servers use",
  },
  { name: "AMTP_CERT", default: "", description: "PEM certificate file" },
  { name: "AMTP_KEY", default: "", description: "PEM private key file" },
  {
    name: "AMTP_LOG_LEVEL",
    default: "info",
    description: "debug, info, warn or error",
  },
  { name: "AMTP_LOG_FORMAT", default: "text", description: "text or json" },
  {
    name: "AMTP_MAX_FRAME",
    default: "1048576",
    description: "largest frame in bytes (1024 to 16777216)",
  },
  {
    name: "AMTP_MAX_SESSIONS_PER_IP",
    default: "100",
    description: "sessions allowed from one IP",
  },
  {
    name: "AMTP_MAX_SESSIONS",
    default: "20000",
    description: "sessions allowed in total",
  },
  {
    name: "AMTP_IDLE_TIMEOUT",
    default: "120",
    description: "seconds of client silence before a session is closed",
  },
  {
    name: "AMTP_HANDSHAKE_TIMEOUT",
    default: "10",
    description:
      "seconds a new connection has to finish TLS and its request head (TCP) or open its session and stream (QUIC)",
  },
  {
    name: "AMTP_FD_RESERVE",
    default: "256",
    description:
      "open files kept free for KV, modules and outbound connections opened after start: TCP connections are refused at the open-file limit minus those open at start minus this",
  },
  {
    name: "AMTP_RATE_LIMIT",
    default: "1000",
    description: "requests per second per session (burst twice this)",
  },
  {
    name: "AMTP_TRANSFER_RATE",
    default: "8388608",
    description:
      "bytes per second of large answers (over 64 KiB: attachment chunks) per session, both its streams together; 0: unpaced",
  },
  {
    name: "AMTP_TRANSFER_RATE_USER",
    default: "16777216",
    description:
      "bytes per second of large answers per user, all of the user's sessions together; 0: no per-user pace",
  },
  {
    name: "AMTP_MAX_INFLIGHT",
    default: "64",
    description:
      "requests processed at once per session, each until its response is written (bounds the memory a client that does not read can hold)",
  },
  {
    name: "AMTP_ADMIN_TOKEN_TTL",
    default: "900",
    description: "seconds an admin token lives after its last use",
  },
  {
    name: "AMTP_USER_TOKEN_TTL",
    default: "2592000",
    description: "seconds a user token lives after its last use",
  },
  {
    name: "AMTP_CHALLENGE_TTL",
    default: "60",
    description: "seconds a login challenge is valid",
  },
  {
    name: "AMTP_MODULES",
    default: "<install folder>/modules",
    description: "folder of modules (<name>/<version>/module.json)",
  },
  {
    name: "AMTP_MODULES_OFF",
    default: "",
    description:
      "modules not started at start, comma-separated (e.g. smtp: no email gateway); an admin may still load them",
  },
  {
    name: "AMTP_MODULE_STORAGE",
    default: "files (core when AMTP_KV is a URL)",
    description:
      "where modules keep their data: files (own KV file each) or core (the core database)",
  },
  {
    name: "AMTP_MODULE_PORT",
    default: "",
    description:
      "port remote modules connect to over WebTransport (UDP) and WebSocket (TCP); off when empty, 0 picks a free one",
  },
  {
    name: "AMTP_MODULE_HOST",
    default: "AMTP_HOST",
    description: "listen address of the module port",
  },
  {
    name: "AMTP_MODULE_SOCKET",
    default: "",
    description:
      "Unix socket remote modules on this host connect to (made owner-only); off when empty",
  },
  {
    name: "AMTP_DNS",
    default: "",
    description:
      "name server ip:port for federation lookups (default: the system resolver)",
  },
  {
    name: "AMTP_DNS_CACHE",
    default: "60",
    description:
      "seconds federation reuses a DNS answer (a changed or revoked record takes effect after this)",
  },
  {
    name: "AMTP_CA_FILE",
    default: "",
    description: "PEM file of extra CAs trusted for other servers",
  },
  {
    name: "AMTP_QUEUE_LEASE",
    default: "120",
    description:
      "seconds an instance holds a queued remote delivery it took; another instance sharing the database takes it over after (a crashed one's)",
  },
  {
    name: "AMTP_CLUSTER_POLL",
    default: "0",
    description:
      "milliseconds between reads of the pushes other instances sharing the database made (docs/DEPLOY.md, Several instances); 0: this is the only instance",
  },
  {
    name: "AMTP_FEDERATION_LIFETIME",
    default: "432000",
    description:
      "seconds a remote delivery is retried before it bounces (5 days)",
  },
  {
    name: "AMTP_FEDERATION_RETRY",
    default: "60",
    description:
      "first retry delay of a remote delivery in seconds (doubles, with jitter)",
  },
  {
    name: "AMTP_FEDERATION_RETRY_MAX",
    default: "3600",
    description: "longest retry delay of a remote delivery in seconds",
  },
  {
    name: "AMTP_FEDERATION_TIMEOUT",
    default: "10",
    description:
      "seconds allowed to connect to another server, and for it to answer one request",
  },
  {
    name: "AMTP_FEDERATION_BATCH",
    default: "1",
    description:
      "remote deliveries sent in one request (s2s_deliver_batch) when more are due for a domain than may be in flight, 1 to 32; 1 sends each alone",
  },
  {
    name: "AMTP_SERVER_KEY_ALG",
    default: "ed25519",
    description: "algorithm of a new server signing key: ed25519 or rsa",
  },
  {
    name: "AMTP_POLICY_MODE",
    default: "enforce",
    description:
      "delivery policy published for the hosted domains: enforce, testing (report only) or off",
  },
  {
    name: "AMTP_POLICY_MAX_AGE",
    default: "604800",
    description:
      "seconds other servers cache the published delivery policy (one week)",
  },
  {
    name: "AMTP_POLICY_SERVERS",
    default: "",
    description:
      "servers (host[:port], comma-separated) the policy lists; this server when empty",
  },
  {
    name: "AMTP_POLICY_KEYS",
    default: "",
    description:
      "amtp-dkim values (v=DKIM1;k=...;p=..., separated by |) of the other servers of these domains",
  },
  {
    name: "AMTP_COMMAND_TIMEOUT",
    default: "30",
    description: "seconds before a command is answered with a timeout",
  },
  {
    name: "AMTP_UDP_HOST",
    default: "<AMTP_HOST>",
    description:
      "listen address of QUIC/WebTransport (UDP), for hosts that take UDP on another address than TCP",
  },
  {
    name: "AMTP_TCP_HOST",
    default: "<AMTP_HOST>",
    description: "listen address of WebSocket and HTTPS (TCP)",
  },
  {
    name: "AMTP_ACME",
    default: "0",
    description:
      "1: obtain and renew the certificate from an ACME CA (needs AMTP_ACME_EMAIL; not with AMTP_CERT)",
  },
  {
    name: "AMTP_ACME_EMAIL",
    default: "",
    description: "contact address of the ACME account",
  },
  {
    name: "AMTP_ACME_DIRECTORY",
    default: LETS_ENCRYPT,
    description: "the ACME CA's directory URL (Let's Encrypt by default)",
  },
  {
    name: "AMTP_ACME_NAMES",
    default: "",
    description:
      "more names for the certificate besides AMTP_HOSTNAME (comma-separated: the web app's name, amtp-policy.<domain>)",
  },
  {
    name: "AMTP_ACME_HTTP_PORT",
    default: "80",
    description:
      "port of the plain HTTP listener that answers the CA's HTTP-01 challenges (80 for a public CA)",
  },
  {
    name: "AMTP_ACME_CA",
    default: "",
    description:
      "PEM file of CAs trusted for the ACME directory's HTTPS (a test CA such as Pebble's); system roots otherwise",
  },
  {
    name: "AMTP_METRICS_PORT",
    default: "",
    description:
      "port of /metrics, /healthz and /readyz (plain HTTP); off when empty, 0 picks a free one",
  },
  {
    name: "AMTP_METRICS_HOST",
    default: "127.0.0.1",
    description: "listen address of the metrics port",
  },
  {
    name: "AMTP_BACKUP_DIR",
    default: "",
    description:
      "folder the server writes backups to on its own (one folder per backup); off when empty",
  },
  {
    name: "AMTP_BACKUP_EVERY",
    default: "86400",
    description: "seconds between backups",
  },
  {
    name: "AMTP_BACKUP_KEEP",
    default: "7",
    description: "backups kept (the oldest beyond are removed)",
  },
  {
    name: "AMTP_WEB",
    default: "on",
    description: "serve the web app: on or off",
  },
  {
    name: "AMTP_WEB_PORT",
    default: "8080",
    description:
      "port of the web app on http://localhost (loopback only; with a self-signed certificate), 0 = any free",
  },
  {
    name: "AMTP_WEB_CONNECT",
    default: "",
    description:
      "host:port browsers reach this server's AMTP port at (a port mapping); this server's otherwise",
  },
  {
    name: "AMTP_PUSH_CONTACT",
    default: "mailto:postmaster@<AMTP_HOSTNAME>",
    description: "contact push services see in Web Push requests (VAPID)",
  },
  {
    name: "AMTP_SMTP_PORT",
    default: "2525",
    description: "SMTP port of the email gateway (MX); 25 in production",
  },
  {
    name: "AMTP_SMTP_HOST",
    default: "0.0.0.0",
    description: "its listen address",
  },
  {
    name: "AMTP_SMTP_REMOTE_PORT",
    default: "25",
    description: "port of other mail servers it sends to",
  },
  {
    name: "AMTP_SMTP_RELAY",
    default: "",
    description:
      "host:port of a relay all outgoing email goes through (port 25 blocked); off port 25 only after STARTTLS with a valid certificate",
  },
  {
    name: "AMTP_SMTP_RELAY_USER",
    default: "",
    description: "login at the relay (with AMTP_SMTP_RELAY_PASSWORD)",
  },
  {
    name: "AMTP_SMTP_RELAY_PASSWORD",
    default: "",
    description: "password at the relay",
  },
  {
    name: "AMTP_SMTP_RELAY_CA",
    default: "",
    description:
      "PEM file of the CAs the relay's certificate must chain to, instead of the system's",
  },
  {
    name: "AMTP_SMTP_MAX_SIZE",
    default: "10485760",
    description: "largest message received, bytes (announced with SIZE)",
  },
  {
    name: "AMTP_SMTP_MAX_RECIPIENTS",
    default: "100",
    description: "recipients of one received message",
  },
  {
    name: "AMTP_SMTP_MAX_CONNECTIONS",
    default: "200",
    description: "SMTP connections at once",
  },
  {
    name: "AMTP_SMTP_MAX_PER_IP",
    default: "20",
    description: "SMTP connections at once from one IP address",
  },
  {
    name: "AMTP_SMTP_RATE",
    default: "120",
    description: "messages a minute from one IP address",
  },
  {
    name: "AMTP_SMTP_TIMEOUT",
    default: "60",
    description: "seconds of silence before an SMTP connection is dropped",
  },
  {
    name: "AMTP_PUSH_PRIVATE",
    default: "off",
    description:
      "on: allow Web Push endpoints on loopback and private addresses (tests, closed networks)",
  },
];

type Env = Record<string, string | undefined>;

function intVar(env: Env, name: string, min: number, max: number): number {
  const spec = VARIABLES.find((v) => v.name === name);
  const raw = (env[name] ?? "").trim() || spec?.default || "";
  if (!/^\d+$/.test(raw)) {
    throw new ConfigError(
      name,
      `"${raw}" is not a whole number (allowed: ${min} to ${max})`,
    );
  }
  const value = Number(raw);
  if (value < min || value > max) {
    throw new ConfigError(name, `${value} is out of range ${min} to ${max}`);
  }
  return value;
}

function choiceVar<T extends string>(
  env: Env,
  name: string,
  choices: readonly T[],
): T {
  const spec = VARIABLES.find((v) => v.name === name);
  const raw = ((env[name] ?? "").trim() || spec?.default || "").toLowerCase();
  if (!choices.includes(raw as T)) {
    throw new ConfigError(
      name,
      `"${raw}" is not allowed (allowed: ${choices.join(", ")})`,
    );
  }
  return raw as T;
}

const HOSTNAME_RE =
  /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

function dnsVar(env: Env): string | undefined {
  const raw = (env.AMTP_DNS ?? "").trim();
  if (!raw) return undefined;
  const match = raw.match(
    /^(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):(\d{1,5})$/,
  );
  if (!match || Number(match[2]) < 1 || Number(match[2]) > 65535) {
    throw new ConfigError(
      "AMTP_DNS",
      `"${raw}" is not ip:port (for example 127.0.0.1:53)`,
    );
  }
  return `${match[1].replace(/^\[|\]$/g, "")}:${match[2]}`;
}

/** An optional listen address (IP or name), or undefined when unset. */
function hostVar(env: Env, name: string): string | undefined {
  const raw = (env[name] ?? "").trim();
  if (!raw) return undefined;
  if (!/^[0-9a-fA-F:.]+$/.test(raw) && !HOSTNAME_RE.test(raw)) {
    throw new ConfigError(name, `"${raw}" is not an IP address or host name`);
  }
  return raw;
}

/** The gateway's settings (see {@link SmtpConfig}). */
function smtpVar(env: Env): SmtpConfig {
  const relayRaw = (env.AMTP_SMTP_RELAY ?? "").trim();
  const user = (env.AMTP_SMTP_RELAY_USER ?? "").trim() || undefined;
  const password = env.AMTP_SMTP_RELAY_PASSWORD ?? "";
  const caFile = (env.AMTP_SMTP_RELAY_CA ?? "").trim() || undefined;
  let relay: SmtpConfig["relay"];
  if (relayRaw) {
    const match = relayRaw.match(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):(\d{1,5})$/);
    const host = match?.[1].replace(/^\[|\]$/g, "").toLowerCase() ?? "";
    const port = Number(match?.[2]);
    if (
      !match || port < 1 || port > 65535 ||
      (!/^[0-9a-f:.]+$/.test(host) && !HOSTNAME_RE.test(host))
    ) {
      throw new ConfigError(
        "AMTP_SMTP_RELAY",
        `"${relayRaw}" is not host:port (for example smtp.provider.example:587)`,
      );
    }
    relay = { host, port, user, caFile };
  } else {
    for (
      const name of [
        "AMTP_SMTP_RELAY_USER",
        "AMTP_SMTP_RELAY_PASSWORD",
        "AMTP_SMTP_RELAY_CA",
      ]
    ) {
      if ((env[name] ?? "").trim()) {
        throw new ConfigError(name, "set without AMTP_SMTP_RELAY");
      }
    }
  }
  if (user && !password) {
    throw new ConfigError(
      "AMTP_SMTP_RELAY_PASSWORD",
      "empty while AMTP_SMTP_RELAY_USER is set",
    );
  }
  if (!user && password) {
    throw new ConfigError(
      "AMTP_SMTP_RELAY_USER",
      "empty while AMTP_SMTP_RELAY_PASSWORD is set",
    );
  }
  if (caFile) {
    let text: string;
    try {
      text = Deno.readTextFileSync(caFile);
    } catch (error) {
      throw new ConfigError(
        "AMTP_SMTP_RELAY_CA",
        `${caFile} cannot be read: ${(error as Error).message}`,
      );
    }
    if (!text.includes("-----BEGIN CERTIFICATE-----")) {
      throw new ConfigError(
        "AMTP_SMTP_RELAY_CA",
        `${caFile} holds no PEM certificate`,
      );
    }
  }
  return {
    host: hostVar(env, "AMTP_SMTP_HOST") ?? "0.0.0.0",
    port: intVar(env, "AMTP_SMTP_PORT", 0, 65535),
    remotePort: intVar(env, "AMTP_SMTP_REMOTE_PORT", 1, 65535),
    relay,
    maxSize: intVar(env, "AMTP_SMTP_MAX_SIZE", 1024, SMTP_MAX_SIZE_CEILING),
    maxRecipients: intVar(env, "AMTP_SMTP_MAX_RECIPIENTS", 1, 1000),
    maxConnections: intVar(env, "AMTP_SMTP_MAX_CONNECTIONS", 1, 10_000),
    maxPerIp: intVar(env, "AMTP_SMTP_MAX_PER_IP", 1, 10_000),
    rate: intVar(env, "AMTP_SMTP_RATE", 1, 1_000_000),
    timeout: intVar(env, "AMTP_SMTP_TIMEOUT", 5, 3600),
  };
}

function acmeVar(
  env: Env,
  hostname: string,
  certFile: string | undefined,
): AcmeConfig | undefined {
  const on = (env.AMTP_ACME ?? "").trim().toLowerCase();
  if (!on || on === "0" || on === "false") return undefined;
  if (on !== "1" && on !== "true") {
    throw new ConfigError(
      "AMTP_ACME",
      `"${on}" is not allowed (allowed: 0, 1)`,
    );
  }
  if (certFile) {
    throw new ConfigError(
      "AMTP_ACME",
      "AMTP_ACME and AMTP_CERT/AMTP_KEY exclude each other: the certificate comes from one or the other",
    );
  }
  if (hostname === "localhost" || /^[0-9.]+$/.test(hostname)) {
    throw new ConfigError(
      "AMTP_HOSTNAME",
      `"${hostname}" cannot have a CA certificate: set the server's public DNS name`,
    );
  }
  const email = (env.AMTP_ACME_EMAIL ?? "").trim();
  if (!/^[^\s@]+@[^\s@]+$/.test(email)) {
    throw new ConfigError(
      "AMTP_ACME_EMAIL",
      `"${email}" is not an email address (the CA's contact for this account)`,
    );
  }
  const directory = (env.AMTP_ACME_DIRECTORY ?? "").trim() || LETS_ENCRYPT;
  if (!/^https:\/\/[^\s]+$/.test(directory)) {
    throw new ConfigError(
      "AMTP_ACME_DIRECTORY",
      `"${directory}" is not an https URL`,
    );
  }
  const extra = (env.AMTP_ACME_NAMES ?? "").split(",").map((n) =>
    n.trim().toLowerCase()
  ).filter(Boolean);
  for (const name of extra) {
    if (!HOSTNAME_RE.test(name)) {
      throw new ConfigError("AMTP_ACME_NAMES", `"${name}" is not a DNS name`);
    }
  }
  return {
    directory,
    email,
    names: [...new Set([hostname, ...extra])],
    httpPort: intVar(env, "AMTP_ACME_HTTP_PORT", 1, 65535),
    caFile: (env.AMTP_ACME_CA ?? "").trim() || undefined,
  };
}

/**
 * Read and validate the configuration from an environment.
 *
 * @param env variables, usually `Deno.env.toObject()`
 * @returns the validated configuration
 * @throws {ConfigError} naming the first invalid variable
 */
export function loadConfig(env: Env): Config {
  const host = (env.AMTP_HOST ?? "").trim() || "0.0.0.0";
  if (!/^[0-9a-fA-F:.]+$/.test(host) && !HOSTNAME_RE.test(host)) {
    throw new ConfigError(
      "AMTP_HOST",
      `"${host}" is not an IP address or host name`,
    );
  }
  const dataDir = (env.AMTP_DATA ?? "").trim() || "./data";
  const hostname = ((env.AMTP_HOSTNAME ?? "").trim() || "localhost")
    .toLowerCase();
  if (!HOSTNAME_RE.test(hostname) && !/^[0-9.]+$/.test(hostname)) {
    throw new ConfigError(
      "AMTP_HOSTNAME",
      `"${hostname}" is not a valid DNS name`,
    );
  }
  const certFile = (env.AMTP_CERT ?? "").trim() || undefined;
  const keyFile = (env.AMTP_KEY ?? "").trim() || undefined;
  if (Boolean(certFile) !== Boolean(keyFile)) {
    throw new ConfigError(
      certFile ? "AMTP_KEY" : "AMTP_CERT",
      "AMTP_CERT and AMTP_KEY must be set together (or neither, for a generated certificate)",
    );
  }
  const kvPath = (env.AMTP_KV ?? "").trim() || `${dataDir}/amtp.kv`;
  const moduleStorage = (env.AMTP_MODULE_STORAGE ?? "").trim().toLowerCase() ||
    (/^https?:\/\//.test(kvPath) ? "core" : "files");
  if (moduleStorage !== "files" && moduleStorage !== "core") {
    throw new ConfigError(
      "AMTP_MODULE_STORAGE",
      `"${moduleStorage}" is not allowed (allowed: files, core)`,
    );
  }
  const modulePort = (env.AMTP_MODULE_PORT ?? "").trim();
  const moduleSocket = (env.AMTP_MODULE_SOCKET ?? "").trim();
  const udpHost = hostVar(env, "AMTP_UDP_HOST") ?? host;
  const tcpHost = hostVar(env, "AMTP_TCP_HOST") ?? host;
  const acme = acmeVar(env, hostname, certFile);
  const metricsPort = (env.AMTP_METRICS_PORT ?? "").trim();
  const backupDir = (env.AMTP_BACKUP_DIR ?? "").trim();
  const webConnect = (env.AMTP_WEB_CONNECT ?? "").trim().toLowerCase() ||
    undefined;
  if (
    webConnect &&
    !/^([a-z0-9.-]+|\[[0-9a-f:]+\]):\d{1,5}$/.test(webConnect)
  ) {
    throw new ConfigError(
      "AMTP_WEB_CONNECT",
      `"${webConnect}" is not host:port (for example mail.example.org:443)`,
    );
  }
  const pushContact = (env.AMTP_PUSH_CONTACT ?? "").trim() ||
    `mailto:postmaster@${hostname}`;
  if (!/^(mailto:|https:\/\/)\S+$/.test(pushContact)) {
    throw new ConfigError(
      "AMTP_PUSH_CONTACT",
      `"${pushContact}" is not a mailto: or https: URL`,
    );
  }
  return {
    web: choiceVar(env, "AMTP_WEB", ["on", "off"]) === "on",
    webPort: intVar(env, "AMTP_WEB_PORT", 0, 65535),
    webPortSet: (env.AMTP_WEB_PORT ?? "").trim() !== "",
    webConnect,
    pushContact,
    pushPrivate: choiceVar(env, "AMTP_PUSH_PRIVATE", ["on", "off"]) === "on",
    smtp: smtpVar(env),
    moduleStorage,
    modulePort: modulePort
      ? {
        host: hostVar(env, "AMTP_MODULE_HOST") ?? host,
        port: intVar(env, "AMTP_MODULE_PORT", 0, 65535),
      }
      : undefined,
    moduleSocket: moduleSocket && moduleSocket !== "off"
      ? moduleSocket
      : undefined,
    host,
    udpHost,
    tcpHost,
    acme,
    metrics: metricsPort
      ? {
        host: hostVar(env, "AMTP_METRICS_HOST") ?? "127.0.0.1",
        port: intVar(env, "AMTP_METRICS_PORT", 0, 65535),
      }
      : undefined,
    backup: backupDir
      ? {
        dir: backupDir,
        everySeconds: intVar(env, "AMTP_BACKUP_EVERY", 60, 365 * 86_400),
        keep: intVar(env, "AMTP_BACKUP_KEEP", 1, 1000),
      }
      : undefined,
    port: intVar(env, "AMTP_PORT", 0, 65535),
    dataDir,
    kvPath,
    hostname,
    certFile,
    keyFile,
    logLevel: choiceVar(env, "AMTP_LOG_LEVEL", [
      "debug",
      "info",
      "warn",
      "error",
    ]),
    logFormat: choiceVar(env, "AMTP_LOG_FORMAT", ["text", "json"]),
    maxFrame: intVar(env, "AMTP_MAX_FRAME", 1024, 16 * 1024 * 1024),
    maxSessionsPerIp: intVar(env, "AMTP_MAX_SESSIONS_PER_IP", 1, 1_000_000),
    maxSessions: intVar(env, "AMTP_MAX_SESSIONS", 1, 1_000_000),
    idleTimeout: intVar(env, "AMTP_IDLE_TIMEOUT", 1, 86_400),
    handshakeTimeout: intVar(env, "AMTP_HANDSHAKE_TIMEOUT", 1, 600),
    descriptorReserve: intVar(env, "AMTP_FD_RESERVE", 0, 1_000_000),
    rateLimit: intVar(env, "AMTP_RATE_LIMIT", 1, 10_000_000),
    maxInflight: intVar(env, "AMTP_MAX_INFLIGHT", 1, 100_000),
    transferRate: intVar(env, "AMTP_TRANSFER_RATE", 0, 1_000_000_000_000),
    transferRateUser: intVar(
      env,
      "AMTP_TRANSFER_RATE_USER",
      0,
      1_000_000_000_000,
    ),
    adminTokenTtl: intVar(env, "AMTP_ADMIN_TOKEN_TTL", 1, 31_536_000),
    userTokenTtl: intVar(env, "AMTP_USER_TOKEN_TTL", 1, 31_536_000),
    challengeTtl: intVar(env, "AMTP_CHALLENGE_TTL", 1, 3_600),
    commandTimeout: intVar(env, "AMTP_COMMAND_TIMEOUT", 1, 3_600),
    dns: dnsVar(env),
    caFile: (env.AMTP_CA_FILE ?? "").trim() || undefined,
    federationLifetime: intVar(
      env,
      "AMTP_FEDERATION_LIFETIME",
      1,
      365 * 86_400,
    ),
    federationRetry: intVar(env, "AMTP_FEDERATION_RETRY", 1, 86_400),
    queueLease: intVar(env, "AMTP_QUEUE_LEASE", 1, 86_400),
    clusterPoll: intVar(env, "AMTP_CLUSTER_POLL", 0, 60_000),
    federationRetryMax: intVar(env, "AMTP_FEDERATION_RETRY_MAX", 1, 7 * 86_400),
    federationTimeout: intVar(env, "AMTP_FEDERATION_TIMEOUT", 1, 600),
    federationBatch: intVar(env, "AMTP_FEDERATION_BATCH", 1, 32),
    serverKeyAlgorithm: choiceVar(env, "AMTP_SERVER_KEY_ALG", [
      "ed25519",
      "rsa",
    ]),
    dnsCache: intVar(env, "AMTP_DNS_CACHE", 0, 86_400),
    policyMode: choiceVar(env, "AMTP_POLICY_MODE", [
      "enforce",
      "testing",
      "off",
    ]),
    policyMaxAge: intVar(env, "AMTP_POLICY_MAX_AGE", 60, 31_536_000),
    policyServers: (env.AMTP_POLICY_SERVERS ?? "").split(",").map((s) =>
      s.trim().toLowerCase()
    ).filter(Boolean),
    policyKeys: (env.AMTP_POLICY_KEYS ?? "").split("|").map((s) => s.trim())
      .filter(Boolean),
    modulesDir: (env.AMTP_MODULES ?? "").trim() ||
      new URL("../../modules", import.meta.url).pathname.replace(/\/$/, ""),
    modulesOff: (env.AMTP_MODULES_OFF ?? "").split(",").map((s) => s.trim())
      .filter(Boolean),
  };
}

/** Loopback names a self-signed certificate of this server also covers. */
const LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"];

/**
 * The names this server answers to: `AMTP_HOSTNAME` and the loopback names.
 * A generated (self-signed) certificate covers exactly these, and a login
 * request must name one of them (PROTOCOL.md §7.2). Loopback names are safe
 * to accept whatever the certificate: no CA issues a certificate for them, so
 * no other server can be trusted under them.
 */
export function serverNames(config: Pick<Config, "hostname">): string[] {
  return [...new Set([config.hostname, ...LOOPBACK_NAMES])];
}
