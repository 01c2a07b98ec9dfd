/**
 * A real Postfix (the Debian package) for tests, as "the rest of the
 * internet's mail": one instance in its own folder (configuration, queue,
 * log, Maildirs), listening on a loopback port. It takes mail for the test
 * domains it hosts into Maildirs (virtual delivery), and relays mail for
 * the other domains it is told about to a fixed host and port (the AMTP
 * gateway under test), with opportunistic STARTTLS. It needs root, as
 * Postfix itself does (its daemons drop to the `postfix` user).
 *
 * @module
 */

import { freePort } from "./dnsmasq.ts";
import { sendSmtp } from "./smtp_client.ts";

/** A running Postfix. */
export interface Postfix {
  /** The folder holding everything of it. */
  dir: string;
  /** The port its SMTP server listens on (127.0.0.1). */
  port: number;
  /** The files in a mailbox's Maildir (`new/`), read whole. */
  maildir(address: string): Promise<Uint8Array[]>;
  /** Its log so far. */
  log(): Promise<string>;
  /** Hand a message to it over SMTP as a client would (its own port). */
  submit(from: string, to: string[], raw: Uint8Array): Promise<string>;
  /** Flush its queue (try deferred mail now). */
  flush(): Promise<void>;
  /** Stop it (the folder stays until `remove`). */
  stop(): Promise<void>;
  /** Start it again after `stop`. */
  start(): Promise<void>;
  /** Stop it and remove its folder. */
  close(): Promise<void>;
}

/** Whether Postfix can run here (installed, and we are root). */
export function postfixAvailable(): boolean {
  try {
    const out = new Deno.Command("postconf", {
      args: ["-d", "mail_version"],
      stdout: "null",
      stderr: "null",
    }).outputSync();
    return out.success && Deno.uid() === 0;
  } catch {
    return false;
  }
}

async function run(program: string, args: string[]): Promise<string> {
  // Postfix reports to syslog unless its standard error is a terminal;
  // `script` gives it one, so a failure says why.
  // (A umask of 022 whatever the test process set: Postfix's users read
  // what it creates.)
  const out = await new Deno.Command("script", {
    args: ["-qec", `umask 022; ${[program, ...args].join(" ")}`, "/dev/null"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) +
    new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${program} ${args[0]}: ${text}`);
  return text;
}

/**
 * Start Postfix hosting `mailboxes` (addresses of its own domains, each a
 * Maildir) and relaying each domain of `relay` to `host:port`.
 */
export async function startPostfix(options: {
  mailboxes: string[];
  relay?: Record<string, { host: string; port: number }>;
  /** Mailboxes it accepts mail for, then fails to deliver (it sends a DSN back). */
  failing?: string[];
  hostname?: string;
}): Promise<Postfix> {
  const dir = await Deno.makeTempDir({ prefix: "amtp-postfix-" });
  const port = freePort();
  for (const sub of ["conf", "queue", "data", "maildir"]) {
    await Deno.mkdir(`${dir}/${sub}`);
    await Deno.chmod(`${dir}/${sub}`, 0o755);
  }
  await Deno.chmod(dir, 0o755);
  const uid = (name: string) =>
    Number(
      new TextDecoder().decode(
        new Deno.Command("id", { args: ["-u", name], stdout: "piped" })
          .outputSync().stdout,
      ).trim(),
    );
  await Deno.chown(`${dir}/data`, uid("postfix"), null);
  await Deno.chown(`${dir}/maildir`, 65534, 65534);
  const domains = [...new Set(options.mailboxes.map((a) => a.split("@")[1]))];
  const relay = [
    ...Object.entries(options.relay ?? {}).map(([domain, to]) =>
      `${domain}=smtp:[${to.host}]:${to.port}`
    ),
    // Taken at RCPT, then the delivery fails: Postfix sends a DSN.
    ...(options.failing ?? []).map((a) => `${a}=failbox:`),
  ];
  const mailboxes = [...options.mailboxes, ...(options.failing ?? [])];
  const main = [
    "compatibility_level = 3.6",
    `queue_directory = ${dir}/queue`,
    `data_directory = ${dir}/data`,
    "mail_owner = postfix",
    "setgid_group = postdrop",
    `myhostname = ${options.hostname ?? `postfix.${domains[0] ?? "test"}`}`,
    `myorigin = ${domains[0] ?? "test"}`,
    "mydestination =",
    "inet_interfaces = 127.0.0.1",
    "inet_protocols = ipv4",
    "mynetworks = 127.0.0.0/8",
    "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
    // Routing by the relay table only: the DNS of the tests is dnsmasq on
    // a port Postfix cannot be pointed at.
    "smtp_dns_support_level = disabled",
    "smtp_host_lookup = native",
    "smtp_tls_security_level = may",
    "smtp_tls_loglevel = 1",
    // STARTTLS offered with a self-signed certificate (opportunistic).
    `smtpd_tls_cert_file = ${dir}/conf/cert.pem`,
    `smtpd_tls_key_file = ${dir}/conf/key.pem`,
    "smtpd_tls_security_level = may",
    "smtpd_tls_loglevel = 1",
    "alias_maps =",
    "alias_database =",
    "local_recipient_maps =",
    `transport_maps = inline:{ ${relay.join(", ")} }`,
    `virtual_mailbox_domains = ${domains.join(" ")}`,
    `virtual_mailbox_base = ${dir}/maildir`,
    `virtual_mailbox_maps = inline:{ ${
      mailboxes.map((a) => `${a}=${a}/`).join(", ")
    } }`,
    "virtual_uid_maps = static:65534",
    "virtual_gid_maps = static:65534",
    `maillog_file = ${dir}/maillog`,
    "maillog_file_prefixes = /tmp, /var",
    // Retries come fast: the tests wait for them.
    "minimal_backoff_time = 1s",
    "maximal_backoff_time = 2s",
    "queue_run_delay = 1s",
    "shlib_directory = no",
  ];
  await Deno.writeTextFile(`${dir}/conf/main.cf`, main.join("\n") + "\n");
  const openssl = await new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "2",
      "-subj",
      `/CN=${options.hostname ?? "postfix.test"}`,
      "-keyout",
      `${dir}/conf/key.pem`,
      "-out",
      `${dir}/conf/cert.pem`,
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!openssl.success) {
    throw new Error(new TextDecoder().decode(openssl.stderr));
  }
  const master = (await Deno.readTextFile("/etc/postfix/master.cf")).replace(
    /^smtp\s+inet\s.*$/m,
    `127.0.0.1:${port} inet n - n - - smtpd`,
  ) + "failbox unix - n n - - pipe user=nobody argv=/bin/false\n";
  await Deno.writeTextFile(`${dir}/conf/master.cf`, master);
  const conf = `${dir}/conf`;
  const start = async () => {
    await run("postfix", ["-c", conf, "start"]);
    for (let i = 0; i < 100; i++) {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    throw new Error("postfix did not listen");
  };
  let running = false;
  try {
    await start();
  } catch (error) {
    await run("postfix", ["-c", conf, "stop"]).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw error;
  }
  running = true;
  const stop = async () => {
    if (!running) return;
    running = false;
    await run("postfix", ["-c", conf, "stop"]).catch(() => {});
    // `stop` returns before the daemons are gone: wait for the port.
    for (let i = 0; i < 100; i++) {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        await new Promise((r) => setTimeout(r, 50));
      } catch {
        return;
      }
    }
  };
  return {
    dir,
    port,
    async maildir(address) {
      const files: Uint8Array[] = [];
      try {
        for await (
          const entry of Deno.readDir(`${dir}/maildir/${address}/new`)
        ) {
          files.push(
            await Deno.readFile(`${dir}/maildir/${address}/new/${entry.name}`),
          );
        }
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
      return files;
    },
    log: () => Deno.readTextFile(`${dir}/maillog`).catch(() => ""),
    async submit(from, to, raw) {
      return await sendSmtp({ port, from, to, raw });
    },
    async flush() {
      await run("postqueue", ["-c", conf, "-f"]).catch(() => {});
    },
    stop,
    async start() {
      if (running) return;
      await start();
      running = true;
    },
    async close() {
      await stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
