/**
 * A tiny event emitter whose listeners cannot break the emitter: a listener that throws is reported
 * through `onError` and the remaining listeners still run.
 * @module tidings-client/emitter
 */

export class Emitter {
  /** @type {Map<string, Set<Function>>} */
  #listeners = new Map();
  /** @type {(error: unknown, name: string) => void} */
  #onError;

  /** @param {(error: unknown, name: string) => void} onError - Called when a listener throws. */
  constructor(onError) {
    this.#onError = onError;
  }

  /**
   * Add a listener; returns a function that removes it.
   * @param {string} name
   * @param {Function} listener
   * @returns {() => void}
   */
  on(name, listener) {
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    let set = this.#listeners.get(name);
    if (!set) this.#listeners.set(name, (set = new Set()));
    // Wrap so that the same function added twice is two listeners, each removed by its own off().
    const entry = (payload) => listener(payload);
    set.add(entry);
    return () => {
      set.delete(entry);
      if (set.size === 0 && this.#listeners.get(name) === set) this.#listeners.delete(name);
    };
  }

  /** @param {string} name */
  has(name) {
    return (this.#listeners.get(name)?.size ?? 0) > 0;
  }

  /**
   * Call every listener of `name` with `payload` (a snapshot: listeners added meanwhile wait for the next emit).
   * @param {string} name
   * @param {unknown} payload
   */
  emit(name, payload) {
    const set = this.#listeners.get(name);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(payload);
      } catch (error) {
        this.#onError(error, name);
      }
    }
  }
}
