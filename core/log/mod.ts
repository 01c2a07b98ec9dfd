/**
 * Structured logging with levels. A line is an event name plus fields, written
 * as logfmt (`text`) or one JSON object (`json`) to standard error.
 *
 * Fields whose names suggest a secret (token, key, challenge, secret,
 * verification) are replaced by `[redacted]` before anything is written, so a
 * careless call cannot leak one.
 *
 * @module
 */

import type { LogLevel } from "../config/mod.ts";

/** Values a log field may take. */
export type LogValue = string | number | boolean | null | undefined;

/** Fields of one log line. */
export type LogFields = Record<string, LogValue>;

const LEVELS: Record<LogLevel, number> = {
  debug: 10,
  info: 20,
  warn: 30,
  error: 40,
};

const SECRET_FIELD = /token|key|challenge|secret|verification|password/i;

/** Options for {@link Logger}. */
export interface LoggerOptions {
  /** Minimum level written. */
  level?: LogLevel;
  /** Output format. */
  format?: "text" | "json";
  /** Where lines go; standard error by default. */
  sink?: (line: string) => void;
  /** Fields added to every line. */
  base?: LogFields;
}

/** A structured logger. */
export class Logger {
  #level: number;
  #format: "text" | "json";
  #sink: (line: string) => void;
  #base: LogFields;

  /** Create a logger. */
  constructor(options: LoggerOptions = {}) {
    this.#level = LEVELS[options.level ?? "info"];
    this.#format = options.format ?? "text";
    this.#sink = options.sink ?? ((line) => console.error(line));
    this.#base = options.base ?? {};
  }

  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger {
    const child = new Logger({ format: this.#format, sink: this.#sink });
    child.#level = this.#level;
    child.#base = { ...this.#base, ...fields };
    return child;
  }

  /** Log at debug level. */
  debug(event: string, fields?: LogFields): void {
    this.#write("debug", event, fields);
  }

  /** Log at info level. */
  info(event: string, fields?: LogFields): void {
    this.#write("info", event, fields);
  }

  /** Log at warn level. */
  warn(event: string, fields?: LogFields): void {
    this.#write("warn", event, fields);
  }

  /** Log at error level. */
  error(event: string, fields?: LogFields): void {
    this.#write("error", event, fields);
  }

  #write(level: LogLevel, event: string, fields?: LogFields): void {
    if (LEVELS[level] < this.#level) return;
    const all: LogFields = { ...this.#base, ...fields };
    for (const name of Object.keys(all)) {
      if (SECRET_FIELD.test(name) && all[name] !== undefined) {
        all[name] = "[redacted]";
      }
    }
    const time = new Date().toISOString();
    if (this.#format === "json") {
      this.#sink(JSON.stringify({ time, level, event, ...all }));
      return;
    }
    let line = `time=${time} level=${level} event=${event}`;
    for (const [name, value] of Object.entries(all)) {
      if (value === undefined) continue;
      const text = String(value);
      line += ` ${name}=${/[\s"=]/.test(text) ? JSON.stringify(text) : text}`;
    }
    this.#sink(line);
  }
}
