/**
 * The house rules of dependencies (docs/ARCHITECTURE.md), checked on every
 * import of every source file: a new import against the grain fails here.
 */

import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;
const SKIP = new Set([".git", "data", "node_modules", "results"]);

/** Every `.ts` file under `dir`, relative to the root. */
function* sources(dir = ""): Iterable<string> {
  for (const entry of Deno.readDirSync(`${ROOT}${dir}`)) {
    if (SKIP.has(entry.name) || entry.name.startsWith(".")) continue;
    const path = dir ? `${dir}/${entry.name}` : entry.name;
    if (entry.isDirectory) yield* sources(path);
    else if (path.endsWith(".ts")) yield path;
  }
}

/** The files `file` imports (relative specifiers, resolved from the root). */
function imports(file: string): string[] {
  const text = Deno.readTextFileSync(`${ROOT}${file}`);
  const out: string[] = [];
  for (
    const match of text.matchAll(
      /(?:^|\n)\s*(?:import|export)\b[^;]*?\bfrom\s*["'](\.[^"']+)["']|import\(\s*["'](\.[^"']+)["']/g,
    )
  ) {
    const spec = match[1] ?? match[2];
    const resolved = new URL(spec, `file://${ROOT}${file}`).pathname;
    out.push(resolved.slice(ROOT.length));
  }
  return out;
}

const isTest = (file: string) => /_test\.ts$/.test(file);
const top = (file: string) => file.split("/")[0];

/** Each rule: which files it speaks of, and which of their imports break it. */
const RULES: {
  rule: string;
  from: (file: string) => boolean;
  forbidden: (target: string, file: string) => boolean;
}[] = [
  {
    rule: "kv/ depends on nothing of core/, workers/ or modules/",
    from: (f) => top(f) === "kv" && !isTest(f),
    forbidden: (t) => ["core", "workers", "modules", "client"].includes(top(t)),
  },
  {
    rule: "shared/ depends only on shared/",
    from: (f) => top(f) === "shared" && !isTest(f),
    forbidden: (t) => top(t) !== "shared",
  },
  {
    rule: "core/ imports neither workers/ nor the wiring (server/)",
    from: (f) => top(f) === "core",
    forbidden: (t) => ["workers", "modules", "server"].includes(top(t)),
  },
  {
    rule: "workers/ imports neither the wiring (server/) nor modules/",
    from: (f) => top(f) === "workers",
    forbidden: (t) => ["server", "modules"].includes(top(t)),
  },
  {
    rule: "the logger is a leaf",
    from: (f) => f === "core/log/mod.ts",
    forbidden: () => true,
  },
  {
    rule:
      "core/wire is shared with clients: it imports only itself and shared/",
    from: (f) => f.startsWith("core/wire/") && !isTest(f),
    forbidden: (t) => !t.startsWith("core/wire/") && top(t) !== "shared",
  },
  {
    rule:
      "client/ (and web/) import only client/, core/wire/ and shared/ (web/ also itself)",
    from: (f) => (top(f) === "client" || top(f) === "web") && !isTest(f),
    forbidden: (t, f) =>
      !["client", "shared"].includes(top(t)) && !t.startsWith("core/wire/") &&
      !(top(f) === "web" && top(t) === "web"),
  },
  {
    rule: "bench/ and tests/ never import each other",
    from: (f) => top(f) === "bench" || top(f) === "tests",
    forbidden: (t, f) =>
      (top(f) === "bench" && top(t) === "tests") ||
      (top(f) === "tests" && top(t) === "bench"),
  },
  {
    rule: "testing/ (support for tests and the bench) imports neither",
    from: (f) => top(f) === "testing",
    forbidden: (t) => top(t) === "tests" || top(t) === "bench",
  },
  {
    rule: "modules import only their own folder and the SDK",
    from: (f) => top(f) === "modules" && !isTest(f),
    forbidden: (t, f) =>
      !t.startsWith(f.split("/").slice(0, 3).join("/") + "/") &&
      t !== "workers/sdk/mod.ts",
  },
  {
    rule: "federation uses neither the session nor the transport",
    from: (f) => f.startsWith("core/federation/") && !isTest(f),
    forbidden: (t) =>
      t.startsWith("core/session/") || t.startsWith("core/transport/"),
  },
];

Deno.test("dependencies: every import points down (the rules of docs/ARCHITECTURE.md)", () => {
  const broken: string[] = [];
  let checked = 0;
  for (const file of sources()) {
    for (const target of imports(file)) {
      checked++;
      for (const { rule, from, forbidden } of RULES) {
        if (from(file) && forbidden(target, file)) {
          broken.push(`${file} -> ${target}: ${rule}`);
        }
      }
    }
  }
  assert.ok(checked > 400, `only ${checked} imports found: the scan is broken`);
  assert.deepEqual(broken, []);
});
