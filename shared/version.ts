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

/**
 * Order two `MAJOR.MINOR.PATCH` versions (a pre-release suffix is ignored):
 * negative, zero or positive as `a` is older, the same or newer.
 */
export function compareVersions(a: string, b: string): number {
  const parts = (v: string) =>
    v.replace(/[-+].*$/, "").split(".").map((n) => Number(n) || 0);
  const [x, y] = [parts(a), parts(b)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}
