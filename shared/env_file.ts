/**
 * The optional `.env` file: `NAME=value` lines (comments, quotes and
 * `export` as in dotenv), read by the server, the offline admin tool and the
 * CLI. A variable already set in the environment wins; a missing file is
 * fine and says nothing.
 *
 * @module
 */

import { parseEnv } from "node:util";

/**
 * Set every variable of the file at `path` that the environment does not
 * set yet; returns the names set. Nothing happens when there is no file.
 */
export async function loadEnvFile(path = ".env"): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  const set: string[] = [];
  for (const [name, value] of Object.entries(parseEnv(text))) {
    if (value !== undefined && Deno.env.get(name) === undefined) {
      Deno.env.set(name, value);
      set.push(name);
    }
  }
  return set;
}
