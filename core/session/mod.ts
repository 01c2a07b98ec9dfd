/**
 * Sessions: the loop between a transport connection and the dispatcher, and
 * the registry of live sessions used for pushes, idle timeouts and shutdown.
 *
 * Per session: frames are decoded and answered concurrently (responses may
 * overtake each other; clients match them by requestID), at most
 * `maxInflight` at a time (reading pauses beyond that), at most `rateLimit`
 * per second (beyond that a request is answered RATE_LIMITED unprocessed).
 * A request holds its slot until its response is written, so a client that
 * does not read stops being read from. Pushes are not awaited; a session
 * whose unwritten pushes pass {@link maxPushBacklog} is closed as a slow
 * consumer.
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";
import {
  type Dispatcher,
  ErrorCode,
  type SessionInfo,
} from "../protocol/mod.ts";
import type { Connection } from "../transport/mod.ts";
import {
  decodeDocument,
  type Document,
  encodeDocument,
  exactRequestId,
  FrameError,
  isRequestId,
  type Push,
  type Response,
} from "../wire/mod.ts";
import { TokenBucket } from "../../shared/token_bucket.ts";

/** Limits applied to every session. */
export interface SessionLimits {
  /** Requests processed at once. */
  maxInflight: number;
  /** Requests per second (burst twice this). */
  rateLimit: number;
  /** Largest frame the server sends or accepts. */
  maxFrame: number;
  /** Milliseconds of client silence before the session is closed. */
  idleTimeoutMs: number;
  /**
   * Bytes per second of large answers (transfers: over {@link PACED_ABOVE}
   * bytes) per session, both streams together; 0: unpaced. Default
   * {@link TRANSFER_RATE}.
   */
  transferRate?: number;
  /**
   * Bytes per second of large answers per user, all of the user's sessions
   * together; 0: no per-user pace. Default {@link TRANSFER_RATE_USER}.
   */
  transferRateUser?: number;
}

/** Answers larger than this many bytes are transfers, paced to the session's transfer rate. */
export const PACED_ABOVE = 64 * 1024;
/** Default transfer rate of a session: 8 MiB/s. */
export const TRANSFER_RATE = 8 * 1024 * 1024;
/** Default transfer rate of a user, all sessions together: 16 MiB/s. */
export const TRANSFER_RATE_USER = 16 * 1024 * 1024;
/** Bytes a transfer pacer lets through at once (one chunk: a command waits behind at most one). */
const TRANSFER_BURST = 256 * 1024;

/**
 * Bytes of pushes a session may have queued but not yet written before it is
 * closed as a slow consumer: 8 MiB, or two frames when frames are larger.
 */
export function maxPushBacklog(maxFrame: number): number {
  return Math.max(8 * 1024 * 1024, 2 * maxFrame);
}

/** A live session. */
class Session {
  readonly info: SessionInfo;
  readonly conn: Connection;
  lastSeen = performance.now();
  /** The session a transfer lane belongs to (its activity counts there). */
  owner?: Session;
  /** Paces large answers (shared by a session and its lane). */
  pacer?: TokenBucket;
  /** Bytes per second of large answers per user (0: none). */
  userRate = 0;
  readonly #registry: SessionRegistry;
  inflight = 0;
  /** Bytes of pushes handed to the connection and not yet written. */
  pushBacklog = 0;
  /** The users whose pushes this session receives, each with the hashes of the tokens that bound it. */
  readonly users = new Map<string, Set<string>>();
  #slotWaiter?: () => void;
  #drainWaiters: (() => void)[] = [];

  constructor(
    conn: Connection,
    registry: SessionRegistry,
    /** The transfer lane shares the info (logins, pushes) of its session. */
    info?: SessionInfo,
  ) {
    this.conn = conn;
    this.#registry = registry;
    this.info = info ?? {
      id: conn.id,
      transport: conn.transport,
      remoteAddr: conn.remoteAddr,
      data: new Map(),
      bindUser: (address, tokenHash) =>
        registry.bindUser(this, address, tokenHash),
    };
  }

  waitForSlot(): Promise<void> {
    return new Promise((resolve) => this.#slotWaiter = resolve);
  }

  release(): void {
    this.inflight--;
    const waiter = this.#slotWaiter;
    this.#slotWaiter = undefined;
    waiter?.();
    if (this.inflight === 0) {
      for (const resolve of this.#drainWaiters.splice(0)) resolve();
    }
  }

  drained(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  /**
   * Encode and send; resolves when written. Not async: the document is not
   * kept alive while the write waits, only its encoding.
   */
  send(doc: Document, maxFrame: number): Promise<void> {
    let frame = encodeDocument(doc);
    if (frame.byteLength > maxFrame) {
      frame = encodeDocument({
        command: doc.command,
        requestID: doc.requestID,
        error: ErrorCode.INTERNAL,
        message: "response larger than the frame limit",
      });
    }
    // A transfer waits for its turn at the session's rate (holding its
    // in-flight place), so that commands and pushes keep their latency.
    let wait = 0;
    if (frame.byteLength > PACED_ABOVE) {
      wait = this.pacer?.borrow(frame.byteLength) ?? 0;
      if (this.userRate > 0) {
        wait = Math.max(
          wait,
          this.#registry.transferWait(
            (this.owner ?? this).users.keys(),
            frame.byteLength,
            this.userRate,
          ),
        );
      }
    }
    if (wait > 0) {
      return new Promise((resolve) => setTimeout(resolve, wait)).then(() =>
        this.conn.send(frame)
      );
    }
    return this.conn.send(frame);
  }
}

/** Live sessions, indexed by the user they act for. */
export class SessionRegistry {
  readonly #sessions = new Set<Session>();
  readonly #byUser = new Map<string, Set<Session>>();
  /** Each user's transfer pace, shared by the user's sessions. */
  readonly #userPacers = new Map<string, TokenBucket>();
  readonly #log?: Logger;
  #sweeper?: ReturnType<typeof setInterval>;

  /** Create a registry; `log` reports slow consumers. */
  constructor(options: { log?: Logger } = {}) {
    this.#log = options.log;
  }

  /** Number of live sessions. */
  get size(): number {
    return this.#sessions.size;
  }

  /** Open sessions by transport (`webtransport`, `websocket`, `peer`). */
  byTransport(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const session of this.#sessions) {
      const name = session.conn.transport;
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    return counts;
  }

  /** Add a session (called by {@link runSession}). */
  add(session: Session): void {
    this.#sessions.add(session);
  }

  /** Remove a session. */
  remove(session: Session): void {
    this.#sessions.delete(session);
    for (const address of session.users.keys()) {
      this.#unbind(session, address);
    }
  }

  /**
   * Let a session receive the pushes of `address`, because it used a token
   * of that user (its hash): a session may act for several users at once.
   */
  bindUser(session: Session, address: string, tokenHash: string): void {
    let tokens = session.users.get(address);
    if (!tokens) {
      session.users.set(address, tokens = new Set());
      let set = this.#byUser.get(address);
      if (!set) this.#byUser.set(address, set = new Set());
      set.add(session);
    }
    tokens.add(tokenHash);
  }

  /**
   * A token was revoked: sessions bound to `address` by that token alone
   * stop receiving its pushes (every token of the user when `tokenHash` is
   * not given).
   */
  unbindToken(address: string, tokenHash?: string): void {
    for (const session of [...this.#byUser.get(address) ?? []]) {
      const tokens = session.users.get(address)!;
      if (tokenHash !== undefined) tokens.delete(tokenHash);
      if (tokenHash === undefined || tokens.size === 0) {
        this.#unbind(session, address);
      }
    }
  }

  #unbind(session: Session, address: string): void {
    session.users.delete(address);
    const set = this.#byUser.get(address);
    set?.delete(session);
    if (set?.size === 0) {
      this.#byUser.delete(address);
      this.#userPacers.delete(address);
    }
  }

  /**
   * Milliseconds a large answer of `bytes` for sessions acting for `users`
   * waits for its turn at `rate` bytes per second per user (each user's
   * sessions share one pace, kept while the user has sessions).
   */
  transferWait(users: Iterable<string>, bytes: number, rate: number): number {
    let wait = 0;
    for (const address of users) {
      let pacer = this.#userPacers.get(address);
      if (!pacer) {
        this.#userPacers.set(
          address,
          pacer = new TokenBucket(rate, TRANSFER_BURST),
        );
      }
      wait = Math.max(wait, pacer.borrow(bytes));
    }
    return wait;
  }

  /**
   * Send a push to every live session of `address`, naming the account it
   * is for (a session may act for several); returns how many got it.
   */
  async push(address: string, push: Push, maxFrame: number): Promise<number> {
    const sessions = this.#byUser.get(address);
    if (!sessions) return 0;
    return await this.#sendAll(
      [...sessions],
      { ...push, account: address },
      maxFrame,
    );
  }

  /**
   * Encode once, queue the same frame on each session without waiting for
   * the writes: a session that does not read must not hold up the sender.
   * A session whose queued pushes would pass the backlog bound is closed.
   */
  #sendAll(
    sessions: Session[],
    push: Push,
    maxFrame: number,
  ): Promise<number> {
    if (sessions.length === 0) return Promise.resolve(0);
    const frame = encodeDocument(push);
    if (frame.byteLength > maxFrame) {
      throw new Error(
        `push of ${frame.byteLength} bytes exceeds the frame limit`,
      );
    }
    const bound = maxPushBacklog(maxFrame);
    let sent = 0;
    for (const session of sessions) {
      if (session.pushBacklog + frame.byteLength > bound) {
        this.#log?.warn("slow_consumer", {
          session: session.info.id,
          queued: session.pushBacklog,
        });
        session.conn.close("slow consumer");
        continue;
      }
      session.pushBacklog += frame.byteLength;
      session.conn.send(frame).finally(() =>
        session.pushBacklog -= frame.byteLength
      );
      sent++;
    }
    return Promise.resolve(sent);
  }

  /** Close sessions silent for longer than `idleMs`, checking every second. */
  startSweeper(idleMs: number, log: Logger): void {
    this.#sweeper = setInterval(() => {
      const now = performance.now();
      for (const session of this.#sessions) {
        if (now - session.lastSeen > idleMs) {
          log.info("session_idle", { session: session.info.id });
          session.conn.close("idle timeout");
        }
      }
    }, 1000);
  }

  /** Wait (at most `deadlineMs`) for in-flight requests, then close every session. */
  async closeAll(reason: string, deadlineMs: number): Promise<void> {
    clearInterval(this.#sweeper);
    const all = [...this.#sessions];
    await Promise.race([
      Promise.all(all.map((s) => s.drained())),
      new Promise((resolve) => setTimeout(resolve, deadlineMs)),
    ]);
    for (const session of all) session.conn.close(reason);
  }
}

/** What {@link runSession} needs. */
export interface SessionOptions {
  /** Answers requests. */
  dispatcher: Dispatcher;
  /** Registry of live sessions. */
  registry: SessionRegistry;
  /** Limits. */
  limits: SessionLimits;
  /** Logger. */
  log: Logger;
}

function errorResponse(
  request: Document | undefined,
  error: number,
  message: string,
  data?: unknown,
): Response {
  const response: Response = {
    command: typeof request?.command === "string" ? request.command : "",
    error,
    message,
  };
  if (isRequestId(request?.requestID)) response.requestID = request.requestID;
  if (data !== undefined) response.data = data;
  return response;
}

/** Serve one connection until it closes. */
export async function runSession(
  conn: Connection,
  options: SessionOptions,
): Promise<void> {
  const { registry, limits } = options;
  const log = options.log.child({ session: conn.id });
  const session = new Session(conn, registry);
  const rate = limits.transferRate ?? TRANSFER_RATE;
  if (rate > 0) session.pacer = new TokenBucket(rate, TRANSFER_BURST);
  session.userRate = limits.transferRateUser ?? TRANSFER_RATE_USER;
  registry.add(session);
  log.debug("session_open", {
    transport: conn.transport,
    ip: conn.remoteAddr,
  });
  // The transfer lane, once the client opens it: served beside the command
  // stream with its own in-flight cap, its own rate bucket, the same session.
  // The lane ends with the connection, closed below.
  conn.lane?.then((laneConn) => {
    const transfers = new Session(laneConn, registry, session.info);
    transfers.owner = session;
    transfers.pacer = session.pacer;
    transfers.userRate = session.userRate;
    // The lane lives as long as the session: its end (or broken framing on
    // it) ends the session.
    serveFrames(transfers, {
      ...options,
      log,
      limits: { ...limits, maxInflight: TRANSFER_INFLIGHT },
    }).finally(() => conn.close("transfer lane ended"));
  });
  try {
    await serveFrames(session, { ...options, log });
  } finally {
    await session.drained();
    registry.remove(session);
    // Give the last response a moment to leave before closing.
    setTimeout(() => conn.close("session ended"), 50);
    log.debug("session_closed", {});
  }
}

/** Requests in flight on a session's transfer lane (each answer up to a chunk). */
export const TRANSFER_INFLIGHT = 8;

/** Read, check and dispatch the frames of one stream of a session until it ends. */
async function serveFrames(
  session: Session,
  options: SessionOptions,
): Promise<void> {
  const { dispatcher, limits, log } = options;
  const conn = session.conn;
  const bucket = new TokenBucket(limits.rateLimit, limits.rateLimit * 2);
  try {
    for await (const frame of conn.frames()) {
      session.lastSeen = performance.now();
      if (session.owner) session.owner.lastSeen = session.lastSeen;
      let request: Document;
      try {
        request = decodeDocument(frame);
        // A number is echoed with its own BSON type (int32, int64, double).
        if (
          request.requestID !== undefined &&
          typeof request.requestID !== "string"
        ) {
          request.requestID = exactRequestId(frame) ?? request.requestID;
        }
      } catch (error) {
        await session.send(
          errorResponse(
            undefined,
            ErrorCode.MALFORMED,
            (error as Error).message,
          ),
          limits.maxFrame,
        );
        continue;
      }
      if (!bucket.take()) {
        await session.send(
          errorResponse(
            request,
            ErrorCode.RATE_LIMITED,
            `more than ${limits.rateLimit} requests per second`,
            { retry_after: 1 },
          ),
          limits.maxFrame,
        );
        continue;
      }
      while (session.inflight >= limits.maxInflight) {
        await session.waitForSlot();
      }
      // The slot is released once the response is written (send drains).
      session.inflight++;
      dispatcher.dispatch(request, session.info)
        .then((response) => session.send(response, limits.maxFrame))
        .catch((error) => log.error("send_failed", { error: String(error) }))
        .finally(() => session.release());
    }
  } catch (error) {
    if (error instanceof FrameError) {
      log.warn("frame_refused", { reason: error.message });
      await session.send(
        errorResponse(
          undefined,
          error.code === "frame_too_large"
            ? ErrorCode.FRAME_TOO_LARGE
            : ErrorCode.MALFORMED,
          error.message,
        ),
        limits.maxFrame,
      );
    } else {
      log.debug("session_error", { error: String(error) });
    }
  }
}
