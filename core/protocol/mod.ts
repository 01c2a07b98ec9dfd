/**
 * The protocol layer: error codes, parameter validation and the dispatcher.
 *
 * @module
 */

export * from "./errors.ts";
export * from "./params.ts";
export * from "./dispatcher.ts";
