// /metrics checked by the real Prometheus tools: `promtool check metrics`
// on its text, then a throwaway `prometheus` (its own config and storage in
// a temp dir, 127.0.0.1 only, scraping every second) must answer a query
// for a queue's depth with what Redis holds, and follow a change.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  check, summary, startRedis, stopRedis, llen, register, addDead, startServe,
  startChild, stopChild, stopAll, get, waitFor, freePort, redq,
} from './lib.mjs';

const Q = 'orders';
let r;
let tmp;

async function query(base, expr) {
  const res = await get(base, '/api/v1/query?query=' + encodeURIComponent(expr));
  if (res.status !== 200 || res.json.status !== 'success') throw new Error(res.text);
  return res.json.data.result;
}

async function main() {
  r = startRedis();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'redq-prom-'));
  execFileSync(redq, ['push', '--url', r.url, '-q', Q, 'a', 'b', 'c', 'd', 'e', 'f', 'g']);
  register(r, Q);
  register(r, 'we"ird\\name\nx'); // label escaping, checked by promtool
  addDead(r, Q, 'x1', 'boom', 'dead body');
  const s = await startServe(r);

  await check('promtool check metrics accepts /metrics', async () => {
    const res = await get(s.base, '/metrics');
    assert.equal(res.status, 200);
    assert.match(res.text, /redq_queue_ready\{queue="orders"\} 7/);
    const p = spawnSync('promtool', ['check', 'metrics'], { input: res.text, encoding: 'utf8', timeout: 30000 });
    assert.equal(p.status, 0, 'promtool: ' + p.stdout + p.stderr);
  });

  await check('a throwaway prometheus scrapes redq serve; the query answers the depth Redis holds', async () => {
    const port = await freePort();
    const target = new URL(s.base).host;
    fs.writeFileSync(path.join(tmp, 'prometheus.yml'),
      'global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n' +
      'scrape_configs:\n  - job_name: redq\n    static_configs:\n' +
      `      - targets: ['${target}']\n`);
    const prom = startChild('prometheus', [
      '--config.file=' + path.join(tmp, 'prometheus.yml'),
      '--storage.tsdb.path=' + path.join(tmp, 'data'),
      '--web.listen-address=127.0.0.1:' + port,
      '--log.level=warn',
    ], { cwd: tmp });
    const base = 'http://127.0.0.1:' + port;
    try {
      await waitFor('prometheus to be ready', async () => (await get(base, '/-/ready')).status === 200, 30000, 200);
      const want = llen(r, Q);
      const v = await waitFor('redq_queue_ready{queue="orders"} in prometheus', async () => {
        const res = await query(base, `redq_queue_ready{queue="${Q}"}`);
        return res.length === 1 && res[0].value[1];
      }, 30000, 250);
      assert.equal(Number(v), want);
      const dead = await query(base, `redq_queue_dead{queue="${Q}"}`);
      assert.equal(Number(dead[0].value[1]), 1);
      // A change in Redis shows up at the next scrapes.
      execFileSync(redq, ['push', '--url', r.url, '-q', Q, 'h', 'i', 'j']);
      const want2 = llen(r, Q);
      assert.equal(want2, want + 3);
      await waitFor(`the depth ${want2} in prometheus`, async () => {
        const res = await query(base, `redq_queue_ready{queue="${Q}"}`);
        return res.length === 1 && Number(res[0].value[1]) === want2;
      }, 30000, 250);
      const up = await query(base, 'up{job="redq"}');
      assert.equal(up[0].value[1], '1');
    } catch (e) {
      throw new Error(e.message + '\nprometheus stderr:\n' + prom.err.slice(-2000));
    } finally {
      await stopChild(prom);
    }
  });
}

let rc = 1;
try {
  await main();
  rc = summary('prometheus.test.mjs');
} catch (e) {
  console.log('FAIL setup: ' + (e.stack || e));
} finally {
  await stopAll();
  stopRedis(r);
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
}
process.exit(rc);
