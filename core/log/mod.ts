/**
 * Structured logging with levels. A line is an event name plus fields, written
 * as logfmt (`text`) or one JSON object (`json`) to standard error.
 *
 * Nothing a caller passes can forge a line or a field, because callers
 * include modules and, through them, remote senders:
 *
 * - Field names and the event name are reduced to `[A-Za-z0-9_.-]` (anything
 *   else becomes `_`), at most 64 characters.
 * - In `text`, a value is written bare only when it holds nothing but
 *   `[A-Za-z0-9_.:/@+%,[]-]`; anything else is quoted, with `"`, `\`, control
 *   characters, C1 controls, U+2028/U+2029 and lone surrogates escaped, so
 *   no value can end its quotes, start a line or hold a `name=value` of its
 *   own. In `json`, the same characters are escaped.
 * - `time`, `level` and `event` come first and cannot be set by fields; the
 *   logger's own fields (`child()`, e.g. `module=`, `version=`) win over a
 *   call's fields: a call field of a taken name is written as `_name`.
 * - Values that are not strings, numbers, booleans or null are written as
 *   their JSON; a value is cut at {@link MAX_VALUE} characters and a call
 *   keeps at most {@link MAX_FIELDS} fields.
 * - Fields whose names suggest a secret (token, key, challenge, secret,
 *   verification, password, signature) are replaced by `[redacted]`.
 *
 * @module
 */

/** Log levels, least to most severe. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** `text` (logfmt) or `json` (one JSON object per line). */
export type LogFormat = "text" | "json";

/** Values a log field may take. */
export type LogValue = string | number | boolean | null | undefined;

/** Fields of one log line. */
export type LogFields = Record<string, LogValue>;

/** Characters of one value written at most. */
export const MAX_VALUE = 2048;
/** Fields of one call written at most. */
export const MAX_FIELDS = 64;
/** Characters of a field or event name at most. */
const MAX_NAME = 64;

const LEVELS: Record<LogLevel, number> = {
  debug: 10,
  info: 20,
  warn: 30,
  error: 40,
};

const RESERVED = new Set(["time", "level", "event"]);
const SECRET_FIELD =
  /token|key|challenge|secret|verification|password|signature/i;
/** A value written without quotes. */
const BARE = /^[A-Za-z0-9_.:/@+%,[\]-]+$/;
/** Characters escaped inside quotes (text) and in JSON output. */
const UNSAFE =
  // deno-lint-ignore no-control-regex -- control characters are what it finds
  /["\\\u0000-\u001f\u007f-\u009f\u2028\u2029]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
const SHORT_ESCAPES: Record<string, string> = {
  '"': '\\"',
  "\\": "\\\\",
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
};

/** `name` reduced to the characters a field name may have. */
export function fieldName(name: string): string {
  const clean = String(name).slice(0, MAX_NAME).replace(
    /[^A-Za-z0-9_.-]/g,
    "_",
  );
  return clean || "_";
}

function escapeChar(c: string): string {
  return SHORT_ESCAPES[c] ??
    `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;
}

/** A value as text: strings as they are, other values as their JSON. */
function valueText(value: unknown): string {
  let text: string;
  if (typeof value === "string") text = value;
  else if (
    typeof value === "number" || typeof value === "boolean" || value === null
  ) text = String(value);
  else if (typeof value === "bigint") text = value.toString();
  else if (value instanceof Date) {
    text = Number.isNaN(value.getTime()) ? "Invalid Date" : value.toISOString();
  } else {
    try {
      text = JSON.stringify(value, (_k, v) =>
        typeof v === "bigint"
          ? v.toString()
          : v instanceof Uint8Array
          ? `<${v.byteLength} bytes>`
          : v) ?? String(value);
    } catch {
      text = Object.prototype.toString.call(value);
    }
  }
  return text.length > MAX_VALUE ? `${text.slice(0, MAX_VALUE)}…` : text;
}

/** A value for a logfmt line: bare when safe, else quoted and escaped. */
export function textValue(text: string): string {
  return BARE.test(text) ? text : `"${text.replace(UNSAFE, escapeChar)}"`;
}

/** Options for {@link Logger}. */
export interface LoggerOptions {
  /** Minimum level written. */
  level?: LogLevel;
  /** Output format. */
  format?: LogFormat;
  /** Where lines go; standard error by default. */
  sink?: (line: string) => void;
  /** Fields added to every line. */
  base?: LogFields;
}

/** A cleaned value: JSON keeps numbers, booleans and null as they are. */
type Clean = string | number | boolean | null;

/** Clean names and values of fields, in order, later names replacing earlier ones. */
function cleanFields(fields: unknown): Map<string, Clean> {
  const out = new Map<string, Clean>();
  if (!fields || typeof fields !== "object") return out;
  let n = 0;
  for (const [name, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    if (++n > MAX_FIELDS) break;
    out.set(
      fieldName(name),
      (typeof value === "number" && Number.isFinite(value)) ||
        typeof value === "boolean" || value === null
        ? value
        : valueText(value),
    );
  }
  return out;
}

/** A structured logger. */
export class Logger {
  #level: number;
  #format: LogFormat;
  #sink: (line: string) => void;
  /** The parent's fields and this logger's own, cleaned when first written. */
  #parent?: Logger;
  #own?: LogFields;
  #cleaned?: Map<string, Clean>;

  /** Create a logger. */
  constructor(options: LoggerOptions = {}) {
    this.#level = LEVELS[options.level ?? "info"];
    this.#format = options.format ?? "text";
    this.#sink = options.sink ?? ((line) => console.error(line));
    this.#own = options.base;
  }

  /** The logger's own fields (they win over a call's), cleaned once. */
  #base(): Map<string, Clean> {
    if (!this.#cleaned) {
      const base = new Map([
        ...(this.#parent ? this.#parent.#base() : []),
        ...cleanFields(this.#own),
      ]);
      for (const name of RESERVED) base.delete(name);
      this.#cleaned = base;
    }
    return this.#cleaned;
  }

  /** A logger that adds `fields` to every line (its fields replace this one's of the same name). */
  child(fields: LogFields): Logger {
    // Cheap: a child per request is common, and most of its lines are filtered out.
    const child = new Logger({ format: this.#format, sink: this.#sink });
    child.#level = this.#level;
    child.#parent = this;
    child.#own = fields;
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
    const all: [string, Clean][] = [
      ["time", new Date().toISOString()],
      ["level", level],
      ["event", fieldName(event)],
      ...this.#base(),
    ];
    const taken = new Set(all.map(([name]) => name));
    for (const [name, value] of cleanFields(fields)) {
      let free = name;
      while (taken.has(free)) free = `_${free}`;
      taken.add(free);
      all.push([free, value]);
    }
    for (const field of all) {
      if (SECRET_FIELD.test(field[0])) field[1] = "[redacted]";
    }
    if (this.#format === "json") {
      const object: Record<string, Clean> = Object.create(null);
      for (const [name, value] of all) object[name] = value;
      this.#sink(
        JSON.stringify(object).replace(
          UNSAFE,
          (c) => c === '"' || c === "\\" ? c : escapeChar(c),
        ),
      );
      return;
    }
    this.#sink(
      all.map(([name, value]) => `${name}=${textValue(String(value))}`).join(
        " ",
      ),
    );
  }
}
