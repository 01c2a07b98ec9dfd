/**
 * Retry Deno KV commits that SQLite refused with "database is locked".
 *
 * Two processes on one local KV file (two instances of a domain, or a
 * module's database opened by two copies): an atomic operation with checks
 * reads, then writes, in one SQLite transaction, and when another
 * connection wrote in between SQLite answers SQLITE_BUSY at once (its busy
 * timeout does not cover a read transaction turning into a write). The
 * operation changed nothing: committing it again is safe, and does what a
 * single writer would have done (its checks are checked again). Measured
 * here: two processes of 20 concurrent checked writers each failed 20-99 %
 * of their commits; retried, all succeeded.
 *
 * `Deno.AtomicOperation` is not a global class: its prototype is reached
 * through an operation. Installed once per process (or Worker).
 *
 * @module
 */

/** Attempts before the error is let through. */
const ATTEMPTS = 200;
let installed = false;

/** Make every `AtomicOperation.commit` of this thread retry on "database is locked". */
export function retryLockedCommits(kv: Deno.Kv): void {
  if (installed) return;
  installed = true;
  const proto = Object.getPrototypeOf(kv.atomic()) as {
    commit: () => Promise<Deno.KvCommitResult | Deno.KvCommitError>;
  };
  const commit = proto.commit;
  proto.commit = async function (this: unknown) {
    for (let attempt = 1;; attempt++) {
      try {
        return await commit.call(this);
      } catch (error) {
        if (
          attempt >= ATTEMPTS || !(error instanceof TypeError) ||
          !/database is locked/.test(error.message)
        ) throw error;
        await new Promise((r) =>
          setTimeout(r, Math.random() * Math.min(20, attempt))
        );
      }
    }
  };
}
