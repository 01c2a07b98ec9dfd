/**
 * A user's rules: their shape (checked by {@link parseRules}, bounded), and
 * their evaluation against the facts of one delivery ({@link evaluate}).
 * docs/PROTOCOL.md section 13.4 is the wire form.
 *
 * Evaluation is plain code over plain data: string conditions compare
 * lower-cased text, `matches` is a wildcard match in linear time (no
 * regular expressions from users), so 20 rules cost microseconds.
 *
 * @module
 */

import { ModuleError } from "../../../workers/sdk/mod.ts";

/** Rules a user may have. */
export const MAX_RULES = 100;
/** Conditions of one rule. */
export const MAX_CONDITIONS = 20;
/** Actions of one rule. */
export const MAX_ACTIONS = 10;
/** Addresses one forward action names. */
export const MAX_FORWARD = 5;
/** A rule set as JSON, at most. */
export const MAX_RULES_BYTES = 64 * 1024;
/** Forwarded copies forwarded again, at most (the chain a message carries). */
export const MAX_HOPS = 3;

/** What a delivery is known by (messages module, docs/PROTOCOL.md 13.4). */
export interface DeliveryFacts {
  /** The sender (From). */
  from: string;
  /** The envelope sender of an email ("" for a bounce); absent otherwise. */
  mail_from?: string;
  /** Recipients. */
  to: string[];
  /** Copy recipients. */
  cc: string[];
  /** Subject. */
  subject: string;
  /** Bytes. */
  size: number;
  /** Attachments. */
  attachments: number;
  /** Header fields of an email (names lower-case); none for AMTP messages. */
  headers: [string, string][];
  /** What the SMTP gateway found, for an email. */
  auth?: { spf: string; dkim: string; dmarc: string };
  /** For a forwarded message: its first sender, then each forwarder, in order. */
  forwarded: string[];
  /** `Auto-Submitted` (`auto-replied`, `auto-generated`, ...), or "". */
  auto_submitted: string;
}

/** Fields a condition may test. */
export const FIELDS = [
  "from",
  "to",
  "subject",
  "header",
  "size",
  "attachments",
  "spf",
  "dkim",
  "dmarc",
] as const;
/** A condition's field. */
export type Field = typeof FIELDS[number];
/** Comparisons of text. */
const TEXT_OPS = ["is", "contains", "matches", "exists"] as const;
/** Comparisons of numbers. */
const NUMBER_OPS = ["over", "under"] as const;

/** One condition. */
export interface Condition {
  /** What it tests. */
  field: Field;
  /** The header's name (field `header`). */
  header?: string;
  /** How. */
  op: typeof TEXT_OPS[number] | typeof NUMBER_OPS[number];
  /** Against what (text, or a number for `size`); absent for `exists`. */
  value?: string | number;
  /** Negate. */
  not?: boolean;
}

/** One action. */
export type Action =
  | { type: "fileinto"; folder: string }
  | { type: "flag" }
  | { type: "read" }
  | { type: "forward"; to: string[]; keep?: boolean }
  | { type: "reject"; reason: string }
  | { type: "vacation"; subject?: string; body: string; days?: number };

/** One rule. */
export interface Rule {
  /** For the user. */
  name?: string;
  /** Off rules are kept but skipped. */
  enabled?: boolean;
  /** `all` conditions (default) or `any`; no conditions match every message. */
  match?: "all" | "any";
  /** Conditions. */
  conditions: Condition[];
  /** Actions, when it matches. */
  actions: Action[];
  /** Rules after this one are not looked at when it matches. */
  stop?: boolean;
}

/** What the rules decided for one recipient. */
export interface Decision {
  /** The folder to store into. */
  folder?: string;
  /** Store as read. */
  seen?: true;
  /** Store flagged. */
  flagged?: true;
  /** Refuse the message for this recipient, with this reason. */
  reject?: string;
  /** Forward a copy to these addresses (loops already left out). */
  forward?: string[];
  /** Keep no copy here (a forward without `keep`). */
  discard?: true;
  /** A vacation rule matched: tell the rules module once stored (event). */
  vacation?: { subject?: string; body: string; days: number };
  /** Indexes of the rules that matched (for `rules_test`). */
  matched: number[];
}

const FOLDER_RE = /^[a-z0-9][a-z0-9 _.-]{0,63}$/;
const ADDRESS_RE = /^[^\s@]{1,64}@[^\s@]{1,255}$/;
const HEADER_RE = /^[a-z0-9-]{1,76}$/;

function bad(parameter: string, message: string): ModuleError {
  return new ModuleError(
    "invalid_parameter",
    `${parameter}: ${message}`,
    { parameter },
  );
}

function text(v: unknown, path: string, max: number): string {
  if (typeof v !== "string" || v.length > max) {
    throw bad(path, `must be text of at most ${max} characters`);
  }
  return v;
}

function condition(raw: unknown, path: string): Condition {
  const c = (raw ?? {}) as Record<string, unknown>;
  if (typeof c !== "object") throw bad(path, "must be an object");
  const field = c.field as Field;
  if (!FIELDS.includes(field)) {
    throw bad(`${path}.field`, `must be one of ${FIELDS.join(", ")}`);
  }
  const numeric = field === "size";
  const ops: readonly string[] = numeric
    ? NUMBER_OPS
    : field === "attachments"
    ? ["exists"]
    : TEXT_OPS;
  if (!ops.includes(String(c.op))) {
    throw bad(`${path}.op`, `must be one of ${ops.join(", ")} for ${field}`);
  }
  const out: Condition = { field, op: c.op as Condition["op"] };
  if (field === "header") {
    const name = text(c.header, `${path}.header`, 76).toLowerCase();
    if (!HEADER_RE.test(name)) {
      throw bad(`${path}.header`, "must be a header field name");
    }
    out.header = name;
  }
  if (numeric) {
    if (
      typeof c.value !== "number" || !Number.isSafeInteger(c.value) ||
      c.value < 0
    ) throw bad(`${path}.value`, "must be a whole number of bytes");
    out.value = c.value;
  } else if (c.op !== "exists") {
    out.value = text(c.value, `${path}.value`, 256).toLowerCase();
  }
  if (c.not !== undefined) {
    if (typeof c.not !== "boolean") {
      throw bad(`${path}.not`, "must be true or false");
    }
    out.not = c.not;
  }
  return out;
}

function addresses(v: unknown, path: string): string[] {
  if (!Array.isArray(v) || v.length === 0 || v.length > MAX_FORWARD) {
    throw bad(path, `must list 1 to ${MAX_FORWARD} addresses`);
  }
  return v.map((a, i) => {
    const address = text(a, `${path}[${i}]`, 320).trim().toLowerCase();
    if (!ADDRESS_RE.test(address)) {
      throw bad(`${path}[${i}]`, "must be an address");
    }
    return address;
  });
}

function action(raw: unknown, path: string): Action {
  const a = (raw ?? {}) as Record<string, unknown>;
  switch (a.type) {
    case "fileinto": {
      const folder = text(a.folder, `${path}.folder`, 64).toLowerCase().trim();
      if (!FOLDER_RE.test(folder) || folder === "sent") {
        throw bad(
          `${path}.folder`,
          "must be a folder: 1 to 64 of a-z, 0-9, space, '_', '.', '-' (not sent)",
        );
      }
      return { type: "fileinto", folder };
    }
    case "flag":
    case "read":
      return { type: a.type };
    case "forward": {
      if (a.keep !== undefined && typeof a.keep !== "boolean") {
        throw bad(`${path}.keep`, "must be true or false");
      }
      return {
        type: "forward",
        to: addresses(a.to, `${path}.to`),
        ...(a.keep === false ? { keep: false } : {}),
      };
    }
    case "reject":
      return { type: "reject", reason: text(a.reason, `${path}.reason`, 500) };
    case "vacation": {
      const days = a.days ?? 7;
      if (
        typeof days !== "number" || !Number.isInteger(days) || days < 1 ||
        days > 365
      ) throw bad(`${path}.days`, "must be a whole number from 1 to 365");
      return {
        type: "vacation",
        body: text(a.body, `${path}.body`, 4000),
        ...(a.subject !== undefined
          ? { subject: text(a.subject, `${path}.subject`, 200) }
          : {}),
        days,
      };
    }
    default:
      throw bad(
        `${path}.type`,
        "must be fileinto, flag, read, forward, reject or vacation",
      );
  }
}

/**
 * Check a rule set a user sent: its shape and its bounds.
 *
 * @throws {ModuleError} `invalid_parameter` (with `data.parameter` naming
 *   the place) or `limit_exceeded`
 */
export function parseRules(raw: unknown): Rule[] {
  if (!Array.isArray(raw)) throw bad("rules", "must be a list of rules");
  if (raw.length > MAX_RULES) {
    throw new ModuleError("limit_exceeded", `at most ${MAX_RULES} rules`);
  }
  if (JSON.stringify(raw).length > MAX_RULES_BYTES) {
    throw new ModuleError(
      "limit_exceeded",
      `rules are at most ${MAX_RULES_BYTES} bytes as JSON`,
    );
  }
  return raw.map((r, i): Rule => {
    const path = `rules[${i}]`;
    const rule = (r ?? {}) as Record<string, unknown>;
    if (typeof r !== "object" || Array.isArray(r)) {
      throw bad(path, "must be an object");
    }
    const conditions = rule.conditions ?? [];
    const actions = rule.actions;
    if (!Array.isArray(conditions)) {
      throw bad(`${path}.conditions`, "must be a list");
    }
    if (!Array.isArray(actions) || actions.length === 0) {
      throw bad(`${path}.actions`, "must list at least one action");
    }
    if (conditions.length > MAX_CONDITIONS) {
      throw new ModuleError(
        "limit_exceeded",
        `${path}: at most ${MAX_CONDITIONS} conditions`,
      );
    }
    if (actions.length > MAX_ACTIONS) {
      throw new ModuleError(
        "limit_exceeded",
        `${path}: at most ${MAX_ACTIONS} actions`,
      );
    }
    if (
      rule.match !== undefined && !["all", "any"].includes(String(rule.match))
    ) {
      throw bad(`${path}.match`, "must be all or any");
    }
    for (const flag of ["enabled", "stop"]) {
      if (rule[flag] !== undefined && typeof rule[flag] !== "boolean") {
        throw bad(`${path}.${flag}`, "must be true or false");
      }
    }
    return {
      ...(rule.name !== undefined
        ? { name: text(rule.name, `${path}.name`, 100) }
        : {}),
      ...(rule.enabled === false ? { enabled: false } : {}),
      ...(rule.match === "any" ? { match: "any" as const } : {}),
      conditions: conditions.map((c, j) =>
        condition(c, `${path}.conditions[${j}]`)
      ),
      actions: actions.map((a, j) => action(a, `${path}.actions[${j}]`)),
      ...(rule.stop === true ? { stop: true } : {}),
    };
  });
}

/**
 * Whether `text` matches `pattern`, where `*` is any run of characters and
 * `?` one character: the greedy two-pointer match, linear in practice and
 * never worse than their product (no backtracking blow-up).
 */
export function wildcard(pattern: string, text: string): boolean {
  let p = 0, t = 0, star = -1, mark = 0;
  while (t < text.length) {
    if (p < pattern.length && (pattern[p] === "?" || pattern[p] === text[t])) {
      p++;
      t++;
    } else if (p < pattern.length && pattern[p] === "*") {
      star = p++;
      mark = t;
    } else if (star >= 0) {
      p = star + 1;
      t = ++mark;
    } else return false;
  }
  while (pattern[p] === "*") p++;
  return p === pattern.length;
}

/** The texts a field names in the facts (lower-cased; several for `to`, `header`). */
function texts(c: Condition, facts: DeliveryFacts): string[] {
  switch (c.field) {
    case "from":
      return [facts.from.toLowerCase()];
    case "to":
      return [...facts.to, ...facts.cc].map((a) => a.toLowerCase());
    case "subject":
      return [facts.subject.toLowerCase()];
    case "header":
      return facts.headers.filter(([name]) => name === c.header).map((
        [, value],
      ) => value.toLowerCase());
    case "spf":
    case "dkim":
    case "dmarc":
      return facts.auth ? [facts.auth[c.field].toLowerCase()] : [];
    default:
      return [];
  }
}

function test(c: Condition, facts: DeliveryFacts): boolean {
  if (c.field === "size") {
    return c.op === "over"
      ? facts.size > (c.value as number)
      : facts.size < (c.value as number);
  }
  if (c.field === "attachments") return facts.attachments > 0;
  const values = texts(c, facts);
  if (c.op === "exists") return values.length > 0;
  const v = c.value as string;
  return values.some((x) =>
    c.op === "is" ? x === v : c.op === "contains" ? x.includes(v) : wildcard(
      v,
      x,
    )
  );
}

/**
 * Evaluate a user's rules against a delivery to `owner`: every enabled rule
 * in order whose conditions hold adds its actions (a later folder wins); a
 * reject ends it, as does a matched rule with `stop`. Forward targets that
 * would loop are left out: the owner, the sender, the first sender and anyone
 * who forwarded the message already, and any forward once it was forwarded
 * {@link MAX_HOPS} times.
 */
export function evaluate(
  rules: Rule[],
  facts: DeliveryFacts,
  owner: string,
): Decision {
  const decision: Decision = { matched: [] };
  for (let i = 0; i < rules.length; i++) {
    const rule = rules[i];
    if (rule.enabled === false) continue;
    const holds = (c: Condition) => test(c, facts) !== (c.not === true);
    const matched = rule.conditions.length === 0 ||
      (rule.match === "any"
        ? rule.conditions.some(holds)
        : rule.conditions.every(holds));
    if (!matched) continue;
    decision.matched.push(i);
    for (const a of rule.actions) {
      switch (a.type) {
        case "fileinto":
          decision.folder = a.folder;
          break;
        case "flag":
          decision.flagged = true;
          break;
        case "read":
          decision.seen = true;
          break;
        case "reject":
          return { reject: a.reason, matched: decision.matched };
        case "vacation":
          decision.vacation ??= {
            ...(a.subject !== undefined ? { subject: a.subject } : {}),
            body: a.body,
            days: a.days ?? 7,
          };
          break;
        case "forward": {
          if (facts.forwarded.length - 1 >= MAX_HOPS) break;
          const skip = new Set(
            [owner, facts.from, ...facts.forwarded].map((a) => a.toLowerCase()),
          );
          const to = a.to.filter((t) => !skip.has(t));
          if (to.length) {
            decision.forward = [...new Set([...decision.forward ?? [], ...to])];
            if (a.keep === false) decision.discard = true;
          }
          break;
        }
      }
    }
    if (rule.stop) break;
  }
  return decision;
}
