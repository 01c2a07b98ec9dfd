/// <reference lib="dom" />
/**
 * A small observable value and the hook that re-renders a component when it
 * changes: the app's state lives in a few of these (connection, account,
 * mailbox), changed in one place each, read by the screens.
 *
 * @module
 */

import { useEffect, useState } from "preact/hooks";

/** A value that tells its subscribers when it changes. */
export class Store<T> {
  #value: T;
  readonly #subscribers = new Set<() => void>();

  /** Start with `value`. */
  constructor(value: T) {
    this.#value = value;
  }

  /** The current value. */
  get value(): T {
    return this.#value;
  }

  /** Replace the value (or merge a partial object into it) and tell subscribers. */
  set(next: T | Partial<T> | ((current: T) => T)): void {
    const value = typeof next === "function"
      ? (next as (current: T) => T)(this.#value)
      : typeof next === "object" && next !== null && !Array.isArray(next)
      ? { ...this.#value, ...next } as T
      : next as T;
    this.#value = value;
    for (const subscriber of [...this.#subscribers]) subscriber();
  }

  /** Be told of changes; returns the function that stops it. */
  subscribe(subscriber: () => void): () => void {
    this.#subscribers.add(subscriber);
    return () => this.#subscribers.delete(subscriber);
  }
}

/** The store's value, re-rendering the component when it changes. */
export function useStore<T>(store: Store<T>): T {
  const value = store.value;
  const [, setTick] = useState(0);
  useEffect(() => {
    const stop = store.subscribe(() => setTick((n) => n + 1));
    // Effects run after the render: a change in between (a response that
    // came back meanwhile) would otherwise never be shown.
    if (store.value !== value) setTick((n) => n + 1);
    return stop;
  }, [store]);
  return value;
}
