/**
 * The conformance suite's harness: requirements as checks, each naming its
 * section of docs/PROTOCOL.md and its level (MUST or SHOULD), run in order,
 * one line printed per requirement, and a summary.
 *
 * @module
 */

/** RFC 2119 level of a requirement. */
export type Level = "MUST" | "SHOULD";

/** What became of one requirement. */
export interface Result {
  /** Section of PROTOCOL.md, e.g. `2` or `13.2`. */
  section: string;
  /** Its level. */
  level: Level;
  /** The requirement, as one sentence. */
  text: string;
  /** `pass`, `fail`, or `skip` (it could not be checked here, say why). */
  outcome: "pass" | "fail" | "skip";
  /** Why it failed or was skipped. */
  detail?: string;
  /** Milliseconds it took. */
  ms: number;
}

/** A requirement that cannot be checked against this server (a missing module, a long timeout). */
export class Skip extends Error {
  /** Stable error code. */
  readonly code = "skip";

  /** Create it with the reason. */
  constructor(reason: string) {
    super(reason);
    this.name = "Skip";
  }
}

/** A check that found the server wrong. */
export class Mismatch extends Error {
  /** Stable error code. */
  readonly code = "mismatch";

  /** Create it with what was expected and seen. */
  constructor(message: string) {
    super(message);
    this.name = "Mismatch";
  }
}

/** Fail unless `condition` holds. */
export function expect(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Mismatch(message);
}

/** Fail unless `actual` equals `wanted` (===). */
export function expectEqual<T>(actual: T, wanted: T, what: string): void {
  if (actual !== wanted) {
    throw new Mismatch(
      `${what}: expected ${show(wanted)}, got ${show(actual)}`,
    );
  }
}

/** A short text of a value, for messages. */
export function show(value: unknown): string {
  if (value instanceof Uint8Array) return `<${value.byteLength} bytes>`;
  if (value instanceof Date) return value.toISOString();
  try {
    const text = JSON.stringify(value);
    return text === undefined ? String(value) : text.slice(0, 200);
  } catch {
    return String(value);
  }
}

/** Runs checks and reports each as it ends. */
export class Suite {
  readonly results: Result[] = [];
  readonly #print: (line: string) => void;
  readonly #filter?: RegExp;

  /** Report through `print`; run only requirements matching `filter`. */
  constructor(print: (line: string) => void, filter?: RegExp) {
    this.#print = print;
    this.#filter = filter;
  }

  /** Check one requirement; never throws. */
  async check(
    section: string,
    level: Level,
    text: string,
    body: () => Promise<void> | void,
  ): Promise<boolean> {
    if (this.#filter && !this.#filter.test(`§${section} ${text}`)) return true;
    const started = performance.now();
    let outcome: Result["outcome"] = "pass";
    let detail: string | undefined;
    try {
      await body();
    } catch (error) {
      outcome = error instanceof Skip ? "skip" : "fail";
      detail = error instanceof Error ? error.message : String(error);
    }
    const result = {
      section,
      level,
      text,
      outcome,
      detail,
      ms: Math.round(performance.now() - started),
    };
    this.results.push(result);
    this.#print(formatResult(result));
    return outcome !== "fail";
  }

  /** Failed MUSTs. */
  get failedMusts(): Result[] {
    return this.results.filter((r) =>
      r.outcome === "fail" && r.level === "MUST"
    );
  }

  /** The summary line. */
  summary(): string {
    const count = (outcome: string, level?: Level) =>
      this.results.filter((r) =>
        r.outcome === outcome && (!level || r.level === level)
      ).length;
    return `${this.results.length} requirements: ${count("pass")} passed, ${
      count("fail")
    } failed (${count("fail", "MUST")} MUST, ${
      count("fail", "SHOULD")
    } SHOULD), ${count("skip")} skipped`;
  }
}

/** One line: `PASS  §2     MUST    text` (and why, when not passed). */
export function formatResult(r: Result): string {
  const tag = { pass: "PASS", fail: "FAIL", skip: "SKIP" }[r.outcome];
  return `${tag}  ${`§${r.section}`.padEnd(6)} ${r.level.padEnd(6)} ${r.text}${
    r.detail
      ? `\n      ${r.outcome === "skip" ? "skipped" : "got"}: ${r.detail}`
      : ""
  }`;
}
