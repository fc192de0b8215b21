// Small, failure-tolerant wrappers around Web Storage. Private browsing modes
// and full quotas make storage throw; the page keeps working in memory then.

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
