/**
 * Group commit for the core's database: independent atomic writes that arrive
 * while a commit runs go together in the next one (one KV commit, one fsync,
 * for many writers). Each write keeps its own checks: when the shared commit
 * fails (one of them no longer holds), each is committed on its own, so a
 * write never fails because of another.
 *
 * @module
 */

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

/** Commits concurrent independent writes together. */
export class GroupCommit {
  readonly #kv: Deno.Kv;
  #queue: Write[] = [];
  #running = false;

  /** Group the writes to `kv`. */
  constructor(kv: Deno.Kv) {
    this.#kv = kv;
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
      this.#queue.push({ checks, ...write, resolve, reject });
      if (!this.#running) this.#run();
    });
  }

  async #run(): Promise<void> {
    this.#running = true;
    try {
      while (this.#queue.length > 0) {
        let group = this.#take();
        if (group.length > 1 && await this.#commit(group)) continue;
        if (group.length > 1) {
          // Tell the writes whose checks no longer hold; the rest go
          // together once more.
          group = await this.#holding(group);
          if (group.length > 1 && await this.#commit(group)) continue;
        }
        for (const write of group) {
          try {
            write.resolve(await this.#commit([write]));
          } catch (error) {
            write.reject(error);
          }
        }
      }
    } finally {
      this.#running = false;
    }
  }

  #take(): Write[] {
    const group: Write[] = [];
    let checks = 0;
    let mutations = 0;
    while (this.#queue.length > 0) {
      const next = this.#queue[0];
      if (
        group.length > 0 &&
        (checks + next.checks.length > MAX_CHECKS ||
          mutations + next.mutations > MAX_MUTATIONS)
      ) break;
      group.push(this.#queue.shift()!);
      checks += next.checks.length;
      mutations += next.mutations;
    }
    return group;
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
    if (group.length === 1) return (await op.commit()).ok;
    let ok: boolean;
    try {
      ok = (await op.commit()).ok;
    } catch {
      ok = false; // a limit of the shared commit: each on its own
    }
    if (ok) { for (const write of group) write.resolve(true); }
    return ok;
  }
}
