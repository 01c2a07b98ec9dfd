/**
 * Group commit for the core's database: independent atomic writes that arrive
 * while a commit runs go together in the next one (one KV commit, one fsync,
 * for many writers). Each write keeps its own checks: when the shared commit
 * fails (one of them no longer holds), the writes whose checks fail are told
 * so, the others go together once more, and then each on its own, so a
 * write never fails because of another. The loop is shared/group_commit.ts.
 *
 * @module
 */

import { GroupCommit } from "../shared/group_commit.ts";

/** Checks of one commit allowed by Deno KV. */
const MAX_CHECKS = 100;
/** Mutations per shared commit (Deno KV allows 1,000). */
const MAX_MUTATIONS = 500;

interface Write {
  checks: Deno.AtomicCheck[];
  mutations: number;
  mutate: (op: Deno.AtomicOperation) => void;
  resolve: (ok: boolean) => void;
  reject: (error: unknown) => void;
}

/** Commits concurrent independent writes to the core's database together. */
export class KvGroupCommit {
  readonly #kv: Deno.Kv;
  readonly #group: GroupCommit<Write>;
  /** Told of each commit: milliseconds it took and the writes it carried (metrics). */
  onCommit?: (ms: number, writes: number) => void;

  /** Group the writes to `kv`. */
  constructor(kv: Deno.Kv) {
    this.#kv = kv;
    this.#group = new GroupCommit<Write>({
      // Writes in order, as long as the commit stays within KV's bounds.
      choose: () => {
        let checks = 0;
        let mutations = 0;
        return (write) => {
          checks += write.checks.length;
          mutations += write.mutations;
          return checks <= MAX_CHECKS && mutations <= MAX_MUTATIONS
            ? "join"
            : "stop";
        };
      },
      commit: async (group) => {
        // One write alone learns its own outcome (false when a check fails).
        if (group.length === 1) return group;
        if (await this.#commit(group)) return [];
        // Tell the writes whose checks no longer hold; the rest go together
        // once more, then each on its own.
        const holding = await this.#holding(group);
        if (holding.length > 1 && await this.#commit(holding)) return [];
        return holding;
      },
      alone: async (write) => write.resolve(await this.#commit([write])),
      fail: (write, error) => write.reject(error),
    });
  }

  /**
   * Commit `mutate`'s mutations (`mutations` of them) when `checks` hold;
   * resolves false when a check did not hold (nothing of this write is then
   * stored).
   */
  write(
    checks: Deno.AtomicCheck[],
    write: { mutations: number; mutate: (op: Deno.AtomicOperation) => void },
  ): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.#group.submit({ checks, ...write, resolve, reject });
    });
  }

  /** The writes of `group` whose checks hold now; the others are answered false. */
  async #holding(group: Write[]): Promise<Write[]> {
    const checks = group.flatMap((w) => w.checks);
    const stamps: (string | null)[] = [];
    for (let i = 0; i < checks.length; i += 10) {
      const entries = await this.#kv.getMany(
        checks.slice(i, i + 10).map((c) => c.key),
      );
      stamps.push(...entries.map((e) => e.versionstamp));
    }
    let at = 0;
    return group.filter((write) => {
      const mine = stamps.slice(at, at += write.checks.length);
      const holds = write.checks.every((c, i) => c.versionstamp === mine[i]);
      if (!holds) write.resolve(false);
      return holds;
    });
  }

  /** One commit of `group`; true when it landed (a shared one resolves its writers). */
  async #commit(group: Write[]): Promise<boolean> {
    const op = this.#kv.atomic();
    for (const write of group) {
      for (const check of write.checks) op.check(check);
      write.mutate(op);
    }
    const started = performance.now();
    if (group.length === 1) {
      try {
        return (await op.commit()).ok;
      } finally {
        this.onCommit?.(performance.now() - started, 1);
      }
    }
    let ok: boolean;
    try {
      ok = (await op.commit()).ok;
    } catch {
      ok = false; // a limit of the shared commit: each on its own
    }
    this.onCommit?.(performance.now() - started, group.length);
    if (ok) { for (const write of group) write.resolve(true); }
    return ok;
  }
}
