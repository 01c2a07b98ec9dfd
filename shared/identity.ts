/**
 * Identity rules: addresses `local@domain`, domain names and admin names.
 *
 * - local part: lowercase letters, digits, `.`, `-`, `_`; not starting or
 *   ending with `.`, no `..`; 1 to 64 characters
 * - domain: a DNS name of at most 253 characters, labels of 1 to 63 letters,
 *   digits and inner hyphens, at least two labels; internationalised names
 *   are stored in punycode
 * - input is normalised to lowercase before the rules apply
 *
 * @module
 */

/** Input that breaks an identity rule; `rule` says which. */
export class IdentityError extends Error {
  /** Stable error code. */
  readonly code = "invalid_identity";
  /** The rule broken, for the client. */
  readonly rule: string;

  /** Create the error. */
  constructor(input: string, rule: string) {
    super(`"${input.slice(0, 100)}" is not valid: ${rule}`);
    this.name = "IdentityError";
    this.rule = rule;
  }
}

const LOCAL_RE = /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/;
const LABEL_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * Normalise a domain name: lowercase, punycode for international names.
 *
 * @throws {IdentityError} naming the broken rule
 */
export function normalizeDomain(input: string): string {
  const trimmed = input.trim().toLowerCase().replace(/\.$/, "");
  let ascii = trimmed;
  if (/[^a-z0-9.-]/.test(trimmed)) {
    try {
      ascii = new URL(`http://${trimmed}/`).hostname;
    } catch {
      throw new IdentityError(input, "the domain is not a valid DNS name");
    }
  }
  if (ascii.length === 0 || ascii.length > 253) {
    throw new IdentityError(input, "a domain has 1 to 253 characters");
  }
  const labels = ascii.split(".");
  if (labels.length < 2) {
    throw new IdentityError(
      input,
      "a domain has at least two labels (example.org)",
    );
  }
  for (const label of labels) {
    if (!LABEL_RE.test(label)) {
      throw new IdentityError(
        input,
        "each domain label has 1 to 63 letters, digits or inner hyphens",
      );
    }
  }
  if (/^\d+$/.test(labels[labels.length - 1])) {
    throw new IdentityError(input, "the top-level label cannot be numeric");
  }
  return ascii;
}

/**
 * Normalise a local part.
 *
 * @throws {IdentityError} naming the broken rule
 */
export function normalizeLocal(input: string): string {
  const local = input.trim().toLowerCase();
  if (local.length === 0 || local.length > 64) {
    throw new IdentityError(input, "the part before @ has 1 to 64 characters");
  }
  if (!LOCAL_RE.test(local)) {
    throw new IdentityError(
      input,
      "the part before @ takes only a-z, 0-9, '.', '-' and '_', and does not start or end with '.' or repeat it",
    );
  }
  return local;
}

/**
 * Normalise an address `local@domain`.
 *
 * @throws {IdentityError} naming the broken rule
 */
export function normalizeAddress(input: string): string {
  const at = input.lastIndexOf("@");
  if (at < 0) {
    throw new IdentityError(input, "an address has the form local@domain");
  }
  return `${normalizeLocal(input.slice(0, at))}@${
    normalizeDomain(input.slice(at + 1))
  }`;
}

/** Split a normalised address into `[local, domain]`. */
export function splitAddress(address: string): [string, string] {
  const at = address.lastIndexOf("@");
  return [address.slice(0, at), address.slice(at + 1)];
}

/**
 * Normalise an admin login name (the rules of a local part).
 *
 * @throws {IdentityError} naming the broken rule
 */
export function normalizeAdminName(input: string): string {
  return normalizeLocal(input);
}
