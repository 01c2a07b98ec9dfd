/**
 * Authentication: key algorithms, challenge-response login, tokens and the
 * login commands.
 *
 * @module
 */

export * from "../../shared/login/algorithms.ts";
export * from "../../shared/login/context.ts";
export * from "../../shared/login/answer.ts";
export * from "./tokens.ts";
export * from "./guard.ts";
export * from "./login.ts";
export * from "./keys.ts";
export * from "./commands.ts";
export * from "./invitations.ts";
