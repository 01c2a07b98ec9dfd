/**
 * Wiring: configuration -> storage -> certificate -> services -> dispatcher
 * -> transports. The one place that knows every part; `main.ts` and the tests
 * start servers through {@link startServer}.
 *
 * @module
 */

import { PushBus } from "../core/cluster/mod.ts";
import { openStore, type Store } from "../kv/mod.ts";
import { adminCommands } from "../core/admin/mod.ts";
import { type Bootstrap, ensureFirstAdmin } from "../core/admin/bootstrap.ts";
import {
  LOGIN_ALGORITHMS,
  loginCommands,
  LoginService,
  TokenService,
} from "../core/auth/mod.ts";
import { type Config, serverNames } from "../core/config/mod.ts";
import { infoCommands } from "../core/info/mod.ts";
import { Logger } from "../core/log/mod.ts";
import { Dispatcher } from "../core/protocol/mod.ts";
import { runSession, SessionRegistry } from "../core/session/mod.ts";
import {
  AcmeCertificates,
  ChallengeBoard,
  loadCertificate,
  type ServerCertificate,
  watchCertificate,
} from "../core/tls/mod.ts";
import {
  type Connection,
  ConnectionLimiter,
  startTransports,
} from "../core/transport/mod.ts";
import { localProfile, userCommands } from "../core/user/mod.ts";
import { APP_NAME, APP_VERSION } from "../shared/version.ts";
import { ModuleHost, type ModuleHostOptions } from "../workers/mod.ts";
import { moduleCommands, packageCommands } from "../core/admin/modules.ts";
import { moduleKeyCommands } from "../core/admin/module_keys.ts";
import { ModuleKeyStore } from "../kv/module_keys.ts";
import { ModuleLinks } from "../workers/remote/link.ts";
import { LINK_MAX_FRAME } from "../workers/remote/protocol.ts";
import { listenUnix, type UnixListener } from "../workers/remote/unix.ts";
import { Federation } from "../core/federation/mod.ts";
import type { InboundResult } from "../core/federation/delivery.ts";
import { secureDataDir } from "./data_dir.ts";
import { moduleServices } from "./module_services.ts";
import { scheduleBackups } from "../core/backup/schedule.ts";
import {
  observabilityAnswer,
  type Readiness,
  serveMetrics,
  ServerMetrics,
} from "./observability.ts";
import { WebPush } from "../core/push/mod.ts";
import { WebApp } from "./web.ts";

/** A running server. */
export interface ServerHandle {
  /** Port number in use (UDP and TCP). */
  port: number;
  /** The configured host name. */
  hostname: string;
  /** SHA-256 of the certificate in use, hex. */
  certSha256: () => string;
  /** The certificate in use. */
  certificate: () => ServerCertificate;
  /** First-admin bootstrap result of this start. */
  bootstrap: Bootstrap;
  /** Storage (tests inspect it). */
  store: Store;
  /** Live sessions. */
  registry: SessionRegistry;
  /** Names of the core commands. */
  commands: string[];
  /** The module host. */
  modules: ModuleHost;
  /** The server's metrics. */
  metrics: ServerMetrics;
  /** Port of `/metrics` (AMTP_METRICS_PORT), when on. */
  metricsPort?: number;
  /** Web Push (tests wait for its deliveries). */
  push: WebPush;
  /** Where people open the web app, when it is served. */
  webUrl?: string;
  /** Port of the web app's loopback listener, when it runs. */
  webPort?: number;
  /** The module port (remote modules), when on. */
  modulePort?: number;
  /** The Unix socket of remote modules, when on. */
  moduleSocket?: string;
  /** Stop accepting, finish in-flight work, close sessions and KV. */
  close(): Promise<void>;
}

/** Options of {@link startServer}. */
export interface StartOptions {
  /** Logger; one from the configuration otherwise. */
  log?: Logger;
  /** Milliseconds between certificate checks (default one hour). */
  certCheckMs?: number;
  /** Milliseconds between scheduled backups (tests; AMTP_BACKUP_EVERY otherwise). */
  backupEveryMs?: number;
  /** Clock of logins and tokens in epoch milliseconds: challenge and token expiry, blocks (tests move it). */
  now?: () => number;
  /** Handshake timeout in milliseconds (tests; AMTP_HANDSHAKE_TIMEOUT otherwise). */
  handshakeTimeoutMs?: number;
  /** First retry delay after a failed ACME order in milliseconds (default 60 s). */
  acmeRetryMs?: number;
  /** Milliseconds a module link has to log in (tests; 10 s otherwise). */
  moduleLoginMs?: number;
  /** Module host timing (tests make hang detection quick). */
  moduleHost?: Partial<
    Pick<
      ModuleHostOptions,
      "heartbeat" | "restartBaseMs" | "hangsBeforeProcess"
    >
  >;
}

/**
 * The answer to a plain HTTPS request that nothing else serves: a short page
 * at `/` (GET or HEAD), 404 anywhere else, `/amtp` without an upgrade included.
 */
function homePage(request: Request): Response {
  const path = new URL(request.url).pathname;
  if (path === "/" && (request.method === "GET" || request.method === "HEAD")) {
    return new Response(`${APP_NAME} ${APP_VERSION}: connect to /amtp\n`);
  }
  return new Response("not found\n", { status: 404 });
}

/** Start a server with a validated configuration. */
export async function startServer(
  config: Config,
  options: StartOptions = {},
): Promise<ServerHandle> {
  const startedAt = Date.now();
  const log = options.log ??
    new Logger({ level: config.logLevel, format: config.logFormat });
  await secureDataDir(config.dataDir);
  const metrics = new ServerMetrics();
  const store = await openStore(config.kvPath, { log });
  store.writes.onCommit = (ms) => metrics.kvCommit.observe({}, ms / 1000);
  const names = serverNames(config);
  const certSource = {
    dataDir: config.dataDir,
    names,
    certFile: config.certFile,
    keyFile: config.keyFile,
  };
  // With ACME: its stored certificate, or a self-signed one until the CA
  // issues one (the challenge is answered on the listeners started below).
  const board = new ChallengeBoard();
  const acme = config.acme
    ? new AcmeCertificates({
      config: config.acme,
      dataDir: config.dataDir,
      log,
      board,
      retryBaseMs: options.acmeRetryMs,
      observe: (result) => metrics.acme.inc({ result }),
    })
    : undefined;
  let certificate: ServerCertificate;
  try {
    certificate = await acme?.stored() ??
      await loadCertificate(certSource, log);
  } catch (error) {
    store.close();
    throw error;
  }
  const noteCertificate = (cert: ServerCertificate) => {
    metrics.certificateExpiry.reset();
    if (cert.notAfter) {
      metrics.certificateExpiry.set(
        { source: cert.selfSigned ? "self-signed" : acme ? "acme" : "file" },
        Math.floor(cert.notAfter.getTime() / 1000),
      );
    }
  };
  noteCertificate(certificate);
  const bootstrap = await ensureFirstAdmin(store.accounts, config.dataDir);

  const tokens = new TokenService(store.tokens, {
    adminTtl: config.adminTokenTtl,
    userTtl: config.userTokenTtl,
    now: options.now,
  });
  const login = await LoginService.open({
    kv: store.kv,
    accounts: store.accounts,
    failures: store.failures,
    tokens,
    challengeTtl: config.challengeTtl,
    names,
    log,
    now: options.now,
  });
  const limits = {
    max_frame: config.maxFrame,
    rate_limit: config.rateLimit,
    max_inflight: config.maxInflight,
    idle_timeout: config.idleTimeout,
    max_page: 500,
    transfer_rate: config.transferRate,
    transfer_rate_user: config.transferRateUser,
  };
  const registry = new SessionRegistry({ log });
  // Several instances on one database: pushes cross through it.
  const bus = config.clusterPoll > 0
    ? new PushBus({
      kv: store.kv,
      deliver: (address, push) => registry.push(address, push, config.maxFrame),
      pollMs: config.clusterPoll,
      log: log.child({ part: "cluster" }),
    })
    : undefined;
  // A revoked user token no longer brings its user's pushes to a session.
  tokens.onRevoke((revoked) => {
    if (revoked.kind === "user") {
      registry.unbindToken(revoked.account, revoked.hash);
    }
  });
  let transportPort = config.port;
  const federation = await Federation.open({
    config,
    kv: store.kv,
    writes: store.writes,
    accounts: store.accounts,
    log,
    inbound: (module, delivery) => host.router.inbound(module, delivery),
    profile: (address) => localProfile(store.accounts, address),
    port: () => transportPort,
    observe: (route, outcome, recipients) =>
      metrics.deliveries.inc({ route, outcome }, recipients),
    observeCommand: (answered) => metrics.answered(answered),
    compose: (module, request) => host.router.compose(module, request),
    transport: (request) => host.router.transport(request),
    carriesEmail: () => host.router.carrier("smtp") !== undefined,
  });
  const caCerts = config.caFile
    ? (await Deno.readTextFile(config.caFile)).match(
      /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g,
    ) ?? []
    : [];
  const push = await WebPush.open({
    store: store.push,
    contact: config.pushContact,
    allowPrivate: config.pushPrivate,
    caCerts,
    log,
  });
  const web = config.web
    ? await WebApp.open({
      config,
      log,
      certificate: () => certificate,
      port: () => transportPort,
    })
    : undefined;
  const webUrl = () => web?.url();
  const host = new ModuleHost({
    root: config.modulesDir,
    installed: `${config.dataDir}/packages`,
    kv: store.kv,
    stores: config.moduleStorage === "files"
      ? `${config.dataDir}/modules`
      : undefined,
    log,
    denoConfig: new URL("../deno.json", import.meta.url).pathname,
    off: config.modulesOff,
    services: moduleServices({
      store,
      registry,
      bus,
      maxFrame: config.maxFrame,
      federation,
      resolved: (local) =>
        metrics.deliveries.inc({ route: "local", outcome: "resolved" }, local),
      certificate: () => certificate,
      inbound: (module, delivery): Promise<InboundResult> =>
        host.router.inbound(module, delivery),
      modules: {
        call: (from, target, command, params, ticket): Promise<unknown> =>
          host.router.callFrom(from, target, command, params, ticket),
        emit: (from, event, data, failed): number =>
          host.router.emit(from, event, data, failed),
      },
      // New mail reaches closed apps through Web Push.
      notify: (address, module, event, data) => {
        if (module === "messages" && event === "message_new") {
          push.newMessage(address, (data ?? {}) as Record<string, unknown>);
        }
      },
    }),
    observer: metrics.modules(),
    ...options.moduleHost,
  });
  await host.start();
  const moduleKeys = new ModuleKeyStore(store.kv);
  const links = new ModuleLinks({
    keys: moduleKeys,
    guard: login.guard,
    names,
    host,
    loginMs: options.moduleLoginMs,
    log: log.child({ part: "modules" }),
  });
  // Deliveries and bounces start once the modules that take them run.
  federation.queue.start();
  const modules = () => host.router.available();
  const dispatcher = new Dispatcher({
    log,
    verifyToken: (kind, token) => tokens.verify(kind, token),
    routeModule: (request, ctx) => host.router.route(request, ctx),
    timeoutMs: config.commandTimeout * 1000,
    observe: (answered) => metrics.answered(answered),
  });
  dispatcher.register(
    ...infoCommands({
      hostname: config.hostname,
      loginAlgorithms: LOGIN_ALGORITHMS,
      limits,
      certificateSha256: () => certificate.sha256,
      modules,
    }),
    ...loginCommands(login),
    ...adminCommands({
      accounts: store.accounts,
      tokens,
      login,
      startedAt,
      invitations: store.invitations,
      push: store.push,
      webUrl,
      now: options.now,
    }),
    ...moduleCommands(host.lifecycle),
    ...packageCommands(host.packages!),
    ...moduleKeyCommands({
      keys: moduleKeys,
      removed: (name, version, keyId) => links.dropKey(name, version, keyId),
    }),
    ...federation.adminCommands(),
    ...userCommands({
      accounts: store.accounts,
      tokens,
      hostname: config.hostname,
      limits,
      modules,
      invitations: store.invitations,
      login,
      push,
      webUrl,
      now: options.now,
      remoteProfile: (address, asDomain, fresh) =>
        federation.remoteProfile(address, asDomain, fresh),
    }),
  );

  const peers = new SessionRegistry({ log });
  const sessionLimits = {
    maxInflight: config.maxInflight,
    rateLimit: config.rateLimit,
    maxFrame: config.maxFrame,
    idleTimeoutMs: config.idleTimeout * 1000,
    transferRate: config.transferRate,
    transferRateUser: config.transferRateUser,
  };
  let closing: Promise<void> | undefined;
  let listening = false;
  const ready: Readiness = async () => {
    const problems: string[] = [];
    if (closing) problems.push("shutting down");
    if (!listening) problems.push("listeners not started");
    for (const module of host.lifecycle.list()) {
      // Unloaded is an admin's choice (or AMTP_MODULES_OFF), not a fault;
      // a remote module waiting for its instances is theirs to bring.
      if (
        module.enabled && module.state !== "running" &&
        module.state !== "unloaded" && module.state !== "waiting"
      ) {
        problems.push(
          `module ${module.name} ${module.version} ${module.state}`,
        );
      }
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        store.kv.get(["meta", "schema"]),
        new Promise((_, reject) =>
          timer = setTimeout(() => reject(new Error("timeout")), 2000)
        ),
      ]);
    } catch (error) {
      problems.push(`database: ${String(error)}`);
    } finally {
      clearTimeout(timer);
    }
    return problems;
  };
  const admission = new ConnectionLimiter({
    maxPerIp: config.maxSessionsPerIp,
    maxTotal: config.maxSessions,
  });
  const onConnection = (conn: Connection) =>
    runSession(conn, { dispatcher, registry, limits: sessionLimits, log });
  let transports;
  try {
    transports = await startTransports({
      hostname: config.host,
      hosts: { udp: config.udpHost, tcp: config.tcpHost },
      port: config.port,
      cert: certificate.certPem,
      key: certificate.keyPem,
      maxFrame: config.maxFrame,
      handshakeTimeoutMs: options.handshakeTimeoutMs ??
        config.handshakeTimeout * 1000,
      descriptorReserve: config.descriptorReserve,
      admission,
      onConnection,
      onPeerConnection: (conn) =>
        runSession(conn, {
          dispatcher: federation.dispatcher,
          registry: peers,
          limits: sessionLimits,
          log,
        }),
      httpHandler: async (request) =>
        await observabilityAnswer(request, ready) ??
          await federation.handleHttp(request) ??
          await web?.handlePublic(request) ?? homePage(request),
      log,
    });
  } catch (error) {
    store.close();
    throw error;
  }
  transportPort = transports.port;
  listening = true;
  // Remote modules: the module port and the Unix socket (workers/remote).
  let moduleTransports: Awaited<ReturnType<typeof startTransports>> | undefined;
  let moduleSocket: UnixListener | undefined;
  try {
    moduleSocket = config.moduleSocket
      ? await listenUnix(config.moduleSocket, {
        maxFrame: LINK_MAX_FRAME,
        onConnection: (conn) => links.accept(conn),
        log,
      })
      : undefined;
    moduleTransports = config.modulePort
      ? await startTransports({
        hostname: config.modulePort.host,
        port: config.modulePort.port,
        cert: certificate.certPem,
        key: certificate.keyPem,
        maxFrame: LINK_MAX_FRAME,
        handshakeTimeoutMs: options.handshakeTimeoutMs ??
          config.handshakeTimeout * 1000,
        descriptorReserve: config.descriptorReserve,
        admission: new ConnectionLimiter({ maxPerIp: 64, maxTotal: 1024 }),
        onConnection: (conn) => links.accept(conn),
        log,
      })
      : undefined;
  } catch (error) {
    moduleSocket?.stop();
    await transports.stop();
    transports.close();
    await host.close();
    store.close();
    throw error;
  }
  let metricsListener: ReturnType<typeof serveMetrics> | undefined;
  let challengeListener: ReturnType<typeof serveMetrics> | undefined;
  try {
    metricsListener = config.metrics
      ? serveMetrics(
        "AMTP_METRICS_PORT",
        config.metrics,
        async (request) =>
          await observabilityAnswer(request, ready, metrics) ??
            new Response("not found\n", { status: 404 }),
      )
      : undefined;
    // HTTP-01: a plain HTTP listener for the CA's requests (port 80 in production).
    challengeListener = config.acme
      ? serveMetrics(
        "AMTP_ACME_HTTP_PORT",
        { host: config.tcpHost, port: config.acme.httpPort },
        (request) =>
          Promise.resolve(
            board.httpAnswer(request) ??
              new Response("not found\n", { status: 404 }),
          ),
      )
      : undefined;
  } catch (error) {
    // Nothing stays open behind a refused start.
    await metricsListener?.close();
    await transports.stop();
    await federation.close();
    await host.close();
    transports.close();
    store.close();
    throw error;
  }
  metrics.registry.collect(async () => {
    metrics.sessions.reset();
    for (const [transport, count] of registry.byTransport()) {
      metrics.sessions.set({ transport }, count);
    }
    metrics.sessions.set({ transport: "peer" }, peers.size);
    const queue = await federation.queueStats();
    metrics.queueItems.set({}, queue.items);
    metrics.queueOldest.set(
      {},
      queue.oldest === undefined
        ? 0
        : Math.max(0, (Date.now() - queue.oldest) / 1000),
    );
  });
  // No browser trusts a self-signed certificate: the app is also served on
  // http://localhost (a secure context), where the page pins the hash.
  const localWeb = web && (certificate.selfSigned || config.webPortSet)
    ? web.listenLocal({
      cert: certificate.certPem,
      key: certificate.keyPem,
      maxFrame: config.maxFrame,
      handshakeTimeoutMs: options.handshakeTimeoutMs ??
        config.handshakeTimeout * 1000,
      maxConnections: 1024,
      admission,
      onConnection,
      log,
    })
    : undefined;
  if (web) {
    log.info("web_app", {
      url: web.url(),
      first_load_js_gzip: web.firstLoadBytes,
    });
  }
  registry.startSweeper(sessionLimits.idleTimeoutMs, log);
  bus?.start();
  peers.startSweeper(sessionLimits.idleTimeoutMs, log);
  const apply = async (next: ServerCertificate) => {
    await transports.setCertificate(next.certPem, next.keyPem);
    await moduleTransports?.setCertificate(next.certPem, next.keyPem);
    certificate = next;
    noteCertificate(next);
  };
  let stopWatching: () => void;
  if (acme) {
    acme.start(certificate, async (next) => {
      await apply(next);
      log.info("certificate_reloaded", { sha256: next.sha256, source: "acme" });
    });
    stopWatching = () => acme.stop();
  } else {
    stopWatching = watchCertificate(certSource, certificate, {
      intervalMs: options.certCheckMs ?? 3_600_000,
      log,
      apply,
    });
  }

  const stopBackups = config.backup
    ? scheduleBackups({
      from: { dataDir: config.dataDir, kvPath: config.kvPath },
      dir: config.backup.dir,
      everyMs: options.backupEveryMs ?? config.backup.everySeconds * 1000,
      keep: config.backup.keep,
      log,
      observe: (ok, at) => {
        metrics.backups.inc({ result: ok ? "ok" : "failed" });
        if (ok) metrics.backupLast.set({}, Math.floor(at.getTime() / 1000));
      },
    })
    : undefined;

  return {
    port: transports.port,
    hostname: config.hostname,
    certSha256: () => certificate.sha256,
    certificate: () => certificate,
    bootstrap,
    store,
    registry,
    commands: dispatcher.commandNames(),
    modules: host,
    metrics,
    metricsPort: metricsListener?.port,
    push,
    webUrl: web?.url(),
    webPort: localWeb?.port,
    modulePort: moduleTransports?.port,
    moduleSocket: moduleSocket?.path,
    close() {
      closing ??= (async () => {
        log.info("shutdown", { sessions: registry.size });
        stopWatching();
        await stopBackups?.();
        await metricsListener?.close();
        await challengeListener?.close();
        localWeb?.stop();
        await transports.stop();
        await moduleTransports?.stop();
        moduleSocket?.stop();
        await bus?.stop();
        await registry.closeAll("server shutting down", 5000);
        await peers.closeAll("server shutting down", 1000);
        await federation.close();
        await host.close();
        await push.close();
        transports.close();
        moduleTransports?.close();
        store.close();
      })();
      return closing;
    },
  };
}
