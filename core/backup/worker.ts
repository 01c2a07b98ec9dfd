/**
 * A backup taken in a Worker: each database's copy is one SQLite step that
 * holds its thread, so the server's event loop is not the one that waits.
 * Receives `{ from, target }` once and answers `{ manifest }` or
 * `{ error }`.
 *
 * @module
 */

import { type BackupManifest, type DataLocation, takeBackup } from "./mod.ts";

/** What the Worker is sent. */
export interface BackupRequest {
  /** What to back up. */
  from: DataLocation;
  /** Where. */
  target: string;
}

/** What it answers. */
export type BackupAnswer = { manifest: BackupManifest } | { error: string };

/** The Worker's global scope, as much of it as is used here. */
const scope = self as unknown as {
  onmessage: ((event: MessageEvent<BackupRequest>) => void) | null;
  postMessage(answer: BackupAnswer): void;
};

scope.onmessage = async (event) => {
  let answer: BackupAnswer;
  try {
    answer = {
      manifest: await takeBackup(event.data.from, event.data.target),
    };
  } catch (error) {
    answer = { error: error instanceof Error ? error.message : String(error) };
  }
  scope.postMessage(answer);
};
