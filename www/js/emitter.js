// Typed events for the client library: `on`, `off`, `once`, `next` and `emit` over a
// fixed list of event names, so a typo in a name is an error rather than a
// listener that never fires.
//
// Owns: the listener lists. Must never: depend on the DOM or on Node (it runs
// in both), or let one listener's exception stop the others or the caller.

export class Emitter {
  /** @param {string[]} names every event name this emitter may carry */
  constructor(names) {
    this.names = new Set(names);
    this.listeners = new Map(names.map((name) => [name, new Set()]));
  }

  /** Calls `fn(detail)` on every `name` event; returns a function that removes it. */
  on(name, fn) {
    this.check(name);
    if (typeof fn !== 'function') throw new TypeError(`on('${name}', fn): fn must be a function, got ${typeof fn}`);
    this.listeners.get(name).add(fn);
    return () => this.off(name, fn);
  }

  off(name, fn) {
    this.check(name);
    this.listeners.get(name).delete(fn);
  }

  /** Calls `fn(detail)` on the next `name` event only. */
  once(name, fn) {
    this.check(name);
    if (typeof fn !== 'function') throw new TypeError(`once('${name}', fn): fn must be a function, got ${typeof fn}`);
    const wrapper = (detail) => {
      this.off(name, wrapper);
      fn(detail);
    };
    return this.on(name, wrapper);
  }

  /** A promise of the next `name` event whose detail passes `filter` (default: any). */
  next(name, filter = () => true) {
    this.check(name);
    if (typeof filter !== 'function') throw new TypeError(`next('${name}', filter): filter must be a function`);
    return new Promise((resolve) => {
      const wrapper = (detail) => {
        if (!filter(detail)) return;
        this.off(name, wrapper);
        resolve(detail);
      };
      this.on(name, wrapper);
    });
  }

  emit(name, detail) {
    this.check(name);
    for (const fn of [...this.listeners.get(name)]) {
      try {
        fn(detail);
      } catch (error) {
        // A broken listener must not leave the client half-way through a
        // frame; rethrown on its own so it still shows up (console, or
        // Node's uncaughtException).
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  check(name) {
    if (!this.names.has(name)) {
      throw new TypeError(`unknown event "${name}"; known events: ${[...this.names].join(', ')}`);
    }
  }
}
