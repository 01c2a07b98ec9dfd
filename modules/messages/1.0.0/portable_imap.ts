/**
 * Migration from an IMAP server (`deno task admin import-imap`): every
 * folder, each message with its flags and internal date, read by imapflow
 * and imported like a file (portable.ts). Special folders map to the AMTP
 * system folders (`\Sent` to `sent`, `\Trash` to `trash`, `\Archive` to
 * `archive`); `\Junk` and `\Drafts` keep their names. Resumable: run again
 * after an interruption, what was imported is skipped.
 *
 * @module
 */

import { ImapFlow } from "imapflow";
import { folderName, type Found } from "./portable.ts";

/** Where and who. */
export interface ImapSource {
  /** Host name or address. */
  host: string;
  /** Port: 993 (TLS) unless given. */
  port: number;
  /** TLS from the start (993); otherwise STARTTLS when offered. */
  secure: boolean;
  /** Login name. */
  user: string;
  /** Password. */
  password: string;
  /** Accept a certificate no CA vouches for (a test server). */
  insecure?: boolean;
}

const SPECIAL: Record<string, string> = {
  "\\Inbox": "inbox",
  "\\Sent": "sent",
  "\\Trash": "trash",
  "\\Archive": "archive",
};

/** The folder a mailbox goes to. */
function folderOf(box: { path: string; specialUse?: string }): string {
  if (box.path.toUpperCase() === "INBOX") return "inbox";
  return SPECIAL[box.specialUse ?? ""] ?? folderName(box.path);
}

/** Every message of every selectable folder of the account. */
export async function* imapMessages(source: ImapSource): AsyncGenerator<Found> {
  const client = new ImapFlow({
    host: source.host,
    port: source.port,
    secure: source.secure,
    auth: { user: source.user, pass: source.password },
    logger: false,
    tls: { rejectUnauthorized: !source.insecure },
  });
  await client.connect();
  try {
    const boxes = await client.list();
    for (const box of boxes) {
      if (box.flags.has("\\Noselect") || box.flags.has("\\NonExistent")) {
        continue;
      }
      const folder = folderOf(box);
      const lock = await client.getMailboxLock(box.path, { readOnly: true });
      try {
        // Read the folder's list first, then each message: no other
        // command runs while a FETCH streams.
        const uids = (await client.search({ all: true }, { uid: true })) ||
          [];
        for (const uid of uids) {
          const message = await client.fetchOne(String(uid), {
            uid: true,
            flags: true,
            internalDate: true,
            source: true,
          }, { uid: true });
          if (!message || !message.source) continue;
          yield {
            what: `${box.path} UID ${uid}`,
            raw: new Uint8Array(message.source),
            folder,
            flags: new Set(message.flags ?? []),
            date: message.internalDate instanceof Date
              ? message.internalDate
              : undefined,
          };
        }
      } finally {
        lock.release();
      }
    }
  } finally {
    await client.logout().catch(() => client.close());
  }
}
