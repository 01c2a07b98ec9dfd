/**
 * Command-line argument parsing for the CLI.
 *
 * @module
 */

/** Parsed arguments. */
export interface Args {
  /** Positional arguments. */
  positional: string[];
  /** `--name value` and `--name=value` flags; boolean flags map to "true". */
  flags: Map<string, string>;
}

/** Flags that take no value. */
export const BOOLEAN_FLAGS = new Set([
  "json",
  "ws",
  "force",
  "help",
  "unseen",
  "quiet",
  "plain",
  "encrypt",
  "new-master",
]);

/** Split argv into positional arguments and flags. */
export function parseArgs(argv: string[]): Args {
  const positional: string[] = [];
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      if (eq > 0) {
        flags.set(arg.slice(2, eq), arg.slice(eq + 1));
      } else if (BOOLEAN_FLAGS.has(arg.slice(2))) {
        flags.set(arg.slice(2), "true");
      } else if (i + 1 < argv.length) {
        flags.set(arg.slice(2), argv[++i]);
      } else {
        throw new UsageError(`${arg} needs a value`);
      }
    } else {
      positional.push(arg);
    }
  }
  return { positional, flags };
}

/** Wrong use of the CLI. */
export class UsageError extends Error {
  /** Stable error code. */
  readonly code = "usage";

  /** Create the error. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}
