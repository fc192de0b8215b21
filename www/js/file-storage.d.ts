// TypeScript declarations of file-storage.js (Node only): a Web Storage lookalike
// kept in one JSON file, so a bot's unsent messages survive its restart.

import type { StorageLike } from './storage.js';

export class FileStorage implements StorageLike {
  /** `file`: the JSON file (created on first write; its folder too). */
  constructor(file: string);
  readonly file: string;
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}
