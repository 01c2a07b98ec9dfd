/**
 * A real Dovecot (the Debian package `dovecot-imapd`) for tests: an IMAP
 * server on a loopback port, in its own folder, with users from a password
 * file and Maildirs; what a user migrates from. It needs root, as Dovecot
 * does (its processes drop to `nobody` and its own users).
 *
 * @module
 */

import { freePort } from "./dnsmasq.ts";

/** A running Dovecot. */
export interface Dovecot {
  /** Its folder. */
  dir: string;
  /** Its IMAP port (127.0.0.1, plain with STARTTLS not offered). */
  port: number;
  /** Stop it and remove its folder. */
  close(): Promise<void>;
}

/** Whether Dovecot can run here (installed, and we are root). */
export function dovecotAvailable(): boolean {
  try {
    return new Deno.Command("dovecot", { args: ["--version"], stdout: "null" })
      .outputSync().success && Deno.uid() === 0;
  } catch {
    return false;
  }
}

/** Start Dovecot with `users` (name to password). */
export async function startDovecot(
  users: Record<string, string>,
): Promise<Dovecot> {
  const dir = await Deno.makeTempDir({ prefix: "amtp-dovecot-" });
  await Deno.chmod(dir, 0o755);
  const port = freePort();
  for (const sub of ["run", "state", "home"]) {
    await Deno.mkdir(`${dir}/${sub}`);
    await Deno.chmod(`${dir}/${sub}`, 0o755);
  }
  await Deno.chown(`${dir}/home`, 65534, 65534);
  await Deno.writeTextFile(
    `${dir}/passwd`,
    Object.entries(users).map(([u, p]) => `${u}:{PLAIN}${p}::::::\n`).join(""),
  );
  await Deno.writeTextFile(
    `${dir}/dovecot.conf`,
    `base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ${dir}/passwd
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home=${dir}/home/%u
}
mail_location = maildir:~/Maildir
namespace inbox {
  inbox = yes
  separator = /
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = ${port}
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
}
`,
  );
  const conf = `${dir}/dovecot.conf`;
  await Deno.chmod(conf, 0o644);
  await Deno.chmod(`${dir}/passwd`, 0o644);
  // In the foreground, a child of the test: stopped with it (a umask of 022
  // whatever the test process set: Dovecot's users read what it creates).
  const child = new Deno.Command("sh", {
    args: ["-c", 'umask 022; exec dovecot -F -c "$0"', conf],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  for (let i = 0;; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch (error) {
      if (i > 100) {
        child.kill("SIGKILL");
        await child.status;
        throw new Error(
          `dovecot did not listen: ${await Deno.readTextFile(
            `${dir}/dovecot.log`,
          ).catch(() => "")} (${(error as Error).message})`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    dir,
    port,
    async close() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
