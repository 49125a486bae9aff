// Shared by the browser tests (dashboard.test.mjs, auth.test.mjs, trading.test.mjs, chain.test.mjs): where the
// engine and Chromium are, Chromium's flags, a timestamped log, free ports,
// log tails, starting and stopping the engine, and a pass/fail step runner.

import { spawn } from 'node:child_process';
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

/**
 * Starts the engine on 127.0.0.1:`port` with `args` after the listen and log
 * flags, its output in OUT/engine-`name`.log, with no DhanHQ credentials from
 * the environment (`env` may give some), in `cwd`; waits until /health
 * answers 200 (any answer with `anyStatus`: an engine whose upstream is down
 * answers 503). Resolves with `{ child, logPath, exited, name }`; an engine
 * that does not come up is killed and the error carries its log's tail.
 */
export async function spawnEngine({ name, port, args = [], env: extra = {}, cwd, anyStatus = false }) {
  if (!fs.existsSync(BIN)) throw new Error(`no engine binary at ${BIN}: run cargo build --release`);
  const logPath = path.join(OUT, `engine-${name}.log`);
  const fd = fs.openSync(logPath, 'w');
  const env = { ...process.env };
  delete env.DHAN_CLIENT_ID;
  delete env.DHAN_ACCESS_TOKEN;
  delete env.DHAN_AUTH_TOKEN;
  Object.assign(env, extra);
  const all = ['--listen', `127.0.0.1:${port}`, '--log-level', 'info', ...args];
  const child = spawn(BIN, all, { stdio: ['ignore', fd, fd], env, cwd });
  fs.closeSync(fd);
  const e = { child, logPath, exited: null, name };
  child.on('exit', (code, signal) => {
    e.exited = { code, signal };
  });
  const until = Date.now() + 20_000;
  for (;;) {
    if (e.exited) throw new Error(`engine exited at start (${JSON.stringify(e.exited)}):\n${tail(logPath)}`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(1000) });
      if (r.status === 200 || anyStatus) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > until) {
      await stopEngine(e);
      throw new Error(`engine not healthy within 20 s:\n${tail(logPath)}`);
    }
    await sleep(100);
  }
  log(`engine ${name} up: ${path.relative(ROOT, BIN)} ${all.join(' ')} (pid ${child.pid}, log ${path.relative(ROOT, logPath)})`);
  return e;
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

/**
 * Runs a suite's `main` and ends the process: a watchdog
 * (BROWSER_TEST_TIMEOUT_MS, else `timeoutMs`) fails the run if it takes
 * longer; every engine `engines()` returns is killed on exit (then
 * `onExit` runs); an exception out of `main` is a failed "harness" result;
 * when anything failed, each engine's log tail is printed; then the lines
 * of `summary()` and `label: N passed, N failed, N skipped`. Exit code 0
 * only when nothing failed.
 */
export async function runSuite({ label, timeoutMs, results, count, engines, main, onExit = () => {}, summary = () => [] }) {
  const ms = Number(process.env.BROWSER_TEST_TIMEOUT_MS || timeoutMs);
  const live = () => engines().filter(Boolean);
  const kill = () => {
    for (const e of live()) if (!e.exited) e.child.kill('SIGKILL');
  };
  const watchdog = setTimeout(() => {
    log(`not ok - watchdog: the run took longer than ${ms / 1000} s`);
    kill();
    process.exit(1);
  }, ms);
  process.on('exit', () => {
    kill();
    onExit();
  });
  try {
    await main();
  } catch (e) {
    results.push({ name: 'harness', status: 'fail', why: e.message });
    log(`not ok - harness: ${e.stack || e.message}`);
  }
  clearTimeout(watchdog);
  const failed = count('fail');
  if (failed) {
    for (const e of live()) log(`engine ${e.name} log tail (${path.relative(ROOT, e.logPath)}):\n${tail(e.logPath)}`);
  }
  for (const line of summary()) console.log(line);
  console.log(`${label}: ${count('pass')} passed, ${failed} failed, ${count('skip')} skipped`);
  process.exit(failed ? 1 : 0);
}
