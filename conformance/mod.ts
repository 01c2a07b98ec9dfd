/**
 * The AMTP conformance suite: checks a running server against what
 * docs/PROTOCOL.md says it MUST (and SHOULD) do, over the network only, and
 * prints one line per requirement with its section, then a summary.
 *
 * ```
 * deno task conformance --server HOST:PORT [--cert-hash HEX | --ca FILE]
 *     --admin-key FILE [--admin NAME] [--only REGEX]
 * ```
 *
 * It creates a domain of its own (`conformance-<random>.test`) with users,
 * aliases, an admin and messages, and deletes them at the end. Exit status:
 * 0 when every MUST holds, 1 when one does not, 2 for wrong use.
 *
 * @module
 */

import { readPrivateKey } from "../shared/login/keyfile.ts";
import { parseServer } from "../client/cli_config.ts";
import { Suite } from "./harness.ts";
import { type UserSession, World } from "./world.ts";
import { transportChecks } from "./transport.ts";
import { envelopeChecks } from "./envelope.ts";
import { accountChecks } from "./accounts.ts";
import { messageChecks } from "./messages.ts";

/** What the suite runs against. */
export interface ConformanceOptions {
  /** Host name or address. */
  host: string;
  /** Port. */
  port: number;
  /** Pinned certificate hash. */
  certHash?: string;
  /** CA certificates (PEM). */
  caCerts?: string[];
  /** Name server for the host name (`ip:port`). */
  nameServer?: string;
  /** Admin name (default `admin`). */
  adminName?: string;
  /** Path of the admin's private key file (PEM, section 7.8). */
  adminKeyFile: string;
  /** Run only requirements whose `§section text` matches. */
  only?: RegExp;
}

/** Run the suite; returns the suite (results) and what the cleanup did. */
export async function runConformance(
  options: ConformanceOptions,
  print: (line: string) => void,
): Promise<{ suite: Suite; cleanup: string[] }> {
  const suite = new Suite(print, options.only);
  const world = new World({
    target: {
      host: options.host,
      port: options.port,
      certHash: options.certHash,
      caCerts: options.caCerts,
      nameServer: options.nameServer,
    },
    adminName: options.adminName ?? "admin",
    adminKey: await readPrivateKey(options.adminKeyFile),
  });
  const sessions: UserSession[] = [];
  let cleanup: string[] = [];
  try {
    await world.start();
    print(
      `AMTP conformance: ${world.info.app_name} ${world.info.app_version} at ${options.host}:${options.port}, protocol ${world.info.protocol_version}; working in domain ${world.domain}`,
    );
    await transportChecks(suite, world);
    await envelopeChecks(suite, world, sessions);
    await accountChecks(suite, world, sessions);
    await messageChecks(suite, world, sessions);
  } finally {
    try {
      cleanup = await world.cleanup(sessions);
    } catch (error) {
      cleanup = [
        `FAILED: ${
          error instanceof Error ? error.message : error
        } (the domain ${world.domain} may be left)`,
      ];
    } finally {
      world.close();
    }
  }
  return { suite, cleanup };
}

const USAGE =
  `usage: deno task conformance --server HOST:PORT [--cert-hash HEX | --ca FILE] --admin-key FILE [--admin NAME] [--only REGEX]`;

function flags(argv: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].match(/^--([a-z-]+)$/)?.[1];
    if (!name || i + 1 >= argv.length) {
      throw new Error(`unexpected argument ${argv[i]}`);
    }
    out.set(name, argv[++i]);
  }
  return out;
}

/** Run from the command line; returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  let options: ConformanceOptions;
  try {
    const f = flags(argv);
    const known = [
      "server",
      "cert-hash",
      "ca",
      "admin-key",
      "admin",
      "only",
      "dns",
    ];
    const unknown = [...f.keys()].find((k) => !known.includes(k));
    if (unknown) throw new Error(`unknown flag --${unknown}`);
    if (!f.get("server") || !f.get("admin-key")) {
      throw new Error("missing flags");
    }
    const server = parseServer(f.get("server")!, "--server");
    options = {
      host: server.host,
      port: server.port,
      certHash: f.get("cert-hash"),
      caCerts: f.has("ca")
        ? [await Deno.readTextFile(f.get("ca")!)]
        : undefined,
      nameServer: f.get("dns") ?? Deno.env.get("AMTP_DNS"),
      adminName: f.get("admin"),
      adminKeyFile: f.get("admin-key")!,
      only: f.has("only") ? new RegExp(f.get("only")!) : undefined,
    };
  } catch (error) {
    console.error(`${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  let ran;
  try {
    ran = await runConformance(options, (line) => console.log(line));
  } catch (error) {
    console.error(
      `the suite could not run: ${
        error instanceof Error ? error.message : error
      }`,
    );
    return 1;
  }
  const { suite, cleanup } = ran;
  console.log(`cleanup: ${cleanup.join("; ") || "nothing to undo"}`);
  console.log(suite.summary());
  return suite.failedMusts.length ? 1 : 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
