/**
 * Metrics in the Prometheus text format (version 0.0.4): counters, gauges and
 * histograms with labels, in one registry per server, written out on a
 * scrape. Gauges whose value lives elsewhere (sessions, the queue) are read
 * by a collector at scrape time.
 *
 * Label values come from clients (command names, error codes): each family
 * keeps at most {@link MAX_SERIES} label sets, and any further one is counted
 * under the value `_other` for every label, so no client can grow the
 * registry without bound.
 *
 * Hand-written rather than `prom-client`: the format is a few lines of text,
 * and a registry per server (tests run several in one process) is simpler
 * without that library's global default registry.
 *
 * @module
 */

/** Label sets of one family kept at most; beyond, samples go to `_other`. */
export const MAX_SERIES = 500;

/** Label names and values of one sample. */
export type Labels = Record<string, string>;

/** A metric family's kind, as in the `# TYPE` line. */
export type MetricType = "counter" | "gauge" | "histogram";

/** Latency buckets in seconds (1 ms to 30 s). */
export const LATENCY_BUCKETS: readonly number[] = [
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
];

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** One family: a name, a help text, a type and its series. */
abstract class Family<S> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  abstract readonly type: MetricType;
  protected readonly series = new Map<string, { labels: Labels; state: S }>();

  constructor(name: string, help: string, labelNames: readonly string[]) {
    if (!NAME.test(name)) throw new Error(`invalid metric name ${name}`);
    for (const label of labelNames) {
      if (!LABEL.test(label) || label.startsWith("__") || label === "le") {
        throw new Error(`invalid label name ${label}`);
      }
    }
    this.name = name;
    this.help = help;
    this.labelNames = labelNames;
  }

  protected abstract fresh(): S;

  /** The state of the series of `labels` (created on first use, bounded). */
  protected state(labels: Labels): S {
    let values = this.labelNames.map((n) => String(labels[n] ?? ""));
    let key = values.join("\u0000");
    let entry = this.series.get(key);
    if (!entry) {
      if (this.series.size >= MAX_SERIES) {
        values = this.labelNames.map(() => "_other");
        key = values.join("\u0000");
        entry = this.series.get(key);
      }
      if (!entry) {
        const own: Labels = {};
        this.labelNames.forEach((n, i) => own[n] = values[i]);
        entry = { labels: own, state: this.fresh() };
        this.series.set(key, entry);
      }
    }
    return entry.state;
  }

  /** The sample lines of this family. */
  abstract samples(): string[];
}

/** A value that only goes up. */
export class Counter extends Family<{ value: number }> {
  readonly type = "counter" as const;

  protected fresh() {
    return { value: 0 };
  }

  /** Add `by` (default 1) to the series of `labels`. */
  inc(labels: Labels = {}, by = 1): void {
    if (by < 0 || !Number.isFinite(by)) return;
    this.state(labels).value += by;
  }

  /** The current value of one series (tests). */
  get(labels: Labels = {}): number {
    return this.state(labels).value;
  }

  samples(): string[] {
    return [...this.series.values()].map(({ labels, state }) =>
      sample(this.name, labels, state.value)
    );
  }
}

/** A value that goes up and down, set directly or read at scrape time. */
export class Gauge extends Family<{ value: number }> {
  readonly type = "gauge" as const;

  protected fresh() {
    return { value: 0 };
  }

  /** Set the series of `labels`. */
  set(labels: Labels, value: number): void {
    this.state(labels).value = value;
  }

  /** Forget every series (a collector sets them afresh). */
  reset(): void {
    this.series.clear();
  }

  samples(): string[] {
    return [...this.series.values()].map(({ labels, state }) =>
      sample(this.name, labels, state.value)
    );
  }
}

/** Observations counted into cumulative buckets, with their sum and count. */
export class Histogram
  extends Family<{ counts: number[]; sum: number; count: number }> {
  readonly type = "histogram" as const;
  readonly buckets: readonly number[];

  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    buckets: readonly number[] = LATENCY_BUCKETS,
  ) {
    super(name, help, labelNames);
    this.buckets = [...buckets].sort((a, b) => a - b);
  }

  protected fresh() {
    return { counts: this.buckets.map(() => 0), sum: 0, count: 0 };
  }

  /** Count one observation (seconds, for latencies). */
  observe(labels: Labels, value: number): void {
    if (!Number.isFinite(value)) return;
    const state = this.state(labels);
    for (let i = 0; i < this.buckets.length; i++) {
      if (value <= this.buckets[i]) state.counts[i]++;
    }
    state.sum += value;
    state.count++;
  }

  /** Milliseconds since `start` (a `performance.now()`), observed in seconds. */
  since(labels: Labels, start: number): void {
    this.observe(labels, (performance.now() - start) / 1000);
  }

  samples(): string[] {
    const lines: string[] = [];
    for (const { labels, state } of this.series.values()) {
      this.buckets.forEach((le, i) =>
        lines.push(
          sample(
            `${this.name}_bucket`,
            { ...labels, le: number(le) },
            state
              .counts[i],
          ),
        )
      );
      lines.push(
        sample(`${this.name}_bucket`, { ...labels, le: "+Inf" }, state.count),
      );
      lines.push(sample(`${this.name}_sum`, labels, state.sum));
      lines.push(sample(`${this.name}_count`, labels, state.count));
    }
    return lines;
  }
}

/** Families of one server, and collectors run before each scrape. */
export class Registry {
  readonly #families = new Map<string, Family<unknown>>();
  readonly #collectors: (() => void | Promise<void>)[] = [];

  /** A counter (names end in `_total`). */
  counter(name: string, help: string, labels: readonly string[] = []): Counter {
    return this.#add(new Counter(name, help, labels));
  }

  /** A gauge. */
  gauge(name: string, help: string, labels: readonly string[] = []): Gauge {
    return this.#add(new Gauge(name, help, labels));
  }

  /** A histogram (latencies in seconds by default). */
  histogram(
    name: string,
    help: string,
    labels: readonly string[] = [],
    buckets?: readonly number[],
  ): Histogram {
    return this.#add(new Histogram(name, help, labels, buckets));
  }

  /** Run `collect` before every scrape (it sets gauges from their source). */
  collect(collect: () => void | Promise<void>): void {
    this.#collectors.push(collect);
  }

  /** The whole registry in the text format; a failing collector is skipped. */
  async text(): Promise<string> {
    await Promise.all(
      this.#collectors.map(async (collect) => {
        try {
          await collect();
        } catch {
          // A source that cannot be read leaves its last values.
        }
      }),
    );
    const out: string[] = [];
    for (const family of this.#families.values()) {
      out.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
      out.push(`# TYPE ${family.name} ${family.type}`);
      out.push(...family.samples());
    }
    return out.join("\n") + "\n";
  }

  #add<F extends Family<unknown>>(family: F): F {
    if (this.#families.has(family.name)) {
      throw new Error(`metric ${family.name} registered twice`);
    }
    this.#families.set(family.name, family);
    return family;
  }
}

/** The content type of {@link Registry.text}. */
export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

function sample(name: string, labels: Labels, value: number): string {
  const pairs = Object.entries(labels).map(([k, v]) =>
    `${k}="${escapeLabel(v)}"`
  );
  return `${name}${pairs.length ? `{${pairs.join(",")}}` : ""} ${
    number(value)
  }`;
}

function number(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(
    /"/g,
    '\\"',
  );
}

function escapeHelp(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}
