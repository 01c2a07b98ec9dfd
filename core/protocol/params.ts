/**
 * Parameter validation. A command declares a schema; the dispatcher checks
 * every parameter's presence, type and bounds before the handler runs, so a
 * handler sees only well-typed values.
 *
 * @module
 */

import { ErrorCode, ProtocolError } from "./errors.ts";

/** Types a parameter may have. */
export type ParamType =
  | "string"
  | "int"
  | "number"
  | "bool"
  | "binary"
  | "array"
  | "object";

/** Declaration of one parameter. */
export interface ParamSpec {
  /** Expected type. */
  type: ParamType;
  /** May be absent (or null). */
  optional?: boolean;
  /** Minimum: characters for strings, value for numbers, items for arrays, bytes for binary. */
  min?: number;
  /** Maximum in the same unit as `min`. */
  max?: number;
  /** Element type of an array. */
  items?: ParamType;
  /** Maximum length of each string element of an array. */
  itemMax?: number;
}

/** A command's parameter schema. */
export type ParamSchema = Record<string, ParamSpec>;

type TypeOf<T extends ParamType> = T extends "string" ? string
  : T extends "int" | "number" ? number
  : T extends "bool" ? boolean
  : T extends "binary" ? Uint8Array
  : T extends "array" ? unknown[]
  : Record<string, unknown>;

/** The validated parameter object for a schema. */
export type Params<S extends ParamSchema> = {
  [K in keyof S]: S[K]["optional"] extends true
    ? TypeOf<S[K]["type"]> | undefined
    : TypeOf<S[K]["type"]>;
};

function typeMatches(type: ParamType, value: unknown): boolean {
  switch (type) {
    case "string":
      return typeof value === "string";
    case "int":
      return typeof value === "number" && Number.isSafeInteger(value);
    case "number":
      return typeof value === "number" && Number.isFinite(value);
    case "bool":
      return typeof value === "boolean";
    case "binary":
      return value instanceof Uint8Array;
    case "array":
      return Array.isArray(value);
    case "object":
      return typeof value === "object" && value !== null &&
        !Array.isArray(value) && !(value instanceof Uint8Array);
  }
}

function sizeOf(value: unknown): number {
  if (typeof value === "string") return value.length;
  if (typeof value === "number") return value;
  if (Array.isArray(value)) return value.length;
  if (value instanceof Uint8Array) return value.byteLength;
  return 0;
}

function invalid(name: string, why: string): ProtocolError {
  return new ProtocolError(
    ErrorCode.INVALID_PARAMETER,
    `parameter "${name}" ${why}`,
    { parameter: name },
  );
}

/**
 * Validate `input` against `schema` and return only the declared parameters.
 *
 * @throws {ProtocolError} INVALID_PARAMETER naming the first bad parameter
 */
export function validateParams<S extends ParamSchema>(
  schema: S,
  input: Record<string, unknown>,
): Params<S> {
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(schema)) {
    const value = Object.hasOwn(input, name) ? input[name] : undefined;
    if (value === undefined || value === null) {
      if (!spec.optional) throw invalid(name, `is required (${spec.type})`);
      continue;
    }
    if (!typeMatches(spec.type, value)) {
      throw invalid(name, `must be of type ${spec.type}`);
    }
    const size = sizeOf(value);
    const unit = spec.type === "string"
      ? " characters"
      : spec.type === "array"
      ? " items"
      : spec.type === "binary"
      ? " bytes"
      : "";
    if (spec.min !== undefined && size < spec.min) {
      throw invalid(name, `must be at least ${spec.min}${unit}`);
    }
    if (spec.max !== undefined && size > spec.max) {
      throw invalid(name, `must be at most ${spec.max}${unit}`);
    }
    if (spec.type === "array" && spec.items) {
      const items = value as unknown[];
      for (let i = 0; i < items.length; i++) {
        if (!typeMatches(spec.items, items[i])) {
          throw invalid(`${name}[${i}]`, `must be of type ${spec.items}`);
        }
        if (
          spec.itemMax !== undefined && typeof items[i] === "string" &&
          (items[i] as string).length > spec.itemMax
        ) {
          throw invalid(
            `${name}[${i}]`,
            `must be at most ${spec.itemMax} characters`,
          );
        }
      }
    }
    out[name] = value;
  }
  return out as Params<S>;
}
