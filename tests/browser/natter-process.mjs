// The natter binary as a child process (on free ports, restartable on the
// same ports and data dir), teardown, and a TCP proxy that can play dead.
// Shared by the browser tests and the client-library tests (tests/client/),
// so it must never import playwright or anything outside Node itself.
// Processes are only ever stopped by their own PID.

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const NATTER_BIN = path.resolve(REPO_ROOT, process.env.NATTER_BIN ?? 'target/release/natter');
const START_TIMEOUT_MS = 15000;

/** Collects teardown steps and runs them newest first, never throwing. */
export class Cleanup {
  constructor() {
    this.steps = [];
  }

  add(step) {
    this.steps.push(step);
  }

  async run() {
    while (this.steps.length > 0) {
      const step = this.steps.pop();
      try {
        await step();
      } catch (error) {
        console.error('cleanup step failed:', error);
      }
    }
  }
}

/** A TCP port that was free a moment ago (bind port 0, read it, close). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export async function tempDir(cleanup, prefix = 'natter-browser-') {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Starts natter and resolves once it prints `natter listening`. Options are
 * kept on the returned handle so `restart()` reuses the same ports and data.
 */
export async function startServer(cleanup, options = {}) {
  const opts = {
    httpPort: options.httpPort ?? (await freePort()),
    wsPort: options.wsPort ?? (await freePort()),
    dataDir: options.dataDir ?? (await tempDir(cleanup, 'natter-data-')),
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? 1000,
    heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 3000,
    publicWsUrl: options.publicWsUrl,
    www: options.www ?? path.join(REPO_ROOT, 'www'),
    extraArgs: options.extraArgs ?? [],
  };
  const server = new NatterProcess(opts);
  cleanup.add(() => server.stop());
  await server.start();
  return server;
}

export class NatterProcess {
  constructor(opts) {
    this.opts = opts;
    this.child = null;
    this.output = [];
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.opts.httpPort}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.opts.wsPort}/ws`;
  }

  args() {
    const o = this.opts;
    const args = [
      'serve',
      '--bind', '127.0.0.1',
      '--http-port', String(o.httpPort),
      '--ws-port', String(o.wsPort),
      '--data-dir', o.dataDir,
      '--www', o.www,
      '--heartbeat-interval-ms', String(o.heartbeatIntervalMs),
      '--heartbeat-timeout-ms', String(o.heartbeatTimeoutMs),
    ];
    if (o.publicWsUrl) args.push('--public-ws-url', o.publicWsUrl);
    return args.concat(o.extraArgs);
  }

  start() {
    const child = spawn(NATTER_BIN, this.args(), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    this.exited = exited;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`natter did not print "natter listening" within ${START_TIMEOUT_MS} ms:\n${this.log()}`));
      }, START_TIMEOUT_MS);
      let buffered = '';
      child.stdout.on('data', (chunk) => {
        buffered += chunk;
        this.output.push(String(chunk));
        if (buffered.split('\n').some((line) => line.startsWith('natter listening'))) {
          clearTimeout(timer);
          resolve(this);
        }
      });
      child.stderr.on('data', (chunk) => this.output.push(String(chunk)));
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`natter exited early (code ${code}):\n${this.log()}`));
      });
    });
  }

  log() {
    return this.output.join('').slice(-4000);
  }

  /** Stops our own child by PID; SIGKILL simulates a crash. */
  async stop(signal = 'SIGTERM') {
    const child = this.child;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    process.kill(child.pid, signal);
    const killer = setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
    }, 5000);
    await this.exited;
    clearTimeout(killer);
  }

  async kill() {
    await this.stop('SIGKILL');
  }

  async restart() {
    await this.stop();
    this.output = [];
    await this.start();
  }
}

/**
 * A TCP proxy between the page and the server. `freeze()` stops forwarding
 * without closing anything (bytes are held, as on a dead network link);
 * `freeze('down')` holds only server-to-client bytes, so the server still
 * hears the page but the page hears nothing. `thaw()` forwards again, held
 * bytes first.
 */
export async function startProxy(cleanup, targetPort) {
  const sockets = new Set();
  const frozen = { up: false, down: false };
  const pipes = new Set();

  function pipe(from, to, direction) {
    const held = [];
    const entry = {
      flush() {
        while (held.length > 0 && !to.destroyed) to.write(held.shift());
      },
    };
    from.on('data', (chunk) => {
      if (frozen[direction]) held.push(chunk);
      else to.write(chunk);
    });
    from.on('end', () => to.end());
    from.on('error', () => to.destroy());
    from.on('close', () => {
      to.destroy();
      pipes.delete(entry);
    });
    pipes.add(entry);
  }

  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    }
    pipe(client, upstream, 'up');
    pipe(upstream, client, 'down');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxy = {
    port: server.address().port,
    freeze(direction = 'both') {
      frozen.up = direction !== 'down';
      frozen.down = true;
    },
    /** Cuts every open connection; with `refuse`, new ones are cut at once too until `accept()`. */
    drop({ refuse = false } = {}) {
      refusing = refuse;
      for (const socket of sockets) socket.destroy();
    },
    accept() {
      refusing = false;
    },
    thaw() {
      frozen.up = false;
      frozen.down = false;
      for (const entry of [...pipes]) entry.flush();
    },
    close() {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  cleanup.add(() => proxy.close());
  return proxy;
}
