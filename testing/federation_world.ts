/**
 * Several real server processes federating on loopback: a test CA, dnsmasq
 * with the zone, one data folder per server. Used by the federation and kill
 * tests and by the benchmark.
 *
 * @module
 */

import { AmtpClient } from "../client/mod.ts";
import { httpsGet } from "../core/federation/https.ts";
import { ServerKeys } from "../core/federation/keys.ts";
import { POLICY_PATH, policyId } from "../core/federation/policy.ts";
import { chainPem, createCertificate } from "../core/tls/cert.ts";
import { certificateHash } from "../shared/pem.ts";
import { type Dns, freePort, startDns } from "./dnsmasq.ts";
import { bootstrapKey, login, makeKey, type TestKey } from "./helpers.ts";
import { type MailSession, mailSession } from "./mail.ts";
import { type ServerProcess, startServerProcess } from "./process.ts";

/** One server of the world. */
export interface Node {
  /** Host name. */
  host: string;
  /** The domain it hosts. */
  domain: string;
  /** Port (UDP and TCP). */
  port: number;
  /** Working folder (its data folder is `<dir>/data`). */
  dir: string;
  /** Environment it starts with. */
  env: Record<string, string>;
  /** Flags of Deno it starts with (the inspector, for one), if any. */
  denoFlags?: string[];
  /** The running process, when running. */
  server?: ServerProcess;
  /** An admin token (valid across restarts). */
  adminToken?: string;
  /** Its TLS certificate (leaf). */
  certPem: string;
}

/** The world. */
export interface World {
  /** Root folder. */
  root: string;
  /** The DNS server. */
  dns: Dns;
  /** The test CA (PEM). */
  caPem: string;
  /** The servers. */
  nodes: Node[];
  /** A client connected to a server. */
  connect(node: Node): Promise<AmtpClient>;
  /** The published `amtp-dkim` value of a server. */
  keyRecord(node: Node): Promise<string>;
  /**
   * Publish the zone: each domain lists its server, each host its key;
   * `policies` announces the delivery policies the named domains' servers
   * serve (as they serve them now); `extra` adds or replaces (`append`
   * adds beside), `mx` publishes MX records.
   */
  publish(
    extra?: {
      txt?: [string, string][];
      hosts?: [string, string][];
      mx?: [string, string, number][];
      /** TXT records added beside the others (several at one name). */
      append?: [string, string][];
      policies?: string[];
    },
  ): Promise<void>;
  /** A certificate for `names` issued by the test CA (e.g. for an attacker's own host). */
  certificate(names: string[]): Promise<{ certPem: string; keyPem: string }>;
  /** The delivery policy a server serves for its domain, and its id. */
  policyOf(node: Node): Promise<{ document: string; id: string }>;
  /** Create a user on its domain's server (once). */
  addUser(address: string, name?: string): Promise<TestKey>;
  /** A logged-in messages session of a user. */
  mail(address: string): Promise<MailSession>;
  /** The server hosting an address's domain. */
  nodeOf(address: string): Node;
  /** Start (or restart) a server. */
  start(node: Node): Promise<void>;
  /** Stop everything and remove the folder. */
  close(): Promise<void>;
}

/**
 * Create servers for `[host, domain]` pairs, started, each with its domain
 * added; `options.denoFlags[i]` are Deno flags of the i-th server.
 */
export async function startWorld(
  specs: [string, string][],
  env: Record<string, string> = {},
  options: { denoFlags?: string[][] } = {},
): Promise<World> {
  const root = await Deno.makeTempDir({ prefix: "amtp-world-" });
  const dns = await startDns(root);
  const ca = await createCertificate({
    names: ["AMTP Test CA"],
    days: 30,
    ca: true,
  });
  await Deno.writeTextFile(`${root}/ca.pem`, ca.certPem);
  const nodes: Node[] = [];
  for (const [host, domain] of specs) {
    const dir = `${root}/${host}`;
    await Deno.mkdir(dir, { recursive: true });
    const cert = await createCertificate({
      names: [host, `amtp-policy.${domain}`, "localhost", "127.0.0.1"],
      days: 13,
      issuer: ca,
    });
    await Deno.writeTextFile(
      `${dir}/cert.pem`,
      chainPem(cert.certPem, ca.certPem),
    );
    await Deno.writeTextFile(`${dir}/key.pem`, cert.keyPem);
    const port = freePort();
    nodes.push({
      host,
      domain,
      port,
      dir,
      denoFlags: options.denoFlags?.[nodes.length],
      certPem: cert.certPem,
      env: {
        AMTP_PORT: String(port),
        AMTP_HOST: "127.0.0.1",
        AMTP_HOSTNAME: host,
        AMTP_CERT: `${dir}/cert.pem`,
        AMTP_KEY: `${dir}/key.pem`,
        AMTP_CA_FILE: `${root}/ca.pem`,
        AMTP_DNS: dns.address,
        AMTP_FEDERATION_RETRY: "1",
        AMTP_FEDERATION_RETRY_MAX: "1",
        AMTP_FEDERATION_LIFETIME: "6",
        AMTP_FEDERATION_TIMEOUT: "2",
        ...env,
      },
    });
  }
  const clients: AmtpClient[] = [];
  const sessions: MailSession[] = [];
  const users = new Map<string, TestKey>();
  const connect = async (node: Node) => {
    const client = await AmtpClient.connect({
      url: `https://127.0.0.1:${node.port}/amtp`,
      certHash: await certificateHash(node.certPem),
      keepAliveMs: 0,
    });
    clients.push(client);
    return client;
  };
  const nodeOf = (address: string) => {
    const node = nodes.find((n) => address.endsWith(`@${n.domain}`));
    if (!node) throw new Error(`no server for ${address}`);
    return node;
  };
  const world: World = {
    root,
    dns,
    caPem: ca.certPem,
    nodes,
    connect,
    nodeOf,
    keyRecord: async (node) =>
      (await ServerKeys.open(`${node.dir}/data`)).records()[0],
    async certificate(names) {
      const cert = await createCertificate({ names, days: 13, issuer: ca });
      return {
        certPem: chainPem(cert.certPem, ca.certPem),
        keyPem: cert.keyPem,
      };
    },
    async policyOf(node) {
      const answer = await httpsGet(`amtp-policy.${node.domain}`, POLICY_PATH, {
        addresses: ["127.0.0.1"],
        port: node.port,
        caCerts: [ca.certPem],
        timeoutMs: 5000,
        maxBytes: 65536,
      });
      if (answer.status !== 200) {
        throw new Error(`${node.host} serves no policy (${answer.status})`);
      }
      const document = new TextDecoder().decode(answer.body);
      return { document, id: await policyId(document) };
    },
    async publish(extra = {}) {
      const txt = new Map<string, string>();
      for (const n of nodes) {
        txt.set(n.domain, `amtp-servers=${n.host}:${n.port}`);
        txt.set(n.host, `amtp-dkim=${await world.keyRecord(n)}`);
      }
      for (const domain of extra.policies ?? []) {
        const n = nodes.find((x) => x.domain === domain)!;
        const { id } = await world.policyOf(n);
        txt.set(
          `_amtp-policy.${domain}`,
          `v=AMTP-POLICY1; id=${id}; port=${n.port}`,
        );
      }
      for (const [name, value] of extra.txt ?? []) txt.set(name, value);
      const hosts = new Map<string, string>(
        nodes.flatMap((n) => [
          [n.host, "127.0.0.1"],
          [`amtp-policy.${n.domain}`, "127.0.0.1"],
        ]),
      );
      for (const [name, ip] of extra.hosts ?? []) hosts.set(name, ip);
      await dns.set({
        txt: [...txt, ...(extra.append ?? [])],
        hosts: [...hosts],
        mx: extra.mx,
      });
    },
    async start(node) {
      node.server = await startServerProcess(node.dir, node.env, {
        denoFlags: node.denoFlags,
      });
    },
    async addUser(address, name) {
      const existing = users.get(address);
      if (existing) return existing;
      const node = nodeOf(address);
      const key = await makeKey("HPKE-X25519");
      users.set(address, key);
      const admin = await connect(node);
      await admin.call("admin_add_user", {
        admin_token: node.adminToken,
        address,
        name: name ?? address.split("@")[0],
        algorithm: key.algorithm,
        public_key: key.publicKey,
      });
      admin.close();
      return key;
    },
    async mail(address) {
      const key = await world.addUser(address);
      const session = await mailSession(
        await connect(nodeOf(address)),
        address,
        key,
      );
      sessions.push(session);
      return session;
    },
    async close() {
      for (const s of sessions) s.client.close();
      for (const c of clients) c.close();
      for (const n of nodes) await n.server?.stop();
      await dns.stop();
      await Deno.remove(root, { recursive: true });
    },
  };
  for (const node of nodes) {
    await world.start(node);
    const admin = await connect(node);
    node.adminToken = await login(
      admin,
      "admin",
      "admin",
      await bootstrapKey(`${node.dir}/data`),
    );
    await admin.call("admin_add_domain", {
      admin_token: node.adminToken,
      domain: node.domain,
    });
    admin.close();
  }
  await world.publish();
  return world;
}
