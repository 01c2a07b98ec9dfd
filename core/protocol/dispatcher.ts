/**
 * The dispatcher: from a decoded request to a response. It validates the
 * envelope, checks the token a command needs, validates parameters, runs the
 * handler under a deadline and turns whatever happens into a response. It
 * never sees a socket or a frame.
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";
import type { Document, RequestId, Response } from "../wire/mod.ts";
import { isRequestId } from "../wire/mod.ts";
import { ErrorCode, ProtocolError } from "./errors.ts";
import { inSpan, SpanKind } from "../trace/mod.ts";
import { type Params, type ParamSchema, validateParams } from "./params.ts";

/** Which token a command needs. */
export type AuthKind = "none" | "admin" | "user";

/** The authenticated caller, set by the core from the token, never by the client. */
export interface Caller {
  /** Admin or user. */
  kind: "admin" | "user";
  /** Admin name or user address. */
  name: string;
  /** SHA-256 of the token (hex), identifying the login session. */
  tokenHash: string;
}

/** What a handler may know about the session a request came on. */
export interface SessionInfo {
  /** Unique session id. */
  id: string;
  /** `webtransport` or `websocket`, for information only. */
  transport: string;
  /** The client's IP address. */
  remoteAddr: string;
  /** Per-session scratch state (login challenges), dropped with the session. */
  data: Map<string, unknown>;
  /**
   * Called when a user token was accepted on this session: the session then
   * receives that user's pushes too (a session may act for several users),
   * until the token (by its hash) is revoked.
   */
  bindUser?: (address: string, tokenHash: string) => void;
}

/** Everything a handler gets besides its parameters. */
export interface HandlerContext {
  /** The session the request came on. */
  session: SessionInfo;
  /** The authenticated caller, for commands that need a token. */
  caller?: Caller;
  /** Logger tagged with session and command. */
  log: Logger;
}

/** A command: its name, the token it needs, its parameters and its handler. */
export interface Command<S extends ParamSchema = ParamSchema> {
  /** Command name on the wire. */
  name: string;
  /** Token needed. */
  auth: AuthKind;
  /** Parameter schema (the token parameter is checked separately). */
  params: S;
  /** Runs the command; returns `data` or throws a {@link ProtocolError}. */
  handler: (params: Params<S>, ctx: HandlerContext) => unknown;
}

/**
 * Define a command with its parameter types inferred from the schema. The
 * result is type-erased so commands of different schemas share one list; the
 * dispatcher validates against the schema before the handler runs.
 */
export function defineCommand<S extends ParamSchema>(
  command: Command<S>,
): Command {
  return {
    ...command,
    handler: (params, ctx) => command.handler(params as Params<S>, ctx),
  };
}

/** Checks a token of a kind; throws NOT_LOGGED_IN or FORBIDDEN. */
export type TokenVerifier = (
  kind: "admin" | "user",
  token: string,
) => Promise<Caller>;

/** Handles a request naming a `module` (the module host). */
export type ModuleRouter = (
  request: Document,
  ctx: HandlerContext,
) => Promise<unknown>;

/** Options for {@link Dispatcher}. */
export interface DispatcherOptions {
  /** Logger. */
  log: Logger;
  /** Token verification, required for commands with `auth` other than `none`. */
  verifyToken?: TokenVerifier;
  /** Where requests with a `module` field go. */
  routeModule?: ModuleRouter;
  /** Deadline for one command in milliseconds. */
  timeoutMs?: number;
  /**
   * Whether a `module` field routes the request to a module (client
   * sessions). On server-to-server sessions it is an ordinary parameter.
   */
  moduleEnvelope?: boolean;
  /** Told of every answered request (metrics). */
  observe?: (answered: Answered) => void;
  /** Name of the command spans (`amtp.command`, `amtp.s2s`). */
  spanName?: string;
}

/** One answered request, for metrics. */
export interface Answered {
  /** The command name as sent (empty when none). */
  command: string;
  /** The module it went to, if any. */
  module?: string;
  /** The error code answered (0 for success). */
  error: number;
  /** Milliseconds from receipt to answer. */
  ms: number;
}

const TOKEN_PARAM = { admin: "admin_token", user: "user_token" } as const;

/** Routes requests to registered commands. */
export class Dispatcher {
  readonly #commands = new Map<string, Command>();
  readonly #log: Logger;
  readonly #verifyToken?: TokenVerifier;
  readonly #routeModule?: ModuleRouter;
  readonly #timeoutMs: number;
  readonly #inflight = new Set<
    { due: number; reject: (error: Error) => void }
  >();
  #sweeper?: ReturnType<typeof setInterval>;
  readonly #moduleEnvelope: boolean;
  readonly #observe?: (answered: Answered) => void;
  readonly #spanName: string;

  /** Create a dispatcher. */
  constructor(options: DispatcherOptions) {
    this.#moduleEnvelope = options.moduleEnvelope ?? true;
    this.#log = options.log;
    this.#verifyToken = options.verifyToken;
    this.#routeModule = options.routeModule;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#observe = options.observe;
    this.#spanName = options.spanName ?? "amtp.command";
  }

  /** Register commands; a name registered twice is a programming error. */
  register(...commands: Command[]): this {
    for (const command of commands) {
      if (this.#commands.has(command.name)) {
        throw new Error(`command ${command.name} registered twice`);
      }
      this.#commands.set(command.name, command);
    }
    return this;
  }

  /** Names of the registered core commands, sorted. */
  commandNames(): string[] {
    return [...this.#commands.keys()].sort();
  }

  /**
   * Answer one decoded request, in a span (continuing the trace of a
   * `traceparent` it carries). Never throws.
   */
  async dispatch(request: Document, session: SessionInfo): Promise<Response> {
    const started = performance.now();
    const command = typeof request.command === "string" ? request.command : "";
    const module = this.#moduleEnvelope && typeof request.module === "string"
      ? request.module
      : undefined;
    const response = await inSpan(this.#spanName, {
      kind: SpanKind.SERVER,
      traceparent: request.traceparent,
      attributes: {
        "amtp.command": command.slice(0, 128),
        "amtp.transport": session.transport,
        ...(module ? { "amtp.module": module.slice(0, 64) } : {}),
      },
    }, async (span) => {
      const response = await this.#answer(command, request, session);
      span.setAttribute("amtp.error", response.error);
      return response;
    });
    this.#observe?.({
      command,
      module,
      error: response.error,
      ms: performance.now() - started,
    });
    return response;
  }

  async #answer(
    command: string,
    request: Document,
    session: SessionInfo,
  ): Promise<Response> {
    const requestID = request.requestID;
    const response: Response = { command, error: ErrorCode.OK };
    if (requestID !== undefined) response.requestID = requestID as RequestId;
    const log = this.#log.child({ session: session.id, command });
    try {
      if (requestID !== undefined && !isRequestId(requestID)) {
        response.requestID = undefined;
        throw new ProtocolError(
          ErrorCode.MALFORMED,
          "requestID must be a string of at most 128 characters, an int32, an int64 or a finite double",
        );
      }
      if (!command) {
        throw new ProtocolError(
          ErrorCode.MALFORMED,
          'the request has no "command" string',
        );
      }
      const data = await this.#withDeadline(
        this.#run(command, request, session, log),
      );
      if (data !== undefined) response.data = data;
    } catch (error) {
      if (error instanceof ProtocolError) {
        response.error = error.code;
        response.message = error.message;
        if (error.data !== undefined) response.data = error.data;
      } else {
        log.error("handler_failed", {
          error: error instanceof Error
            ? error.stack ?? error.message
            : String(error),
        });
        response.error = ErrorCode.INTERNAL;
        response.message = "internal server error";
      }
    }
    if (response.requestID === undefined) delete response.requestID;
    return response;
  }

  async #run(
    name: string,
    request: Document,
    session: SessionInfo,
    log: Logger,
  ): Promise<unknown> {
    if (request.module !== undefined && this.#moduleEnvelope) {
      if (typeof request.module !== "string") {
        throw new ProtocolError(
          ErrorCode.INVALID_PARAMETER,
          'parameter "module" must be of type string',
        );
      }
      if (!this.#routeModule) {
        throw new ProtocolError(
          ErrorCode.MODULE_UNAVAILABLE,
          `module "${request.module}" is not available`,
        );
      }
      const caller = await this.#authenticate("user", request);
      session.bindUser?.(caller.name, caller.tokenHash);
      return await this.#routeModule(request, { session, caller, log });
    }
    const command = this.#commands.get(name);
    if (!command) {
      throw new ProtocolError(
        ErrorCode.UNKNOWN_COMMAND,
        `unknown command "${name.slice(0, 64)}"`,
      );
    }
    let caller: Caller | undefined;
    if (command.auth !== "none") {
      caller = await this.#authenticate(command.auth, request);
      if (caller.kind === "user") {
        session.bindUser?.(caller.name, caller.tokenHash);
      }
    }
    const params = validateParams(command.params, request);
    return await command.handler(params, { session, caller, log });
  }

  async #authenticate(
    kind: "admin" | "user",
    request: Document,
  ): Promise<Caller> {
    const param = TOKEN_PARAM[kind];
    const token = request[param];
    if (token === undefined || token === null) {
      const other = request[TOKEN_PARAM[kind === "admin" ? "user" : "admin"]];
      if (typeof other === "string") {
        throw new ProtocolError(
          ErrorCode.FORBIDDEN,
          `this command needs ${param}, not a token of the other kind`,
        );
      }
      throw new ProtocolError(
        ErrorCode.NOT_LOGGED_IN,
        `this command needs "${param}": log in first`,
      );
    }
    if (typeof token !== "string" || token.length > 256) {
      throw new ProtocolError(
        ErrorCode.INVALID_PARAMETER,
        `parameter "${param}" must be a string`,
      );
    }
    if (!this.#verifyToken) {
      throw new ProtocolError(
        ErrorCode.NOT_LOGGED_IN,
        "login is not available",
      );
    }
    return await this.#verifyToken(kind, token);
  }

  /**
   * Race `work` against the command deadline. One shared sweeper checks the
   * deadlines of all requests in flight (a timer per request costs more than
   * the cheapest commands), so a timeout is answered up to a quarter of the
   * deadline (at most a second) late.
   */
  #withDeadline<T>(work: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry = { due: performance.now() + this.#timeoutMs, reject };
      this.#inflight.add(entry);
      this.#startSweeper();
      work.then(
        (value) => {
          this.#inflight.delete(entry);
          resolve(value);
        },
        (error) => {
          this.#inflight.delete(entry);
          reject(error);
        },
      );
    });
  }

  #startSweeper(): void {
    if (this.#sweeper !== undefined) return;
    this.#sweeper = setInterval(() => {
      const now = performance.now();
      for (const entry of this.#inflight) {
        if (entry.due > now) continue;
        this.#inflight.delete(entry);
        entry.reject(
          new ProtocolError(
            ErrorCode.TIMEOUT,
            `command did not finish within ${this.#timeoutMs} ms`,
          ),
        );
      }
      if (this.#inflight.size === 0) {
        clearInterval(this.#sweeper);
        this.#sweeper = undefined;
      }
    }, Math.min(1000, Math.max(5, this.#timeoutMs / 4)));
  }
}
