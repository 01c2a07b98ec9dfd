/**
 * Authentication: key algorithms, challenge-response login, tokens and the
 * login commands.
 *
 * @module
 */

export * from "./algorithms.ts";
export * from "./context.ts";
export * from "./answer.ts";
export * from "./tokens.ts";
export * from "./guard.ts";
export * from "./login.ts";
export * from "./keys.ts";
export * from "./commands.ts";
