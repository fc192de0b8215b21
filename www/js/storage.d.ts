// TypeScript declarations of storage.js: the Web Storage shape the client keeps
// unsent messages in, and the in-memory one it uses by default.

/** Anything with these three methods: localStorage, MemoryStorage, FileStorage. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** A Web Storage lookalike that lives as long as the object: the default store. */
export class MemoryStorage implements StorageLike {
  constructor();
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export function isStorage(store: unknown): store is StorageLike;
export function loadJson<T>(store: StorageLike, key: string, fallback: T): T;
export function saveJson(store: StorageLike, key: string, value: unknown): void;
export function loadString(store: StorageLike, key: string): string;
export function saveString(store: StorageLike, key: string, value: string): void;
