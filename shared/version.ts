/**
 * Name and version of this server implementation.
 *
 * @module
 */

/** Application name reported by `info` and `admin_sysinfo`. */
export const APP_NAME = "AMTP Deno Server";
/** Application version. */
export const APP_VERSION = "0.1.0";
/** Protocol version spoken. */
export const PROTOCOL_VERSION = 1;
