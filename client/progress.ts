/**
 * A progress bar for long transfers in the CLI: one line on standard error,
 * redrawn in place (`\r`), at most once per percent, ended with a newline.
 *
 * @module
 */

/** Transfers larger than this many bytes show a bar. */
export const PROGRESS_ABOVE = 1024 * 1024;

const MiB = 1024 * 1024;

/** One transfer's bar. */
export class Progress {
  readonly #label: string;
  readonly #total: number;
  readonly #write: (text: string) => void;
  #shown = -1;

  /** A bar for `total` bytes named `label`, drawn through `write` (standard error by default). */
  constructor(
    label: string,
    total: number,
    write: (text: string) => void = (text) =>
      Deno.stderr.writeSync(new TextEncoder().encode(text)),
  ) {
    this.#label = label;
    this.#total = total;
    this.#write = write;
  }

  /** `done` bytes of the total are through. */
  update(done: number): void {
    if (this.#total <= PROGRESS_ABOVE) return;
    const percent = Math.min(100, Math.floor(done * 100 / this.#total));
    if (percent === this.#shown) return;
    this.#shown = percent;
    const width = 30;
    const full = Math.round(width * percent / 100);
    this.#write(
      `\r${this.#label} [${"#".repeat(full)}${".".repeat(width - full)}] ${
        String(percent).padStart(3)
      }% ${(done / MiB).toFixed(1)}/${(this.#total / MiB).toFixed(1)} MiB` +
        (percent === 100 ? "\n" : ""),
    );
  }
}
