/**
 * A real DNS server for tests: dnsmasq on loopback serving a test zone.
 *
 * @module
 */

/** A running dnsmasq. */
export interface Dns {
  /** `127.0.0.1:port`, for AMTP_DNS. */
  address: string;
  /** Replace the records (restarts dnsmasq on the same port). */
  set(
    records: {
      txt: [string, string][];
      hosts: [string, string][];
      /** `[domain, host, preference]` MX records. */
      mx?: [string, string, number][];
    },
  ): Promise<void>;
  /** Stop it. */
  stop(): Promise<void>;
}

/** A free port number on loopback (UDP and TCP both free at the time of asking). */
export function freePort(): number {
  for (let i = 0; i < 50; i++) {
    const tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (tcp.addr as Deno.NetAddr).port;
    tcp.close();
    try {
      const udp = Deno.listenDatagram({
        hostname: "127.0.0.1",
        port,
        transport: "udp",
      });
      udp.close();
      return port;
    } catch {
      // Taken on UDP: another.
    }
  }
  throw new Error("no free port");
}

/** Start dnsmasq (the Debian package) with no records yet. */
export async function startDns(dir: string): Promise<Dns> {
  const port = freePort();
  const conf = `${dir}/dnsmasq.conf`;
  let child: Deno.ChildProcess | undefined;
  const start = async () => {
    child = new Deno.Command("dnsmasq", {
      args: [
        "--no-daemon",
        "--no-resolv",
        "--no-hosts",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        `--port=${port}`,
        `--conf-file=${conf}`,
        "--pid-file=",
        "--user=root",
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // Wait until it answers.
    for (let i = 0; i < 100; i++) {
      try {
        await Deno.resolveDns("ready.test", "TXT", {
          nameServer: { ipAddr: "127.0.0.1", port },
          signal: AbortSignal.timeout(200),
        });
        return;
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) return;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("dnsmasq did not start");
  };
  const stop = async () => {
    if (!child) return;
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.stderr.cancel().catch(() => {});
    await child.status;
    child = undefined;
  };
  // Authoritative for .test: a name without records is NXDOMAIN or an empty
  // answer, as a real zone's server says, not REFUSED (a resolver failure).
  const zone = "local=/test/\n";
  await Deno.writeTextFile(conf, zone);
  await start();
  return {
    address: `127.0.0.1:${port}`,
    async set(records) {
      const lines = [
        // A TXT string holds at most 255 bytes: longer values (an RSA
        // DKIM key) are several strings, joined again by whoever reads them.
        ...records.txt.map(([name, value]) =>
          `txt-record=${name},"${
            (value.match(/.{1,255}/g) ?? [""]).join('","')
          }"`
        ),
        ...records.hosts.map(([name, ip]) => `host-record=${name},${ip}`),
        ...(records.mx ?? []).map(([name, host, pref]) =>
          `mx-host=${name},${host},${pref}`
        ),
      ];
      await Deno.writeTextFile(conf, zone + lines.join("\n") + "\n");
      await stop();
      await start();
    },
    stop,
  };
}
