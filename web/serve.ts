/**
 * `deno task web`: bundle the client library with the page and serve `web/`
 * over plain HTTP on loopback (a secure context: WebTransport works there).
 * `AMTP_WEB_PORT` sets the port (default 8080; 0 picks a free one). It prints
 * the page's address filled in for the local server (found as the CLI finds
 * it: the data folder, else AMTP_HOST/AMTP_PORT, else 4433), with the hash
 * of its certificate.
 *
 * @module
 */

import { localDataDir, localServer } from "../client/cli_config.ts";
import { certificateHash } from "../shared/pem.ts";

const dir = new URL(".", import.meta.url).pathname;

/** Bundle `web/app.ts` (with the client library) into `web/app.js`. */
export async function buildWeb(): Promise<void> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      // The repository's import map, wherever this runs from.
      `--config=${dir}../deno.json`,
      "--platform=browser",
      "--quiet",
      "-o",
      `${dir}app.js`,
      `${dir}app.ts`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!output.success) {
    throw new Error(
      `bundle failed: ${new TextDecoder().decode(output.stderr)}`,
    );
  }
}

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
};

/** Serve the page on `port` (0: any); returns the server. */
export function serveWeb(port: number): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve(
    { hostname: "127.0.0.1", port, onListen() {} },
    async (request) => {
      const path = new URL(request.url).pathname;
      const name = path === "/" ? "index.html" : path.slice(1);
      if (!["index.html", "app.js"].includes(name)) {
        return new Response(
          "not found\n",
          { status: 404 },
        );
      }
      const body = await Deno.readFile(`${dir}${name}`);
      return new Response(body, {
        headers: { "content-type": TYPES[name.split(".").pop()!] },
      });
    },
  );
}

/**
 * The page's address for `server` (`host:port`) with its certificate hash
 * filled in (empty when unknown: the page then asks for it).
 */
export function pageUrl(
  webPort: number,
  server: string,
  hash: string | undefined,
): string {
  const query = new URLSearchParams({ server, hash: hash ?? "" });
  return `http://127.0.0.1:${webPort}/?${query}`;
}

/** The local server as a browser on this machine reaches it, and its certificate hash. */
async function localTarget(): Promise<
  { server: string; hash?: string; from: string }
> {
  const found = await localServer();
  const host = !found || found.host === "localhost" ? "127.0.0.1" : found.host;
  const server = `${host}:${found?.port ?? 4433}`;
  const pem = await Deno.readTextFile(`${localDataDir()}/tls/cert.pem`).catch(
    () => undefined,
  );
  return {
    server,
    hash: pem ? await certificateHash(pem) : undefined,
    from: found?.source ?? "the default port",
  };
}

if (import.meta.main) {
  await buildWeb();
  const port = Number(Deno.env.get("AMTP_WEB_PORT") ?? 8080);
  const web = serveWeb(port);
  const target = await localTarget();
  console.log(
    [
      `web check page: ${pageUrl(web.addr.port, target.server, target.hash)}`,
      `  for the server at ${target.server} (${target.from})${
        target.hash
          ? ""
          : `; no certificate in ${localDataDir()}/tls: enter the server's hash on the page`
      }`,
      `  (AMTP_WEB_PORT sets this page's port; Ctrl-C stops it)`,
    ].join("\n"),
  );
}
