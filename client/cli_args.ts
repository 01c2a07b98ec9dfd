/**
 * Command-line arguments of the CLI: every flag is declared (globally or by
 * its command), so a flag the CLI does not know is an error and `--help`
 * lists every flag there is.
 *
 * @module
 */

/** One flag: the name of its value (absent: a switch), and what it does. */
export interface FlagSpec {
  /** Placeholder of the value in help, e.g. `FILE`; absent for a switch. */
  value?: string;
  /** One line of help. */
  help: string;
}

/** Parsed arguments. */
export interface Args {
  /** Positional arguments (the command first). */
  positional: string[];
  /** `--name value` and `--name=value` flags; switches map to "true". */
  flags: Map<string, string>;
}

/** Flags of every command. */
export const GLOBAL_FLAGS: Record<string, FlagSpec> = {
  server: {
    value: "HOST[:PORT]",
    help:
      "the server (default: the saved one, else the local server, else localhost:4433)",
  },
  ws: { help: "use WebSocket (TLS over TCP) instead of WebTransport (QUIC)" },
  "cert-hash": {
    value: "HEX",
    help: "pin the server's certificate by its SHA-256 (a self-signed server)",
  },
  ca: {
    value: "FILE",
    help: "trust the CA certificates (PEM) in FILE for the server",
  },
  timeout: {
    value: "SECONDS",
    help: "how long to wait for the server to answer a connection (default 10)",
  },
  profile: {
    value: "NAME",
    help:
      "use the session of profile NAME (also $AMTP_PROFILE): one per person",
  },
  json: { help: "print Extended JSON instead of text" },
  help: { help: "show the help of the command" },
};

/**
 * Split argv into positional arguments and flags. `flagsOf` gives the flags
 * the command named by the positional arguments so far accepts, besides
 * {@link GLOBAL_FLAGS}.
 *
 * @throws {UsageError} for a flag no one declares, or one missing its value
 */
export function parseArgs(
  argv: string[],
  flagsOf: (positional: string[]) => Record<string, FlagSpec> = () => ({}),
): Args {
  const positional: string[] = [];
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith("--") || arg === "--") {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
    const spec = GLOBAL_FLAGS[name] ?? flagsOf(positional)[name];
    if (!spec) {
      const command = positional.slice(0, 2).join(" ");
      throw new UsageError(
        `unknown flag --${name}${command ? ` for amtp ${command}` : ""} (amtp ${
          command || "help"
        } --help lists the flags)`,
      );
    }
    if (!spec.value) {
      if (eq > 0) {
        throw new UsageError(`--${name} takes no value`);
      }
      flags.set(name, "true");
    } else if (eq > 0) {
      flags.set(name, arg.slice(eq + 1));
    } else if (i + 1 < argv.length) {
      flags.set(name, argv[++i]);
    } else {
      throw new UsageError(`--${name} needs a value (${spec.value})`);
    }
  }
  return { positional, flags };
}

/** Help lines for flags: `  --name VALUE   help`. */
export function flagHelp(flags: Record<string, FlagSpec>): string[] {
  const rows = Object.entries(flags).map(([name, spec]) => [
    `--${name}${spec.value ? ` ${spec.value}` : ""}`,
    spec.help,
  ]);
  const width = Math.max(0, ...rows.map(([left]) => left.length));
  return rows.map(([left, help]) => `  ${left.padEnd(width)}  ${help}`);
}

/** Wrong use of the CLI (exit status 2). */
export class UsageError extends Error {
  /** Stable error code. */
  readonly code = "usage";

  /** Create the error. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}
