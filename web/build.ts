/**
 * The web app's build: its three scripts bundled for browsers with
 * `deno bundle` (the client library, bson, HPKE, Preact, DOMPurify inside;
 * minified), and its static files as they are. The server builds it at
 * start (it takes well under a second); `deno task web` writes the same to
 * `web/dist/` (for a compiled server, which cannot bundle) and prints the
 * sizes.
 *
 * @module
 */

const DIR = new URL(".", import.meta.url).pathname;

/** Scripts: output name -> entry point (relative to web/). */
export const ENTRIES: Readonly<Record<string, string>> = {
  "app.js": "app/main.ts",
  "sw.js": "sw.ts",
  "mail.js": "mail_frame.ts",
};

/** Files served as they are. */
export const STATIC: readonly string[] = [
  "index.html",
  "app.css",
  "mail.html",
  "manifest.webmanifest",
  "icon.svg",
];

/** Where `deno task web` writes the build (not in git). */
export const DIST = `${DIR}dist`;

/** A build could not be made (no `deno bundle` here: a compiled server). */
export class WebBuildError extends Error {
  /** Stable error code. */
  readonly code = "web_build_failed";

  /** Create the error. */
  constructor(message: string) {
    super(message);
    this.name = "WebBuildError";
  }
}

/** Bundle the scripts and read the static files: name -> bytes. */
export async function buildWeb(): Promise<Map<string, Uint8Array>> {
  const out = await Deno.makeTempDir({ prefix: "amtp-web-" });
  try {
    const files = new Map<string, Uint8Array>();
    await Promise.all(
      Object.entries(ENTRIES).map(async ([name, entry]) => {
        let output: Deno.CommandOutput;
        try {
          output = await new Deno.Command(Deno.execPath(), {
            args: [
              "bundle",
              // The repository's import map, wherever this runs from.
              `--config=${DIR}../deno.json`,
              "--platform=browser",
              "--minify",
              "--quiet",
              "-o",
              `${out}/${name}`,
              `${DIR}${entry}`,
            ],
            stdout: "piped",
            stderr: "piped",
          }).output();
        } catch (error) {
          throw new WebBuildError(`deno bundle cannot run: ${error}`);
        }
        if (!output.success) {
          throw new WebBuildError(
            `deno bundle ${entry} failed: ${
              new TextDecoder().decode(output.stderr).slice(0, 2000)
            }`,
          );
        }
        files.set(name, await Deno.readFile(`${out}/${name}`));
      }),
    );
    for (const name of STATIC) {
      files.set(name, await Deno.readFile(`${DIR}${name}`));
    }
    return files;
  } finally {
    await Deno.remove(out, { recursive: true }).catch(() => {});
  }
}

/** A build written by `deno task web`, or undefined when there is none. */
export async function readDist(): Promise<Map<string, Uint8Array> | undefined> {
  const files = new Map<string, Uint8Array>();
  try {
    for (const name of [...Object.keys(ENTRIES), ...STATIC]) {
      files.set(name, await Deno.readFile(`${DIST}/${name}`));
    }
  } catch {
    return undefined;
  }
  return files;
}

async function gzipSize(bytes: Uint8Array): Promise<number> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  return (await new Response(stream).arrayBuffer()).byteLength;
}

if (import.meta.main) {
  const files = await buildWeb();
  await Deno.remove(DIST, { recursive: true }).catch(() => {});
  await Deno.mkdir(DIST, { recursive: true });
  let js = 0;
  for (const [name, bytes] of files) {
    await Deno.writeFile(`${DIST}/${name}`, bytes);
    const zipped = await gzipSize(bytes);
    if (name === "app.js") js += zipped;
    console.log(
      `${name.padEnd(22)} ${String(bytes.length).padStart(8)} bytes, ${
        String(zipped).padStart(7)
      } gzip`,
    );
  }
  console.log(`first load JavaScript (app.js, gzip): ${js} bytes -> ${DIST}`);
}
