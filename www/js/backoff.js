// Exponential backoff with full jitter: the delay before retry n is a uniform
// random value in [0, min(cap, base * 2^n)]. Pure, so it can be unit-tested.

export class Backoff {
  constructor({ baseMs = 500, capMs = 30000, random = Math.random } = {}) {
    this.baseMs = baseMs;
    this.capMs = capMs;
    this.random = random;
    this.attempt = 0;
  }

  /** The delay before the next retry; each call widens the window. */
  next() {
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** this.attempt);
    this.attempt += 1;
    return Math.round(this.random() * ceiling);
  }

  reset() {
    this.attempt = 0;
  }
}
