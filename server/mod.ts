/**
 * Wiring: configuration -> storage -> certificate -> services -> dispatcher
 * -> transports. The one place that knows every part; `main.ts` and the tests
 * start servers through {@link startServer}.
 *
 * @module
 */

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
import { moduleCommands } from "../core/admin/modules.ts";
import { Federation } from "../core/federation/mod.ts";
import { secureDataDir } from "./data_dir.ts";
import { moduleServices } from "./module_services.ts";
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
  /** Web Push (tests wait for its deliveries). */
  push: WebPush;
  /** Where people open the web app, when it is served. */
  webUrl?: string;
  /** Port of the web app's loopback listener, when it runs. */
  webPort?: number;
  /** Stop accepting, finish in-flight work, close sessions and KV. */
  close(): Promise<void>;
}

/** Options of {@link startServer}. */
export interface StartOptions {
  /** Logger; one from the configuration otherwise. */
  log?: Logger;
  /** Milliseconds between certificate checks (default one hour). */
  certCheckMs?: number;
  /** Clock of logins and tokens in epoch milliseconds: challenge and token expiry, blocks (tests move it). */
  now?: () => number;
  /** Handshake timeout in milliseconds (tests; AMTP_HANDSHAKE_TIMEOUT otherwise). */
  handshakeTimeoutMs?: number;
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
  const store = await openStore(config.kvPath, { log });
  const names = serverNames(config);
  const certSource = {
    dataDir: config.dataDir,
    names,
    certFile: config.certFile,
    keyFile: config.keyFile,
  };
  let certificate: ServerCertificate;
  try {
    certificate = await loadCertificate(certSource, log);
  } catch (error) {
    store.close();
    throw error;
  }
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
  };
  const registry = new SessionRegistry({ log });
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
    kv: store.kv,
    stores: config.moduleStorage === "files"
      ? `${config.dataDir}/modules`
      : undefined,
    log,
    denoConfig: new URL("../deno.json", import.meta.url).pathname,
    services: moduleServices({
      store,
      registry,
      maxFrame: config.maxFrame,
      federation,
      // New mail reaches closed apps through Web Push.
      notify: (address, module, event, data) => {
        if (module === "messages" && event === "message_new") {
          push.newMessage(address, (data ?? {}) as Record<string, unknown>);
        }
      },
    }),
    ...options.moduleHost,
  });
  await host.start();
  // Deliveries and bounces start once the modules that take them run.
  federation.queue.start();
  const modules = () => host.router.available();
  const dispatcher = new Dispatcher({
    log,
    verifyToken: (kind, token) => tokens.verify(kind, token),
    routeModule: (request, ctx) => host.router.route(request, ctx),
    timeoutMs: config.commandTimeout * 1000,
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
        await federation.handleHttp(request) ??
          await web?.handlePublic(request) ?? homePage(request),
      log,
    });
  } catch (error) {
    store.close();
    throw error;
  }
  transportPort = transports.port;
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
  peers.startSweeper(sessionLimits.idleTimeoutMs, log);
  const stopWatching = watchCertificate(certSource, certificate, {
    intervalMs: options.certCheckMs ?? 3_600_000,
    log,
    apply: async (next) => {
      await transports.setCertificate(next.certPem, next.keyPem);
      certificate = next;
    },
  });

  let closing: Promise<void> | undefined;
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
    push,
    webUrl: web?.url(),
    webPort: localWeb?.port,
    close() {
      closing ??= (async () => {
        log.info("shutdown", { sessions: registry.size });
        stopWatching();
        localWeb?.stop();
        await transports.stop();
        await registry.closeAll("server shutting down", 5000);
        await peers.closeAll("server shutting down", 1000);
        await federation.close();
        await host.close();
        await push.close();
        transports.close();
        store.close();
      })();
      return closing;
    },
  };
}
