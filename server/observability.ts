/**
 * What an operator watches: the server's metrics (Prometheus text at
 * `/metrics` on the metrics port), `/healthz` (the process answers) and
 * `/readyz` (it serves: listeners up, modules started, the database
 * answering), on the metrics port and on the TCP port alike. `/metrics` is
 * never on the public port: it names commands, modules and volumes.
 *
 * @module
 */

import {
  CONTENT_TYPE,
  type Counter,
  type Gauge,
  type Histogram,
  Registry,
} from "../core/metrics/mod.ts";
import type { Answered } from "../core/protocol/mod.ts";
import type { ModuleObserver } from "../workers/mod.ts";
import { APP_VERSION } from "../shared/version.ts";

/** The server's instruments, made once per server. */
export class ServerMetrics {
  /** The registry they live in. */
  readonly registry = new Registry();
  /** Requests answered, by command and error code. */
  readonly commands: Counter = this.registry.counter(
    "amtp_commands_total",
    "Requests answered, by command (module commands with their module) and error code (0 = success).",
    ["command", "module", "error"],
  );
  /** Time from a request's receipt to its answer. */
  readonly latency: Histogram = this.registry.histogram(
    "amtp_command_duration_seconds",
    "Seconds from a request's receipt to its answer.",
    ["command", "module"],
  );
  /** Logins. */
  readonly logins: Counter = this.registry.counter(
    "amtp_logins_total",
    "Login answers (verify), by kind and result.",
    ["kind", "result"],
  );
  /** Sessions open now. */
  readonly sessions: Gauge = this.registry.gauge(
    "amtp_sessions",
    "Sessions open now, by transport (peer: other servers).",
    ["transport"],
  );
  /** Deliveries by route and outcome. */
  readonly deliveries: Counter = this.registry.counter(
    "amtp_deliveries_total",
    "Recipients delivered, bounced or deferred, by route (local: a mailbox here; remote: to another server; inbound: from another server).",
    ["route", "outcome"],
  );
  /** Items in the outbound queue. */
  readonly queueItems: Gauge = this.registry.gauge(
    "amtp_queue_items",
    "Items waiting in the outbound queue (counted up to 10000).",
  );
  /** Age of the oldest queued item. */
  readonly queueOldest: Gauge = this.registry.gauge(
    "amtp_queue_oldest_age_seconds",
    "Seconds the oldest item of the outbound queue has waited (0 when empty).",
  );
  /** Calls into modules. */
  readonly moduleCalls: Counter = this.registry.counter(
    "amtp_module_calls_total",
    "Calls into modules, by module, method and result.",
    ["module", "method", "result"],
  );
  /** Module restarts. */
  readonly moduleRestarts: Counter = this.registry.counter(
    "amtp_module_restarts_total",
    "Restarts of module copies that went down.",
    ["module"],
  );
  /** Module denials. */
  readonly moduleDenials: Counter = this.registry.counter(
    "amtp_module_denials_total",
    "Services or operations refused to a module (no grant, no permission).",
    ["module"],
  );
  /** KV commits of the core. */
  readonly kvCommit: Histogram = this.registry.histogram(
    "amtp_kv_commit_duration_seconds",
    "Seconds one commit of the core's database took (a group commit carries many writes).",
  );
  /** The certificate's end of validity. */
  readonly certificateExpiry: Gauge = this.registry.gauge(
    "amtp_certificate_not_after_seconds",
    "End of validity of the certificate in use, Unix seconds.",
    ["source"],
  );
  /** ACME attempts. */
  readonly acme: Counter = this.registry.counter(
    "amtp_acme_orders_total",
    "Certificate orders at the ACME CA, by result.",
    ["result"],
  );
  /** Backups taken by the server. */
  readonly backups: Counter = this.registry.counter(
    "amtp_backups_total",
    "Backups the server took on its schedule, by result.",
    ["result"],
  );
  /** When the last backup succeeded. */
  readonly backupLast: Gauge = this.registry.gauge(
    "amtp_backup_last_success_seconds",
    "Unix seconds of the last successful scheduled backup.",
  );

  constructor() {
    this.registry.gauge(
      "amtp_build_info",
      "The server's version (value 1).",
      ["version"],
    ).set({ version: APP_VERSION }, 1);
  }

  /** Count one answered request (the dispatchers' `observe`). */
  answered(answered: Answered): void {
    const labels = {
      command: answered.command.slice(0, 64),
      module: answered.module?.slice(0, 64) ?? "",
    };
    this.commands.inc({ ...labels, error: String(answered.error) });
    this.latency.observe(labels, answered.ms / 1000);
    const login = answered.command.match(/^(admin|user)_login_verify$/);
    if (login && !answered.module) {
      this.logins.inc({
        kind: login[1],
        result: answered.error === 0 ? "success" : "failure",
      });
    }
  }

  /** What the module host tells. */
  modules(): ModuleObserver {
    return {
      called: (module, method, ok) =>
        this.moduleCalls.inc({
          module,
          method,
          result: ok ? "ok" : "error",
        }),
      restarted: (module) => this.moduleRestarts.inc({ module }),
      denied: (module) => this.moduleDenials.inc({ module }),
    };
  }
}

/** Whether the server serves, and why not. */
export type Readiness = () => Promise<string[]>;

/**
 * `/healthz`, `/readyz` and (when `metrics` is given, the metrics port only)
 * `/metrics`; undefined for any other path.
 */
export async function observabilityAnswer(
  request: Request,
  ready: Readiness,
  metrics?: ServerMetrics,
): Promise<Response | undefined> {
  const path = new URL(request.url).pathname;
  if (request.method !== "GET" && request.method !== "HEAD") return undefined;
  if (path === "/healthz") return new Response("ok\n");
  if (path === "/readyz") {
    const problems = await ready();
    return problems.length === 0
      ? new Response("ready\n")
      : new Response(`not ready: ${problems.join("; ")}\n`, { status: 503 });
  }
  if (path === "/metrics" && metrics) {
    return new Response(await metrics.registry.text(), {
      headers: { "content-type": CONTENT_TYPE },
    });
  }
  return undefined;
}

/** A listener of the server's own could not be opened. */
export class ListenError extends Error {
  /** Stable error code. */
  readonly code = "listen_failed";

  /** Create the error. */
  constructor(message: string) {
    super(message);
    this.name = "ListenError";
  }
}

/**
 * A plain HTTP listener (the metrics port, the ACME HTTP-01 port).
 *
 * @throws {ListenError} naming `what` and the address when it cannot listen
 */
export function serveMetrics(
  what: string,
  options: { host: string; port: number },
  handler: (request: Request) => Promise<Response>,
): { port: number; close(): Promise<void> } {
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: options.host,
      port: options.port,
      onListen() {},
    }, handler);
  } catch (error) {
    const hint = error instanceof Deno.errors.PermissionDenied &&
        options.port < 1024
      ? " (ports below 1024 need root or CAP_NET_BIND_SERVICE, which the systemd unit grants)"
      : "";
    throw new ListenError(
      `${what}: cannot listen on ${options.host}:${options.port}: ${
        error instanceof Error ? error.message : String(error)
      }${hint}`,
    );
  }
  return {
    port: server.addr.port,
    close: () => server.shutdown(),
  };
}
