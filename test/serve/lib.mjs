// Shared by the tests of `redq serve` (test/serve/run.sh): a throwaway
// redis-server (tools/redis-local), `redq serve` and other children started
// and stopped by pid, redis-cli for what Redis holds, bounded waits.
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const build = path.resolve(root, process.env.REDQ_BUILD_DIR || 'build');
export const redq = path.join(build, 'tools', 'redq');

let failures = 0;
let passes = 0;
const children = new Set();

// Run one named check; a failure is reported and counted, the rest go on.
export async function check(name, fn) {
  try {
    await fn();
    passes++;
    console.log('ok   ' + name);
  } catch (e) {
    failures++;
    console.log('FAIL ' + name + ': ' + (e && e.stack ? e.stack : e));
  }
}

export function summary(file) {
  console.log(`${file}: ${passes} passed, ${failures} failed`);
  return failures === 0 ? 0 : 1;
}

// Poll fn() until it returns a truthy value; throw after ms.
export async function waitFor(what, fn, ms = 10000, every = 50) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, every));
  }
}

export function startRedis() {
  const out = execFileSync(path.join(root, 'tools', 'redis-local'), ['start'], { encoding: 'utf8' });
  const url = /REDQ_URL=(\S+)/.exec(out)[1];
  const dir = /REDQ_REDIS_DIR=(\S+)/.exec(out)[1];
  return { url, dir, port: Number(/:(\d+)$/.exec(url)[1]) };
}

export function stopRedis(r) {
  if (r) execFileSync(path.join(root, 'tools', 'redis-local'), ['stop', r.dir], { stdio: 'inherit' });
}

// One redis-cli command against the throwaway server; its reply as text.
export function rcli(r, ...args) {
  const a = ['-h', '127.0.0.1', '-p', String(r.port)];
  if (r.password) a.push('--no-auth-warning', '-a', r.password);
  return execFileSync('redis-cli', [...a, ...args], { encoding: 'utf8' }).trim();
}

export const llen = (r, key) => Number(rcli(r, 'LLEN', key));

// A redq frame (docs/DESIGN.md, "Frames") for a dead letter.
export function deadFrame(queue, id, reason, payload) {
  const now = Date.now();
  const head = `RQ1 id=${id} a=3 ts=${now - 60000} dr=${reason} dts=${now} q=${queue}\n`;
  return Buffer.concat([Buffer.from(head), Buffer.isBuffer(payload) ? payload : Buffer.from(payload)]);
}

// Put a dead letter into Q's dead list (the newest at the head), and the
// queue into the registry as its producers would.
export function addDead(r, queue, id, reason, payload) {
  // -x: the value from stdin, byte for byte (argv cannot hold a NUL).
  const a = ['-h', '127.0.0.1', '-p', String(r.port)];
  if (r.password) a.push('--no-auth-warning', '-a', r.password);
  execFileSync('redis-cli', [...a, '-x', 'LPUSH', `{${queue}}/dead`],
               { input: deadFrame(queue, id, reason, payload) });
}

export function register(r, queue) {
  rcli(r, 'ZADD', 'redq:queues', String(Date.now()), queue);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// Spawn a child we stop ourselves (by pid) at the end.
export function startChild(cmd, args, opts = {}) {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  p.out = '';
  p.err = '';
  p.stdout.on('data', (d) => { p.out += d; });
  p.stderr.on('data', (d) => { p.err += d; });
  p.exited = new Promise((resolve) => p.on('exit', (code, sig) => resolve({ code, sig })));
  children.add(p);
  return p;
}

export async function stopChild(p, ms = 10000) {
  if (!p || p.exitCode !== null || p.signalCode !== null) return p && p.exited;
  process.kill(p.pid, 'SIGTERM');
  const t = setTimeout(() => { try { process.kill(p.pid, 'SIGKILL'); } catch (e) { /* gone */ } }, ms);
  const r = await p.exited;
  clearTimeout(t);
  children.delete(p);
  return r;
}

export async function stopAll() {
  for (const p of [...children]) await stopChild(p);
}

// `redq serve` on a free loopback port; resolves with the child and its
// base URL once it says where it listens.
export async function startServe(r, extra = [], env = {}) {
  const url = r.password ? r.url.replace('redis://', `redis://:${r.password}@`) : r.url;
  const p = startChild(redq, ['serve', '--url', url, '--listen', '127.0.0.1:0', ...extra],
                       { env: { ...process.env, ...env } });
  const m = await waitFor('redq serve to listen', () => /listening on (http:\/\/[^/ ]+)\//.exec(p.err)
                          || (p.exitCode !== null && Promise.reject(new Error('exited: ' + p.err))), 10000);
  p.base = m[1];
  return p;
}

// fetch with a deadline.
export async function get(base, pathname, opts = {}) {
  const res = await fetch(base + pathname, { ...opts, signal: AbortSignal.timeout(10000) });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
  return { status: res.status, headers: res.headers, text, json };
}

export const post = (base, pathname, opts = {}) =>
  get(base, pathname, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}', ...opts });
