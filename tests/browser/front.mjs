// The TLS front of the browser tests: a CA made for the run and a certificate it
// signs, a Chromium that trusts that CA alone (an NSS database in its own HOME; no
// --ignore-certificate-errors), and the shipped nginx site (deploy/nginx-natter.conf,
// run on loopback by scripts/nginx-for-tests.sh) in front of one natter or two.

import { execFileSync, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { REPO_ROOT, freePort } from './helpers.mjs';

/** A CA and a server certificate for 127.0.0.1/localhost it signs (openssl CLI). */
export async function makeCerts(dir) {
  const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=natter browser test CA');
  run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
  await writeFile(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-days', '1', '-extfile', 'san.ext', '-out', 'leaf.pem');
  const chain = execFileSync('cat', ['leaf.pem', 'ca.pem'], { cwd: dir });
  await writeFile(path.join(dir, 'server.pem'), chain);
  return { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server.key') };
}

/** Chromium with a HOME whose NSS database trusts `caFile` (and nothing else is added). */
export async function launchTrusting(cleanup, caFile, dir) {
  const home = path.join(dir, 'home');
  const nss = path.join(home, '.pki', 'nssdb');
  await mkdir(nss, { recursive: true });
  execFileSync('certutil', ['-N', '-d', `sql:${nss}`, '--empty-password']);
  execFileSync('certutil', ['-A', '-d', `sql:${nss}`, '-n', 'natter-test-ca', '-t', 'C,,', '-i', caFile]);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium',
    env: { ...process.env, HOME: home },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  cleanup.add(() => browser.close());
  return browser;
}

export function waitForPort(port, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => { socket.destroy(); resolve(); });
      socket.once('error', () => {
        socket.destroy();
        if (Date.now() > deadline) reject(new Error(`nothing listens on ${port}`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

/** The shipped nginx site in front of `natter` (and `second`, a second upstream
 * server in each upstream block), stopped by its PID at cleanup. */
export async function startNginx(cleanup, dir, natter, certs, port, second) {
  const plain = await freePort();
  const backends = [natter, second].filter(Boolean).flatMap((n) => [String(n.opts.httpPort), String(n.opts.wsPort)]);
  const child = spawn(path.join(REPO_ROOT, 'scripts', 'nginx-for-tests.sh'), [
    path.join(dir, 'nginx'), String(port), backends[0], backends[1],
    certs.cert, certs.key, String(plain), ...backends.slice(2),
  ], { stdio: ['ignore', 'inherit', 'inherit'] });
  cleanup.add(() => { if (child.exitCode === null) process.kill(child.pid, 'SIGTERM'); });
  await waitForPort(port);
  return port;
}
