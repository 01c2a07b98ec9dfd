/**
 * `deno task web`: bundle the client library with the page and serve `web/`
 * over plain HTTP on loopback (a secure context: WebTransport works there).
 * `AMTP_WEB_PORT` sets the port (default 8080).
 *
 * @module
 */

const dir = new URL(".", import.meta.url).pathname;

/** Bundle `web/app.ts` (with the client library) into `web/app.js`. */
export async function buildWeb(): Promise<void> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
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

if (import.meta.main) {
  await buildWeb();
  const server = serveWeb(Number(Deno.env.get("AMTP_WEB_PORT") ?? 8080));
  console.log(
    `web check page: http://127.0.0.1:${server.addr.port}/?server=127.0.0.1:4433&hash=<certificate sha256>`,
  );
}
