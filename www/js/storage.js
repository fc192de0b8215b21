// Small, failure-tolerant wrappers around a Web Storage-like store
// (getItem/setItem/removeItem: localStorage, sessionStorage, MemoryStorage
// below, or FileStorage from file-storage.js in Node). Private browsing modes
// and full quotas make storage throw; callers keep working in memory then.
//
// Must never: touch the DOM or a particular global store (callers pass one in).

export function loadJson(store, key, fallback) {
  try {
    const raw = store.getItem(key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}

export function saveJson(store, key, value) {
  try {
    store.setItem(key, JSON.stringify(value));
  } catch {
    // Storage unavailable: memory is the only copy until the page closes.
  }
}

export function loadString(store, key) {
  try {
    return store.getItem(key) ?? '';
  } catch {
    return '';
  }
}

export function saveString(store, key, value) {
  try {
    if (value === '') store.removeItem(key);
    else store.setItem(key, value);
  } catch {
    // As above.
  }
}

/** True when `store` has the three Web Storage methods the library uses. */
export function isStorage(store) {
  return store !== null && typeof store === 'object'
    && ['getItem', 'setItem', 'removeItem'].every((method) => typeof store[method] === 'function');
}

/** A Web Storage lookalike that lives as long as the object: the default store. */
export class MemoryStorage {
  constructor() {
    this.items = new Map();
  }

  getItem(key) {
    return this.items.has(String(key)) ? this.items.get(String(key)) : null;
  }

  setItem(key, value) {
    this.items.set(String(key), String(value));
  }

  removeItem(key) {
    this.items.delete(String(key));
  }
}
