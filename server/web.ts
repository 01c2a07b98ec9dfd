/**
 * Serving the web app (web/): on the TCP port (HTTPS, next to the WebSocket
 * upgrade and the delivery policy), and, while the certificate is
 * self-signed (no browser trusts it), on `http://localhost:AMTP_WEB_PORT`
 * (plain HTTP on loopback only: browsers count it as a secure context),
 * where the page pins the certificate's hash for WebTransport by itself and
 * falls back to WebSocket on the same loopback port.
 *
 * Every answer carries a strict Content-Security-Policy (scripts and styles
 * from this origin only, connections only to this server, no frames of
 * others, no inline code); nothing is loaded from another host. The mail
 * frame (`/mail.html`, sandboxed, for HTML mail) has a policy of its own that
 * blocks remote content unless the reader asked for it (`?remote=1`).
 *
 * @module
 */

import type { Config } from "../core/config/mod.ts";
import type { Logger } from "../core/log/mod.ts";
import type { ServerCertificate } from "../core/tls/mod.ts";
import type { Listener, ListenerOptions } from "../core/transport/mod.ts";
import type { RequestHead } from "../core/transport/http.ts";
import { listenTcp } from "../core/transport/tcp.ts";
import { buildWeb, readDist } from "../web/build.ts";

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  svg: "image/svg+xml",
  webmanifest: "application/manifest+json",
  json: "application/json",
};

/** One file of the app, ready to serve. */
interface Asset {
  body: Uint8Array;
  gzip?: Uint8Array;
  type: string;
  etag: string;
}

/** How a page reaches the AMTP port. */
interface Site {
  /** WebTransport URL. */
  webtransport: string;
  /** WebSocket URL. */
  websocket: string;
  /** Certificate hash to pin (self-signed), or undefined. */
  certHash?: string;
}

async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function etagOf(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    bytes as Uint8Array<ArrayBuffer>,
  );
  return `"${
    Array.from(new Uint8Array(digest).subarray(0, 12), (b) =>
      b.toString(16).padStart(2, "0")).join("")
  }"`;
}

function origin(url: string): string {
  return new URL(url.replace(/^ws/, "http")).origin.replace(
    /^http/,
    url.startsWith("ws") ? "ws" : "http",
  );
}

/** The app's policy: this origin and the AMTP port, nothing else. */
function appPolicy(site: Site): string {
  const connect = ["'self'", origin(site.webtransport), origin(site.websocket)];
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob: data:",
    `connect-src ${[...new Set(connect)].join(" ")}`,
    "frame-src 'self'",
    "worker-src 'self'",
    "manifest-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

/**
 * The mail frame's policy: no script but its own, inline styles of the
 * mail, images only from the message itself unless remote content was
 * asked for.
 */
function framePolicy(remote: boolean): string {
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'unsafe-inline'",
    `img-src data: blob:${remote ? " https:" : ""}`,
    "font-src data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'self'",
  ].join("; ");
}

const COMMON_HEADERS = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
  "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
};

/** What the web app needs from the running server. */
export interface WebAppOptions {
  /** The configuration. */
  config: Config;
  /** Logger. */
  log: Logger;
  /** The certificate in use. */
  certificate: () => ServerCertificate;
  /** The AMTP port in use. */
  port: () => number;
}

/** The web app, built and held in memory, served by the server's listeners. */
export class WebApp {
  readonly #options: WebAppOptions;
  readonly #assets: Map<string, Asset>;
  #local?: Listener;

  private constructor(options: WebAppOptions, assets: Map<string, Asset>) {
    this.#options = options;
    this.#assets = assets;
  }

  /**
   * Build the app (or read `web/dist/` where it cannot be built); undefined
   * (with a warning) when there is neither.
   */
  static async open(options: WebAppOptions): Promise<WebApp | undefined> {
    let files: Map<string, Uint8Array> | undefined;
    const started = performance.now();
    try {
      files = await buildWeb();
      options.log.info("web_built", {
        ms: Math.round(performance.now() - started),
        app_js: files.get("app.js")!.length,
      });
    } catch (error) {
      files = await readDist();
      options.log.warn("web_build_failed", {
        error: String(error).slice(0, 500),
        using: files ? "web/dist" : "nothing: the web app is not served",
      });
    }
    if (!files) return undefined;
    const assets = new Map<string, Asset>();
    for (const [name, body] of files) {
      const type = TYPES[name.split(".").pop()!] ?? "application/octet-stream";
      assets.set(name, {
        body,
        gzip: /^(text|application)/.test(type) || name.endsWith(".svg")
          ? await gzip(body)
          : undefined,
        type,
        etag: await etagOf(body),
      });
    }
    return new WebApp(options, assets);
  }

  /** Gzip size of the first load's JavaScript (app.js). */
  get firstLoadBytes(): number {
    const app = this.#assets.get("app.js")!;
    return (app.gzip ?? app.body).length;
  }

  /**
   * Where people open the app: the loopback listener while it runs, else the
   * TCP port under the server's name.
   */
  url(): string {
    if (this.#local) return `http://localhost:${this.#local.port}/`;
    const port = this.#options.port();
    return `https://${this.#options.config.hostname}${
      port === 443 ? "" : `:${port}`
    }/`;
  }

  /** The AMTP port as browsers reach it (`AMTP_WEB_CONNECT`, else `host`:port). */
  #connect(host: string): string {
    return this.#options.config.webConnect ??
      `${host}:${this.#options.port()}`;
  }

  /** An answer on the TCP port (HTTPS), or undefined for paths that are not the app's. */
  handlePublic(request: Request): Promise<Response> | undefined {
    const name = this.#nameOf(new URL(request.url).pathname);
    if (!name) return undefined;
    const at = this.#connect(this.#options.config.hostname);
    const cert = this.#options.certificate();
    return Promise.resolve(this.#serve(request, name, {
      webtransport: `https://${at}/amtp`,
      websocket: `wss://${at}/amtp`,
      certHash: cert.selfSigned ? cert.sha256 : undefined,
    }));
  }

  /**
   * The Host of a request to the loopback listener when it is a loopback
   * name (any port: a page may come through a port forward); anything else
   * is a page under a stranger's name (DNS rebinding).
   */
  #localHost(request: { headers: Headers }): string | undefined {
    const host = (request.headers.get("host") ?? "").toLowerCase();
    return /^(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?$/.test(host)
      ? host
      : undefined;
  }

  /** An answer on the loopback listener. */
  #handleLocal(request: Request): Response {
    // A page reached under another name (DNS rebinding) gets nothing.
    const host = this.#localHost(request);
    if (!host) {
      return new Response("this page is served to localhost only\n", {
        status: 403,
      });
    }
    const name = this.#nameOf(new URL(request.url).pathname);
    if (!name) return new Response("not found\n", { status: 404 });
    const { config } = this.#options;
    // QUIC listens on AMTP_HOST: a loopback address reaches it unless that
    // is one other address.
    const quicHost = config.host === "0.0.0.0" || config.host.startsWith("127.")
      ? "127.0.0.1"
      : config.host === "::" || config.host === "::1"
      ? "[::1]"
      : config.host.includes(":")
      ? `[${config.host}]`
      : config.host;
    return this.#serve(request, name, {
      webtransport: `https://${this.#connect(quicHost)}/amtp`,
      websocket: `ws://${host}/amtp`,
      certHash: this.#options.certificate().sha256,
    });
  }

  /** The asset (or `config.json`) a path names, or undefined. */
  #nameOf(path: string): string | undefined {
    const name = path === "/" ? "index.html" : path.slice(1);
    if (name === "config.json" || this.#assets.has(name)) return name;
    return undefined;
  }

  #serve(request: Request, name: string, site: Site): Response {
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed\n", {
        status: 405,
        headers: { allow: "GET, HEAD" },
      });
    }
    const remote = new URL(request.url).searchParams.get("remote") === "1";
    const headers: Record<string, string> = {
      ...COMMON_HEADERS,
      "content-security-policy": name === "mail.html"
        ? framePolicy(remote)
        : appPolicy(site),
      "x-frame-options": name === "mail.html" ? "SAMEORIGIN" : "DENY",
      "cache-control": "no-cache",
    };
    // The mail frame is sandboxed (an opaque origin): its script is a
    // cross-origin load for it, harmless public code.
    if (name === "mail.js") {
      headers["cross-origin-resource-policy"] = "cross-origin";
    }
    if (name === "config.json") {
      const body = JSON.stringify({
        hostname: this.#options.config.hostname,
        webtransport: site.webtransport,
        websocket: site.websocket,
        cert_sha256: site.certHash ?? null,
      });
      return new Response(body, {
        headers: {
          ...headers,
          "content-type": TYPES.json,
          "cache-control": "no-store",
        },
      });
    }
    const asset = this.#assets.get(name)!;
    headers.etag = asset.etag;
    headers.vary = "accept-encoding";
    if (request.headers.get("if-none-match") === asset.etag) {
      return new Response(null, { status: 304, headers });
    }
    const gzipped = asset.gzip &&
      /\bgzip\b/.test(request.headers.get("accept-encoding") ?? "");
    const body = gzipped ? asset.gzip! : asset.body;
    headers["content-type"] = asset.type;
    headers["content-length"] = String(body.length);
    if (gzipped) headers["content-encoding"] = "gzip";
    return new Response(body as Uint8Array<ArrayBuffer>, { headers });
  }

  /**
   * Start the loopback listener (`http://localhost:PORT`, plain HTTP on
   * 127.0.0.1): the app, and WebSocket sessions at `/amtp` for pages whose
   * WebTransport is blocked. A port in use is a warning, not a failure.
   */
  listenLocal(
    options: Omit<ListenerOptions, "hostname" | "port" | "httpHandler">,
  ): Listener | undefined {
    const port = this.#options.config.webPort;
    try {
      this.#local = listenTcp(
        {
          ...options,
          hostname: "127.0.0.1",
          port,
          httpHandler: (request) => this.#handleLocal(request),
        },
        {
          secure: false,
          upgradeAllowed: (head) => this.#upgradeAllowed(head),
        },
      );
    } catch (error) {
      this.#options.log.warn("web_port_unavailable", {
        port,
        error: String(error),
        hint: "set AMTP_WEB_PORT to a free port (0: any)",
      });
      return undefined;
    }
    return this.#local;
  }

  /** A WebSocket upgrade on the loopback port: from a loopback name, and from this app when a browser says where from. */
  #upgradeAllowed(head: RequestHead): boolean {
    const host = this.#localHost(head);
    if (!host) return false;
    const from = head.headers.get("origin");
    return from === null || from === `http://${host}`;
  }
}
