/**
 * Wire format shared by server and client: frames and the envelope.
 *
 * @module
 */

export * from "./frame.ts";
export * from "./envelope.ts";
export * from "./bytes.ts";
export * from "./alpn.ts";
