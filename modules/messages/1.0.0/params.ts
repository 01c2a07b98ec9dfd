/**
 * Parameter checks for the messages module: every value from a client is
 * checked before use, and a bad one is answered `invalid_parameter` naming it.
 *
 * @module
 */

import { ModuleError } from "../../../workers/sdk/mod.ts";

/** A parameter set as the module receives it. */
export type Params = Record<string, unknown>;

function bad(name: string, why: string): ModuleError {
  return new ModuleError("invalid_parameter", `parameter "${name}" ${why}`, {
    parameter: name,
  });
}

/** A required string of `min` to `max` characters. */
export function str(p: Params, name: string, max: number, min = 1): string {
  const v = p[name];
  if (typeof v !== "string") throw bad(name, "must be a string");
  if (v.length < min || v.length > max) {
    throw bad(name, `must have ${min} to ${max} characters`);
  }
  return v;
}

/** An optional string. */
export function optStr(
  p: Params,
  name: string,
  max: number,
): string | undefined {
  return p[name] === undefined || p[name] === null
    ? undefined
    : str(p, name, max, 0);
}

/** An optional boolean. */
export function optBool(p: Params, name: string): boolean | undefined {
  const v = p[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw bad(name, "must be a boolean");
  return v;
}

/** An optional whole number in a range. */
export function optInt(
  p: Params,
  name: string,
  min: number,
  max: number,
): number | undefined {
  const v = p[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw bad(name, `must be a whole number from ${min} to ${max}`);
  }
  return v;
}

/** A list of strings (each at most `itemMax`), at most `max` items. */
export function strList(
  p: Params,
  name: string,
  max: number,
  itemMax = 320,
): string[] {
  const v = p[name];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.length > max) {
    throw bad(name, `must be a list of at most ${max} strings`);
  }
  for (const item of v) {
    if (
      typeof item !== "string" || item.length === 0 || item.length > itemMax
    ) {
      throw bad(name, `items must be strings of 1 to ${itemMax} characters`);
    }
  }
  return v as string[];
}

/** Binary data of at most `max` bytes. */
export function bytes(p: Params, name: string, max: number): Uint8Array {
  const v = p[name];
  if (!(v instanceof Uint8Array)) throw bad(name, "must be binary");
  if (v.byteLength > max) throw bad(name, `must be at most ${max} bytes`);
  return v;
}

/** A list of at most `max` binaries of at most `maxBytes` bytes each. */
export function bytesList(
  p: Params,
  name: string,
  max: number,
  maxBytes: number,
): Uint8Array[] {
  const v = p[name];
  if (!Array.isArray(v) || v.length > max) {
    throw bad(name, `must be a list of at most ${max} binaries`);
  }
  for (const item of v) {
    if (!(item instanceof Uint8Array) || item.byteLength > maxBytes) {
      throw bad(name, `items must be binaries of at most ${maxBytes} bytes`);
    }
  }
  return v as Uint8Array[];
}

/** The names of the built-in folders. */
export const SYSTEM_FOLDERS = ["inbox", "sent", "archive", "trash"] as const;

/** A folder name: built-in or the user's own (`[a-z0-9 _.-]`, 1-64). */
export function folderName(p: Params, name = "folder"): string {
  const v = str(p, name, 64).toLowerCase().trim();
  if (!/^[a-z0-9][a-z0-9 _.-]{0,63}$/.test(v)) {
    throw bad(name, "must be 1 to 64 of a-z, 0-9, space, '_', '.', '-'");
  }
  return v;
}
