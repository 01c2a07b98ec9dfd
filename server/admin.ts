/**
 * `deno task admin`: the offline tool (core/admin/offline.ts), plus what
 * needs both the core's records and a module's storage, which only the
 * wiring may join: mailboxes in and out in mail's own formats, through the
 * messages module's mapping (modules/messages/1.0.0/portable.ts).
 *
 * ```
 * deno task admin export USER --format mbox|maildir|eml DIR
 * deno task admin import USER FILE|DIR
 * deno task admin import-imap USER --host H [--port P] [--no-tls] --user U --password-file F
 * ```
 *
 * It opens the databases directly: the server may keep running.
 *
 * @module
 */

import { main as offline } from "../core/admin/offline.ts";
import { ConfigError, loadConfig } from "../core/config/mod.ts";
import { openStore } from "../kv/mod.ts";
import { loadEnvFile } from "../shared/env_file.ts";
import { KvStorage } from "../workers/mod.ts";
import {
  exportMailbox,
  type Format,
  FORMATS,
  importFound,
  importMail,
  type Tally,
} from "../modules/messages/1.0.0/portable.ts";
import { imapMessages } from "../modules/messages/1.0.0/portable_imap.ts";
import { quotaDefault } from "../modules/messages/1.0.0/settings.ts";

/** The module whose mailboxes these are. */
const MESSAGES = "messages";

const USAGE = `usage:
  deno task admin export USER --format mbox|maildir|eml DIR
  deno task admin import USER FILE|DIR   (mbox, Maildir, .eml; what the mailbox holds already is skipped)
  deno task admin import-imap USER --host H [--port P] [--no-tls] [--insecure] --user U --password-file F
                                         (every folder of an IMAP account; run again to resume)`;

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

function report(verb: string, tally: Tally, where: string): number {
  console.log(
    verb === "export"
      ? `exported ${tally.done} messages to ${where}${
        tally.skipped
          ? ` (${tally.skipped} end-to-end encrypted: not readable here, left out)`
          : ""
      }`
      : `imported ${tally.done} messages from ${where}${
        tally.skipped ? ` (${tally.skipped} already there: skipped)` : ""
      }`,
  );
  for (const f of tally.failed) console.error(`  failed: ${f.what}: ${f.why}`);
  return tally.failed.length ? 1 : 0;
}

/** `export` and `import`. */
async function mailbox(args: string[]): Promise<number> {
  const [verb, target] = args;
  const valued = ["--format", "--host", "--port", "--user", "--password-file"];
  const positional = args.filter((a, i) =>
    !a.startsWith("--") && !valued.includes(args[i - 1])
  );
  const path = verb === "import-imap" ? flag(args, "host") : positional[2];
  const format = (flag(args, "format") ?? "maildir") as Format;
  const imapUser = flag(args, "user");
  const passwordFile = flag(args, "password-file");
  if (
    !target || !path || !FORMATS.includes(format) ||
    (verb === "import-imap" && (!imapUser || !passwordFile))
  ) {
    console.error(USAGE);
    return 2;
  }
  await loadEnvFile(".env");
  let config;
  try {
    config = loadConfig(Deno.env.toObject());
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`configuration error: ${error.message}`);
      return 2;
    }
    throw error;
  }
  const store = await openStore(config.kvPath);
  // The module's own database (AMTP_MODULE_STORAGE=files), or the core's.
  const own = config.moduleStorage === "files"
    ? await Deno.openKv(`${config.dataDir}/modules/${MESSAGES}.kv`)
    : undefined;
  try {
    const owner = target.toLowerCase();
    const user = await store.accounts.getUser(owner);
    if (!user) {
      console.error(`no user ${owner}`);
      return 1;
    }
    const storage = new KvStorage(own ?? store.kv, MESSAGES, 1024 ** 4);
    if (verb === "export") {
      return report(
        verb,
        await exportMailbox(storage, owner, format, path),
        path,
      );
    }
    const hosted = async (domains: string[]) => {
      const found = await Promise.all(
        domains.map((d) => store.accounts.getDomain(d)),
      );
      return new Set(domains.filter((_, i) => found[i] !== null));
    };
    const quota = user.quota || quotaDefault();
    if (verb === "import-imap") {
      const secure = !args.includes("--no-tls");
      const source = imapMessages({
        host: path,
        port: Number(flag(args, "port") ?? (secure ? 993 : 143)),
        secure,
        user: imapUser!,
        password: (await Deno.readTextFile(passwordFile!)).trim(),
        insecure: args.includes("--insecure"),
      });
      return report(
        "import",
        await importFound({ storage, hosted }, owner, quota, source),
        `${imapUser}@${path}`,
      );
    }
    return report(
      verb,
      await importMail({ storage, hosted }, owner, quota, path),
      path,
    );
  } catch (error) {
    console.error(`error: ${error instanceof Error ? error.message : error}`);
    return 1;
  } finally {
    own?.close();
    store.close();
  }
}

/** Run an admin command; the exit code. */
export async function main(args: string[]): Promise<number> {
  switch (args[0]) {
    case "export":
    case "import":
    case "import-imap":
      return await mailbox(args);
    default:
      return await offline(args);
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
