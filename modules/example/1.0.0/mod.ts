/**
 * The example module: copy this folder to start a module of your own.
 *
 * - `echo {text}` answers the text and who asked (the caller is set by the
 *   server from the login token; a client cannot choose it).
 * - `note_set {title, body}`, `note_get {title}`, `note_list {cursor?}` keep
 *   per-user notes in the module's storage.
 * - `ping_me {text?}` pushes an `example_pinged` event to every session of
 *   the caller.
 *
 * @module
 */

import { ModuleError, serveModule } from "../../../workers/sdk/mod.ts";

function text(
  params: Record<string, unknown>,
  name: string,
  max = 1000,
): string {
  const value = params[name];
  if (typeof value !== "string" || value.length === 0 || value.length > max) {
    throw new ModuleError(
      "invalid_parameter",
      `parameter "${name}" must be a string of 1 to ${max} characters`,
      {
        parameter: name,
      },
    );
  }
  return value;
}

serveModule({
  commands: {
    echo(params, ctx) {
      return { text: text(params, "text"), caller: ctx.caller.address };
    },
    async note_set(params, ctx) {
      const title = text(params, "title", 200);
      const body = text(params, "body", 100_000);
      await ctx.storage.set(["notes", ctx.caller.address, title], {
        body,
        saved: new Date(),
      });
      return { title };
    },
    async note_get(params, ctx) {
      const title = text(params, "title", 200);
      const entry = await ctx.storage.get<{ body: string; saved: Date }>([
        "notes",
        ctx.caller.address,
        title,
      ]);
      if (!entry) throw new ModuleError("not_found", `no note "${title}"`);
      return { title, ...entry.value };
    },
    async note_list(params, ctx) {
      const page = await ctx.storage.list<{ body: string; saved: Date }>([
        "notes",
        ctx.caller.address,
      ], {
        limit: 50,
        cursor: typeof params.cursor === "string" ? params.cursor : undefined,
      });
      return {
        notes: page.items.map((e) => ({
          title: e.key[2],
          saved: e.value.saved,
        })),
        cursor: page.cursor,
      };
    },
    async ping_me(params, ctx) {
      const delivered = await ctx.push(ctx.caller.address, "example_pinged", {
        text: typeof params.text === "string" ? params.text : "ping",
      });
      return { delivered };
    },
  },
});
