/**
 * Group commit, the one implementation: writes that arrive while a commit
 * runs wait and go together in the next one (one commit, one fsync, for
 * many writers), and a shared commit that fails never fails a write that
 * would have succeeded alone: each is then done on its own.
 *
 * What differs between users is in their {@link GroupHooks}: which waiting
 * writes may share a commit (bounds of the store, keys touched), the
 * bookkeeping a commit carries (usage counters, mailbox sequence plans) and
 * how a write is told its outcome. The core's database (kv/group_commit.ts),
 * module storage (workers/sdk/storage.ts) and the messages module's mailbox
 * batcher use it.
 *
 * @module
 */

/** What a waiting write gets when a group is chosen: join it, wait for the next, or end the choice. */
export type Verdict = "join" | "skip" | "stop";

/** The bookkeeping of one kind of write. */
export interface GroupHooks<W> {
  /**
   * Begin choosing a group; the judge sees the waiting writes in order (the
   * first always joins) and says whether each joins. A skipped write waits
   * for a later group; after `stop`, the rest wait too.
   */
  choose(): (write: W) => Verdict;
  /**
   * Commit a group, and tell each write that landed. Returns the writes to
   * do again on their own (none when all landed). When it throws, the writes
   * of a group of several are done on their own; a group of one fails.
   */
  commit(group: W[]): Promise<W[]>;
  /** Do one write on its own, and tell it. */
  alone(write: W): Promise<void>;
  /** Tell a write it failed. */
  fail(write: W, error: unknown): void;
}

/** Commits writes of one kind in groups. */
export class GroupCommit<W> {
  readonly #hooks: GroupHooks<W>;
  #queue: W[] = [];
  #running = false;

  /** Group writes with these hooks. */
  constructor(hooks: GroupHooks<W>) {
    this.#hooks = hooks;
  }

  /** Writes waiting for a commit. */
  get waiting(): number {
    return this.#queue.length;
  }

  /** Queue a write; it is committed with the others waiting when its turn comes. */
  submit(write: W): void {
    this.#queue.push(write);
    if (!this.#running) this.#run();
  }

  async #run(): Promise<void> {
    this.#running = true;
    try {
      while (this.#queue.length > 0) {
        const group = this.#take();
        let alone: W[];
        try {
          alone = await this.#hooks.commit(group);
        } catch (error) {
          // One write's fault (a limit, its quota) must not fail the others.
          if (group.length > 1) alone = group;
          else {
            this.#hooks.fail(group[0], error);
            alone = [];
          }
        }
        for (const write of alone) {
          try {
            await this.#hooks.alone(write);
          } catch (error) {
            this.#hooks.fail(write, error);
          }
        }
      }
    } finally {
      this.#running = false;
    }
  }

  /** The next group, as the hooks choose it from the waiting writes. */
  #take(): W[] {
    const judge = this.#hooks.choose();
    const group: W[] = [];
    const rest: W[] = [];
    let i = 0;
    for (; i < this.#queue.length; i++) {
      const write = this.#queue[i];
      const verdict = judge(write);
      if (group.length === 0 || verdict === "join") group.push(write);
      else if (verdict === "skip") rest.push(write);
      else break;
    }
    this.#queue = [...rest, ...this.#queue.slice(i)];
    return group;
  }
}
