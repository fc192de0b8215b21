// Node only: a Web Storage lookalike kept in one JSON file, so a bot's unsent
// messages survive the bot's own restart. Every change rewrites the file
// through a temporary file and a rename, so a crash leaves the old or the new
// content, never half of one.
//
// Owns: that one file. Must never: be imported by a browser page (it uses
// node:fs), or share its file with a second live client (last writer wins).

import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export class FileStorage {
  constructor(file) {
    if (typeof file !== 'string' || file === '') throw new TypeError('FileStorage: file must be a non-empty path string');
    this.file = path.resolve(file);
    this.items = {};
    let raw = null;
    try {
      raw = readFileSync(this.file, 'utf8');
    } catch (error) {
      if (error.code !== 'ENOENT') throw new Error(`FileStorage: cannot read ${this.file}: ${error.message}`);
    }
    if (raw !== null) {
      let parsed;
      try {
        parsed = JSON.parse(raw);
      } catch (error) {
        throw new Error(`FileStorage: ${this.file} is not JSON (${error.message}); move it away to start afresh`);
      }
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
        throw new Error(`FileStorage: ${this.file} must hold a JSON object of strings`);
      }
      this.items = parsed;
    }
  }

  getItem(key) {
    const value = this.items[String(key)];
    return typeof value === 'string' ? value : null;
  }

  setItem(key, value) {
    this.items[String(key)] = String(value);
    this.write();
  }

  removeItem(key) {
    delete this.items[String(key)];
    this.write();
  }

  write() {
    mkdirSync(path.dirname(this.file), { recursive: true });
    const temp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(temp, JSON.stringify(this.items));
    renameSync(temp, this.file);
  }
}
