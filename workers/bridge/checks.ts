/**
 * Checks of values that cross the bridge: each one returns the value typed,
 * or throws {@link CheckError} naming the argument. What a module sends is
 * hostile until checked; a check never trusts a prototype or a getter (BSON
 * decodes plain objects and arrays).
 *
 * @module
 */

/** A value that does not have the declared shape. */
export class CheckError extends Error {
  /** Create the error; `path` names the argument (`args[1].to`). */
  constructor(readonly path: string, expected: string) {
    super(`${path} must be ${expected}`);
    this.name = "CheckError";
  }
}

/** Checks `value` and returns it typed, or throws {@link CheckError}. */
export type Check<T> = (value: unknown, path: string) => T;

/** The type a check returns. */
export type Checked<C> = C extends Check<infer T> ? T : never;

/** A string of at most `max` characters. */
export function string(max: number): Check<string> {
  return (value, path) => {
    if (typeof value !== "string" || value.length > max) {
      throw new CheckError(path, `a string of at most ${max} characters`);
    }
    return value;
  };
}

/** One of the given strings. */
export function oneOf<T extends string>(...values: T[]): Check<T> {
  return (value, path) => {
    if (!values.includes(value as T)) {
      throw new CheckError(path, `one of ${values.join(", ")}`);
    }
    return value as T;
  };
}

/** A finite number. */
export const number: Check<number> = (value, path) => {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new CheckError(path, "a number");
  }
  return value;
};

/** A boolean. */
export const boolean: Check<boolean> = (value, path) => {
  if (typeof value !== "boolean") throw new CheckError(path, "true or false");
  return value;
};

/** Bytes (a BSON binary), at most `max` of them. */
export function bytes(max: number): Check<Uint8Array> {
  return (value, path) => {
    if (!(value instanceof Uint8Array) || value.byteLength > max) {
      throw new CheckError(path, `binary data of at most ${max} bytes`);
    }
    return value;
  };
}

/** Anything (checked by whoever uses it). */
export function any<T = unknown>(): Check<T> {
  return (value) => value as T;
}

/** A list of at most `max` items, each checked. */
export function list<T>(item: Check<T>, max: number): Check<T[]> {
  return (value, path) => {
    if (!Array.isArray(value) || value.length > max) {
      throw new CheckError(path, `a list of at most ${max} items`);
    }
    return value.map((v, i) => item(v, `${path}[${i}]`));
  };
}

/** A value or undefined/null (null becomes undefined). */
export function optional<T>(check: Check<T>): Check<T | undefined> {
  return (value, path) =>
    value === undefined || value === null ? undefined : check(value, path);
}

/** An object with these fields (others are dropped). */
export function object<S extends Record<string, Check<unknown>>>(
  shape: S,
): Check<{ [K in keyof S]: Checked<S[K]> }> {
  return (value, path) => {
    if (!value || typeof value !== "object" || Array.isArray(value)) {
      throw new CheckError(path, "an object");
    }
    const out: Record<string, unknown> = {};
    for (const [name, check] of Object.entries(shape)) {
      const field = Object.hasOwn(value, name)
        ? (value as Record<string, unknown>)[name]
        : undefined;
      const checked = check(field, `${path}.${name}`);
      if (checked !== undefined) out[name] = checked;
    }
    return out as { [K in keyof S]: Checked<S[K]> };
  };
}

/** An object of string keys and checked values, at most `max` of them. */
export function record<T>(
  item: Check<T>,
  max: number,
): Check<Record<string, T>> {
  return (value, path) => {
    if (!value || typeof value !== "object" || Array.isArray(value)) {
      throw new CheckError(path, "an object");
    }
    const entries = Object.entries(value);
    if (entries.length > max) {
      throw new CheckError(path, `an object of at most ${max} fields`);
    }
    return Object.fromEntries(
      entries.map(([k, v]) => [k, item(v, `${path}.${k}`)]),
    );
  };
}

/** The arguments of a call: a list of exactly these, in order (missing ones undefined). */
export function args<T extends unknown[]>(
  ...items: { [I in keyof T]: Check<T[I]> }
): Check<T> {
  return (value, path) => {
    if (!Array.isArray(value) || value.length > items.length) {
      throw new CheckError(path, `a list of at most ${items.length} arguments`);
    }
    return items.map((check, i) => check(value[i], `${path}[${i}]`)) as T;
  };
}
