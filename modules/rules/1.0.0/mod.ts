/**
 * The rules module: per-user rules evaluated on every delivery
 * (docs/PROTOCOL.md section 13.4).
 *
 * - `rules_get`, `rules_set`, `rules_test`: the user's commands.
 * - `rules_evaluate`: exported to the messages module only (not a client
 *   command), which calls it before it stores a delivery; one call carries
 *   every delivery waiting at that moment.
 * - `messages.message_delivered`: the event the messages module emits once
 *   a copy whose rules asked for a vacation reply is stored; the reply goes
 *   through the messages module's exported `auto_reply`.
 *
 * @module
 */

import {
  type ModuleContext,
  ModuleError,
  serveModule,
} from "../../../workers/sdk/mod.ts";
import {
  type DeliveryFacts,
  evaluate,
  parseRules,
  type Rule,
} from "./rules.ts";
import { noReplyReason, takeTurn } from "./vacation.ts";

/** A user's rules, read at most this long ago (other copies may have written since). */
const CACHE_MS = 2000;
/** Users whose rules are kept in memory. */
const CACHE_USERS = 10_000;
/** Deliveries one `rules_evaluate` call may carry. */
const MAX_DELIVERIES = 500;

const cache = new Map<string, { rules: Rule[]; at: number }>();

function rulesKey(address: string) {
  return ["rules", address.toLowerCase().slice(0, 256)];
}

/** A user's rules, from memory when read lately. */
async function rulesOf(ctx: ModuleContext, address: string): Promise<Rule[]> {
  const now = performance.now();
  const hit = cache.get(address);
  if (hit && now - hit.at < CACHE_MS) return hit.rules;
  const entry = await ctx.storage.get<Rule[]>(rulesKey(address));
  const rules = entry?.value ?? [];
  if (cache.size >= CACHE_USERS) cache.delete(cache.keys().next().value!);
  cache.set(address, { rules, at: now });
  return rules;
}

/** The caller must be a user (a client, or a module on a user's behalf). */
function user(ctx: ModuleContext): string {
  if (!ctx.caller.address) {
    throw new ModuleError("forbidden", "rules belong to a user");
  }
  return ctx.caller.address;
}

/** The caller must be the messages module (set by the core, not forgeable). */
function fromMessages(ctx: ModuleContext): void {
  if (ctx.caller.module !== "messages") {
    throw new ModuleError("forbidden", "only the messages module asks this");
  }
}

serveModule({
  commands: {
    rules_get: async (_params, ctx) => ({
      rules: (await ctx.storage.get<Rule[]>(rulesKey(user(ctx))))?.value ?? [],
    }),
    rules_set: async (params, ctx) => {
      const address = user(ctx);
      const rules = parseRules(params.rules);
      await ctx.storage.set(rulesKey(address), rules);
      cache.set(address, { rules, at: performance.now() });
      return { count: rules.length };
    },
    rules_test: async (params, ctx) => {
      const address = user(ctx);
      if (typeof params.id !== "string" || params.id.length > 64) {
        throw new ModuleError(
          "invalid_parameter",
          'parameter "id" must be a message id',
          { parameter: "id" },
        );
      }
      // The stored message's facts, asked on the user's behalf: the core
      // passes the user on, so only the user's own mailbox answers.
      const facts = await ctx.modules.call("messages", "message_facts", {
        id: params.id,
      }) as DeliveryFacts;
      const rules = params.rules === undefined
        ? await rulesOf(ctx, address)
        : parseRules(params.rules);
      const decision = evaluate(rules, facts, address);
      const { matched, vacation, ...actions } = decision;
      return {
        matched,
        actions: {
          ...actions,
          ...(vacation
            ? {
              vacation: noReplyReason(facts, address) ??
                "a reply, unless this sender was answered lately",
            }
            : {}),
        },
      };
    },
    rules_evaluate: async (params, ctx) => {
      fromMessages(ctx);
      const deliveries = params.deliveries;
      if (!Array.isArray(deliveries) || deliveries.length > MAX_DELIVERIES) {
        throw new ModuleError(
          "invalid_parameter",
          `"deliveries" lists at most ${MAX_DELIVERIES}`,
          { parameter: "deliveries" },
        );
      }
      const decisions = [];
      for (
        const d of deliveries as { facts: DeliveryFacts; owners: string[] }[]
      ) {
        const out = [];
        for (const owner of d.owners) {
          const rules = await rulesOf(ctx, owner);
          if (rules.length === 0) {
            out.push(null);
            continue;
          }
          const { matched: _, ...decision } = evaluate(rules, d.facts, owner);
          out.push(Object.keys(decision).length ? decision : null);
        }
        decisions.push(out);
      }
      return { decisions };
    },
  },
  events: {
    "messages.message_delivered": async (data, ctx) => {
      const { owner, id, facts } = data as {
        owner: string;
        id: string;
        facts: DeliveryFacts;
      };
      const { vacation } = evaluate(await rulesOf(ctx, owner), facts, owner);
      if (!vacation || noReplyReason(facts, owner)) return;
      if (
        !(await takeTurn(
          ctx.storage,
          owner,
          facts.from,
          vacation.days,
          new Date(),
        ))
      ) return;
      await ctx.modules.call("messages", "auto_reply", {
        owner,
        id,
        subject: vacation.subject ?? `Re: ${facts.subject}`.slice(0, 200),
        body: vacation.body,
      });
    },
  },
});
