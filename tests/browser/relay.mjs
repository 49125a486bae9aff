// Shared by the browser tests (dashboard.test.mjs, auth.test.mjs, trading.test.mjs): where the
// engine and Chromium are, Chromium's flags, a timestamped log, free ports,
// log tails, stopping a child process, and a pass/fail step runner.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = process.env.DHAN_RELAY_BIN || path.join(ROOT, 'target/release/dhan-relay');
export const OUT = path.resolve(process.env.BROWSER_ARTIFACTS || path.join(ROOT, 'target/browser'));
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
];

const t0 = Date.now();
export const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s]`, ...a);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A loopback port nothing listens on right now. */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** The last lines of a log file. */
export function tail(file, lines = 20) {
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** SIGTERM, then SIGKILL after 5 s, for `{ child, exited }` records. */
export async function stopEngine(e) {
  if (!e || e.exited) return;
  e.child.kill('SIGTERM');
  const until = Date.now() + 5000;
  while (!e.exited && Date.now() < until) await sleep(50);
  if (!e.exited) {
    e.child.kill('SIGKILL');
    while (!e.exited) await sleep(20);
  }
}

export class Skip extends Error {}
export class CheckFailed extends Error {}

/** Throws a CheckFailed (reported without a stack) when `cond` is false. */
export function check(cond, message) {
  if (!cond) throw new CheckFailed(message);
}

/**
 * A step runner: `step(name, fn, { always })` prints `ok - name (secs): note`
 * or `not ok - name: why`; after a failure the rest are reported as not run,
 * except `always` ones. `results` holds every outcome.
 */
export function steps() {
  const results = [];
  let aborted = false;
  async function step(name, fn, { always = false } = {}) {
    if (aborted && !always) {
      results.push({ name, status: 'fail', why: 'not run: an earlier step failed' });
      log(`not ok - ${name}: not run (an earlier step failed)`);
      return;
    }
    const started = Date.now();
    try {
      const note = await fn();
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      results.push({ name, status: 'pass' });
      log(`ok - ${name} (${secs}s)${note ? `: ${note}` : ''}`);
    } catch (e) {
      if (e instanceof Skip) {
        results.push({ name, status: 'skip', why: e.message });
        log(`SKIP - ${name}: ${e.message}`);
        return;
      }
      results.push({ name, status: 'fail', why: e.message });
      log(`not ok - ${name}: ${e instanceof CheckFailed ? e.message : e.stack || e.message}`);
      aborted = true;
    }
  }
  const count = (s) => results.filter((r) => r.status === s).length;
  return { step, results, count };
}
