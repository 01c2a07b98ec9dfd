import assert from "node:assert/strict";
import { GroupCommit, type GroupHooks, type Verdict } from "./group_commit.ts";

interface W {
  name: string;
  key?: string;
  bad?: boolean;
}

/** A group commit whose commits are recorded; `held` keeps the first one running. */
function recorder(
  choose: () => (w: W) => Verdict = () => () => "join",
) {
  const commits: string[][] = [];
  const alone: string[] = [];
  const failed: string[] = [];
  let release!: () => void;
  const held = new Promise<void>((resolve) => release = resolve);
  let first = true;
  const done: Promise<void>[] = [];
  const finished = new Map<string, () => void>();
  const hooks: GroupHooks<W> = {
    choose,
    commit: async (group) => {
      if (first) {
        first = false;
        await held;
      }
      commits.push(group.map((w) => w.name));
      if (group.some((w) => w.bad)) throw new Error("the shared commit failed");
      for (const w of group) finished.get(w.name)!();
      return [];
    },
    alone: (w) => {
      if (w.bad) throw new Error(`${w.name} cannot be written`);
      alone.push(w.name);
      finished.get(w.name)!();
      return Promise.resolve();
    },
    fail: (w) => {
      failed.push(w.name);
      finished.get(w.name)!();
    },
  };
  const group = new GroupCommit(hooks);
  const submit = (w: W) => {
    done.push(new Promise((resolve) => finished.set(w.name, resolve)));
    group.submit(w);
  };
  return {
    commits,
    alone,
    failed,
    release,
    submit,
    settled: () => Promise.all(done),
  };
}

Deno.test("group commit: writes arriving while a commit runs go together in the next", async () => {
  const r = recorder();
  r.submit({ name: "a" });
  for (const name of ["b", "c", "d"]) r.submit({ name });
  r.release();
  await r.settled();
  assert.deepEqual(r.commits, [["a"], ["b", "c", "d"]]);
});

Deno.test("group commit: a failed shared commit does each write alone; a write that fails alone fails only itself", async () => {
  const r = recorder();
  r.submit({ name: "a" });
  r.submit({ name: "b" });
  r.submit({ name: "bad", bad: true });
  r.submit({ name: "c" });
  r.release();
  await r.settled();
  assert.deepEqual(r.commits, [["a"], ["b", "bad", "c"]]);
  assert.deepEqual(r.alone, ["b", "c"]);
  assert.deepEqual(r.failed, ["bad"]);
});

Deno.test("group commit: the hooks choose: a skipped write waits for the next group, stop ends the choice", async () => {
  // Writes on a key already in the group wait; at most three per group.
  const r = recorder(() => {
    const keys = new Set<string>();
    let n = 0;
    return (w) => {
      if (n === 3) return "stop";
      if (w.key && keys.has(w.key)) return "skip";
      if (w.key) keys.add(w.key);
      n++;
      return "join";
    };
  });
  r.submit({ name: "first" });
  r.submit({ name: "x1", key: "x" });
  r.submit({ name: "x2", key: "x" });
  r.submit({ name: "y1", key: "y" });
  r.submit({ name: "z1", key: "z" });
  r.submit({ name: "w1", key: "w" });
  r.release();
  await r.settled();
  assert.deepEqual(r.commits, [["first"], ["x1", "y1", "z1"], ["x2", "w1"]]);
});
