/**
 * Semantic versions (`1.2.3`) and the ranges clients ask for: exact,
 * `^1.2`, `~1.2.3`, `1`, `1.x`, `*`, and comparisons (`>=1.0.0 <2`), several
 * joined by spaces meaning "all of them".
 *
 * @module
 */

/** A parsed version. */
export type Version = [number, number, number];

/** A version or range that cannot be parsed. */
export class SemverError extends Error {
  /** Stable error code. */
  readonly code = "invalid_version";

  /** Create the error. */
  constructor(input: string) {
    super(`"${input.slice(0, 50)}" is not a valid version or range`);
    this.name = "SemverError";
  }
}

/**
 * Parse `MAJOR.MINOR.PATCH`.
 *
 * @throws {SemverError}
 */
export function parseVersion(text: string): Version {
  const match = text.trim().match(/^v?(\d{1,6})\.(\d{1,6})\.(\d{1,6})$/);
  if (!match) throw new SemverError(text);
  return [Number(match[1]), Number(match[2]), Number(match[3])];
}

/** Compare two versions: negative, zero or positive. */
export function compareVersions(a: Version, b: Version): number {
  return a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
}

type Check = (v: Version) => boolean;

function partial(text: string): (number | undefined)[] {
  const parts = text.split(".");
  if (parts.length > 3 || parts.some((p) => !/^(\d{1,6}|x|X|\*)$/.test(p))) {
    throw new SemverError(text);
  }
  const out = parts.map((p) => /^\d+$/.test(p) ? Number(p) : undefined);
  while (out.length < 3) out.push(undefined);
  return out;
}

function lowest(p: (number | undefined)[]): Version {
  return [p[0] ?? 0, p[1] ?? 0, p[2] ?? 0];
}

function term(text: string): Check {
  if (text === "*" || text === "x" || text === "") return () => true;
  const op = text.match(/^(>=|<=|>|<|=|\^|~)?(.*)$/)!;
  const p = partial(op[2].replace(/^v/, ""));
  const low = lowest(p);
  const cmp = (v: Version) => compareVersions(v, low);
  switch (op[1]) {
    case ">=":
      return (v) => cmp(v) >= 0;
    case ">":
      return (v) => cmp(v) > 0;
    case "<=":
      return (v) => cmp(v) <= 0;
    case "<":
      return (v) => cmp(v) < 0;
    case "^": {
      // Same leftmost non-zero part.
      if (low[0] > 0 || p[1] === undefined) {
        return (v) => cmp(v) >= 0 && v[0] === low[0];
      }
      if (low[1] > 0 || p[2] === undefined) {
        return (v) => cmp(v) >= 0 && v[0] === 0 && v[1] === low[1];
      }
      return (v) => cmp(v) === 0;
    }
    case "~":
      return (v) =>
        cmp(v) >= 0 && v[0] === low[0] &&
        (p[1] === undefined || v[1] === low[1]);
    default:
      // Exact, or an x-range: every given part must match.
      return (v) => p.every((part, i) => part === undefined || part === v[i]);
  }
}

/**
 * Does `version` satisfy `range`?
 *
 * @throws {SemverError} when the range cannot be parsed
 */
export function satisfies(version: Version, range: string): boolean {
  const terms = range.trim().split(/\s+/).map(term);
  return terms.every((check) => check(version));
}

/** The highest of `versions` that satisfies `range`, or undefined. */
export function maxSatisfying(
  versions: string[],
  range: string,
): string | undefined {
  let best: string | undefined;
  for (const text of versions) {
    const version = parseVersion(text);
    if (!satisfies(version, range)) continue;
    if (!best || compareVersions(version, parseVersion(best)) > 0) best = text;
  }
  return best;
}
