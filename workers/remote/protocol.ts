/**
 * The module link (docs/PROTOCOL.md section 12.9): how a remote module, a
 * process anywhere, reaches the server — over a Unix socket on the same host
 * or the module port (WebTransport, WebSocket as fallback) — logs in with
 * its own Ed25519 key, and then speaks the same bridge as a Worker or a
 * process module (workers/bridge). Shared by both ends.
 *
 * @module
 */

/** Largest frame either side of a link sends or accepts, before or after login. */
export const LINK_MAX_FRAME = 16 * 1024 * 1024;

/** Milliseconds a new link has to log in before it is dropped (default). */
export const LINK_LOGIN_MS = 10_000;

/** Instances of one module version connected at once, at most. */
export const LINK_MAX_INSTANCES = 32;

/** Links a Unix socket listener holds at once (logged in or not), at most. */
export const LINK_MAX_CONNECTIONS = 256;

/** The first request of a link: which module version, which key. */
export const LOGIN_REQUEST = "module_login_request";

/** The second: the proof. After its answer, the link carries the bridge. */
export const LOGIN_VERIFY = "module_login_verify";

/** The account a module version logs in as (the login context's `account`). */
export function moduleAccount(name: string, version: string): string {
  return `${name}@${version}`;
}

/** What the server answers a successful login with: what the module is granted. */
export interface LinkGrant {
  /** Module name. */
  module: string;
  /** Version. */
  version: string;
  /** Commands it is to serve (the server's copy of its manifest). */
  commands: string[];
  /** Events it may push. */
  events: string[];
  /** Core services it may call that need a grant. */
  services: string[];
  /** Deadline of one call in milliseconds. */
  timeout_ms: number;
}
