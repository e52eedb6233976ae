// `redq serve`'s HTTP endpoints against a real redis-server: every GET and
// POST, what each changes in Redis (read back with redis-cli), and what is
// refused: POSTs without the CSRF header, from another origin, with a
// wrong or missing token; GETs that would change state; a foreign Host.
import assert from 'node:assert/strict';
import http from 'node:http';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  check, summary, startRedis, stopRedis, rcli, llen, addDead, register,
  startServe, stopChild, stopAll, get, post, redq, waitFor,
} from './lib.mjs';

// A request with exactly these headers (fetch would not send Host).
function raw(base, method, pathname, headers = {}, body = null) {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method, path: pathname, headers,
                               timeout: 10000 }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { data += d; });
      res.on('end', () => {
        let json = null;
        try { json = JSON.parse(data); } catch (e) { /* not JSON */ }
        resolve({ status: res.statusCode, headers: res.headers, text: data, json });
      });
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    if (body !== null) req.write(body);
    req.end();
  });
}

const Q = 'jobs';
const ODD = 'a/b c%\u00e9'; // a queue name that needs percent-encoding
const enc = encodeURIComponent;
let r;
let s;

async function main() {
  r = startRedis();
  execFileSync(redq, ['push', '--url', r.url, '-q', Q, 'one', 'two', 'three', '<b>four</b>']);
  execFileSync(redq, ['push', '--url', r.url, '-q', ODD, 'x']);
  register(r, Q);
  register(r, ODD);
  addDead(r, Q, 'd1', 'boom', '<script>alert(1)</script>');
  addDead(r, Q, 'd2', 'bad%20input', Buffer.from([0xff, 0xfe, 0x00, 0x41]));
  addDead(r, Q, 'd3', 'boom', 'plain');
  s = await startServe(r);
  const B = s.base;

  await check('GET /api/queues: every registered queue with the depths Redis holds', async () => {
    const res = await get(B, '/api/queues');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^application\/json/);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    const q = res.json.queues.find((x) => x.name === Q);
    assert.ok(q, 'jobs listed');
    assert.equal(q.ready, llen(r, Q));
    assert.equal(q.dead, llen(r, `{${Q}}/dead`));
    assert.equal(q.paused, false);
    // The counters of messages moved, as Redis holds them (the page's rates).
    assert.equal(q.pushed, Number(rcli(r, 'HGET', `{${Q}}/meta`, 'pushed')));
    assert.equal(q.pushed, 4);
    for (const k of ['taken', 'acked', 'retried', 'dead_lettered']) assert.equal(q[k], 0, k);
    assert.ok(res.json.queues.find((x) => x.name === ODD), 'the odd name listed');
    assert.equal(res.json.redis, r.url);
  });

  await check('GET /api/queues/{name}: percent-encoded names, one queue', async () => {
    const res = await get(B, '/api/queues/' + enc(ODD));
    assert.equal(res.status, 200);
    assert.equal(res.json.queue.name, ODD);
    assert.equal(res.json.queue.ready, 1);
    const j = await get(B, '/api/queues/' + Q);
    assert.equal(j.json.queue.ready, 4);
  });

  await check('GET peek: the next messages, nothing taken', async () => {
    const before = llen(r, Q);
    const res = await get(B, `/api/queues/${Q}/peek?count=2`);
    assert.equal(res.status, 200);
    assert.deepEqual(res.json.messages.map((m) => m.body), ['one', 'two']);
    assert.equal(llen(r, Q), before);
  });

  await check('GET dead: bodies as escaped JSON strings, base64 when not UTF-8, paging', async () => {
    const res = await get(B, `/api/queues/${Q}/dead?offset=0&count=10`);
    assert.equal(res.status, 200);
    const [d3, d2, d1] = res.json.messages;
    assert.equal(d1.id, 'd1');
    assert.equal(d1.body, '<script>alert(1)</script>');
    assert.equal(d1.reason, 'boom');
    assert.equal(d1.attempts, 3);
    assert.ok(!res.text.includes('<script>'), 'no raw < in the JSON text');
    assert.equal(d2.body, undefined);
    assert.equal(Buffer.from(d2.body_b64, 'base64').toString('hex'), 'fffe0041');
    assert.equal(d2.reason, 'bad input');
    assert.equal(d3.body, 'plain');
    const page = await get(B, `/api/queues/${Q}/dead?offset=1&count=1`);
    assert.deepEqual(page.json.messages.map((m) => m.id), ['d2']);
  });

  await check('GET cannot change state: 405 on every POST endpoint, Redis untouched', async () => {
    const dead = llen(r, `{${Q}}/dead`);
    for (const p of ['pause', 'resume', 'requeue', 'purge', 'recover', 'dead/d1/requeue', 'dead/d1/delete']) {
      const res = await get(B, `/api/queues/${Q}/${p}`);
      assert.equal(res.status, 405, p);
      assert.equal(res.headers.get('allow'), 'POST');
    }
    assert.equal(llen(r, `{${Q}}/dead`), dead);
    assert.notEqual(rcli(r, 'HGET', `{${Q}}/meta`, 'paused'), '1');
  });

  await check('POST refused: no CSRF header (415), cross-origin (403), foreign Host (403)', async () => {
    let res = await raw(B, 'POST', `/api/queues/${Q}/pause`, { 'Content-Type': 'text/plain' }, '{}');
    assert.equal(res.status, 415);
    res = await raw(B, 'POST', `/api/queues/${Q}/pause`,
                    { 'Content-Type': 'application/json', Origin: 'http://evil.example' }, '{}');
    assert.equal(res.status, 403);
    res = await raw(B, 'POST', `/api/queues/${Q}/pause`,
                    { 'Content-Type': 'application/json', Origin: 'null' }, '{}');
    assert.equal(res.status, 403);
    res = await raw(B, 'POST', `/api/queues/${Q}/pause`,
                    { 'X-Redq-Request': '1', 'Sec-Fetch-Site': 'cross-site' }, '');
    assert.equal(res.status, 403);
    const port = new URL(B).port;
    res = await raw(B, 'GET', '/api/queues', { Host: `evil.example:${port}` });
    assert.equal(res.status, 403);
    res = await raw(B, 'POST', `/api/queues/${Q}/pause`,
                    { Host: `evil.example:${port}`, Origin: `http://evil.example:${port}`,
                      'Content-Type': 'application/json' }, '{}');
    assert.equal(res.status, 403);
    assert.notEqual(rcli(r, 'HGET', `{${Q}}/meta`, 'paused'), '1');
    // The server's own origin, under each name of loopback, is fine.
    res = await raw(B, 'POST', `/api/queues/${Q}/recover`,
                    { Host: `localhost:${port}`, Origin: `http://localhost:${port}`, 'X-Redq-Request': '1' }, '');
    assert.equal(res.status, 200, res.text);
  });

  await check('POST pause / resume: the meta flag in Redis', async () => {
    let res = await post(B, `/api/queues/${Q}/pause`);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.ok, true);
    assert.equal(rcli(r, 'HGET', `{${Q}}/meta`, 'paused'), '1');
    assert.equal((await get(B, `/api/queues/${Q}`)).json.queue.paused, true);
    res = await post(B, `/api/queues/${Q}/resume`);
    assert.equal(res.status, 200);
    assert.notEqual(rcli(r, 'HGET', `{${Q}}/meta`, 'paused'), '1');
  });

  await check('POST dead/{id}/requeue and /delete: one dead letter each; unknown id: n 0', async () => {
    const due = llen(r, `{${Q}}/due`);
    let res = await post(B, `/api/queues/${Q}/dead/d3/requeue`);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.n, 1);
    assert.equal(llen(r, `{${Q}}/dead`), 2);
    assert.equal(llen(r, `{${Q}}/due`), due + 1);
    res = await post(B, `/api/queues/${Q}/dead/d2/delete`);
    assert.equal(res.json.n, 1);
    assert.equal(llen(r, `{${Q}}/dead`), 1);
    assert.equal(llen(r, `{${Q}}/due`), due + 1);
    res = await post(B, `/api/queues/${Q}/dead/nope/delete`);
    assert.equal(res.status, 200);
    assert.equal(res.json.n, 0);
  });

  await check('POST requeue {"count": N} and all; purge', async () => {
    addDead(r, Q, 'd4', 'x', 'p4');
    addDead(r, Q, 'd5', 'x', 'p5');
    let res = await post(B, `/api/queues/${Q}/requeue`, { body: '{"count": 1}' });
    assert.equal(res.json.n, 1, res.text);
    assert.equal(llen(r, `{${Q}}/dead`), 2);
    res = await post(B, `/api/queues/${Q}/requeue`, { body: '' });
    assert.equal(res.json.n, 2, res.text);
    assert.equal(llen(r, `{${Q}}/dead`), 0);
    addDead(r, Q, 'd6', 'x', 'p6');
    res = await post(B, `/api/queues/${Q}/purge`);
    assert.equal(res.json.n, 1);
    assert.equal(llen(r, `{${Q}}/dead`), 0);
  });

  await check('errors: JSON with proper status codes', async () => {
    let res = await get(B, '/api/nothing');
    assert.equal(res.status, 404);
    assert.ok(res.json.error);
    res = await get(B, `/api/queues/${Q}/dead?count=x`);
    assert.equal(res.status, 400);
    res = await get(B, `/api/queues/${Q}/peek?count=100000`);
    assert.equal(res.status, 400);
    res = await post(B, `/api/queues/${Q}/requeue`, { body: '{"count": -1}' });
    assert.equal(res.status, 400);
    res = await post(B, `/api/queues/${Q}/requeue`, { body: 'not json' });
    assert.equal(res.status, 400);
    res = await post(B, `/api/queues/${Q}/requeue`, { body: 'x'.repeat(100000) });
    assert.equal(res.status, 413);
    res = await get(B, '/api/queues/a%00b');
    assert.equal(res.status, 400);
    res = await raw(B, 'DELETE', `/api/queues/${Q}`);
    assert.equal(res.status, 405);
    res = await post(B, '/');
    assert.equal(res.status, 405);
  });

  await check('GET /metrics: the Prometheus text format', async () => {
    const res = await get(B, '/metrics');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
    assert.match(res.text, new RegExp(`redq_queue_ready\\{queue="${Q}"\\} ${llen(r, Q)}`));
  });

  await check('GET /: the page and its files, with a CSP', async () => {
    const res = await get(B, '/');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/html/);
    assert.match(res.headers.get('content-security-policy'), /script-src 'self'/);
    assert.match(res.text, /<script src="\/app.js"/);
    assert.equal((await get(B, '/app.js')).status, 200);
    assert.equal((await get(B, '/style.css')).status, 200);
    assert.equal((await get(B, '/nope')).status, 404);
  });
  await stopChild(s);

  await check('--token: /api and /metrics need it, constant answer for a wrong one; the page does not', async () => {
    const t = await startServe(r, [], { REDQ_SERVE_TOKEN: 's3cret-token' });
    try {
      assert.equal((await get(t.base, '/api/queues')).status, 401);
      assert.equal((await get(t.base, '/metrics')).status, 401);
      assert.equal((await get(t.base, '/api/queues', { headers: { Authorization: 'Bearer wrong' } })).status, 401);
      assert.equal((await get(t.base, '/api/queues', { headers: { Authorization: 'Bearer s3cret-token-' } })).status, 401);
      assert.equal((await get(t.base, '/api/queues', { headers: { Authorization: 'Bearer s3cret-token' } })).status, 200);
      let res = await post(t.base, `/api/queues/${Q}/pause`);
      assert.equal(res.status, 401);
      res = await post(t.base, `/api/queues/${Q}/pause`, {
        headers: { 'Content-Type': 'application/json', Authorization: 'Bearer s3cret-tokeN' } });
      assert.equal(res.status, 401);
      assert.notEqual(rcli(r, 'HGET', `{${Q}}/meta`, 'paused'), '1');
      res = await post(t.base, `/api/queues/${Q}/pause`, {
        headers: { 'Content-Type': 'application/json', Authorization: 'Bearer s3cret-token' } });
      assert.equal(res.status, 200);
      assert.equal(rcli(r, 'HGET', `{${Q}}/meta`, 'paused'), '1');
      await post(t.base, `/api/queues/${Q}/resume`, {
        headers: { 'Content-Type': 'application/json', Authorization: 'Bearer s3cret-token' } });
      assert.equal((await get(t.base, '/')).status, 200);
    } finally {
      await stopChild(t);
    }
  });

  await check('a non-loopback --listen without a token is refused, saying why', async () => {
    const p = spawnSync(redq, ['serve', '--url', r.url, '--listen', '0.0.0.0:0'], { encoding: 'utf8', timeout: 10000 });
    assert.equal(p.status, 2);
    assert.match(p.stderr, /not a loopback address.*--token/s);
  });

  await check('the Redis password appears nowhere (page, API, metrics, errors)', async () => {
    const pw = 'hunter2-Very-Secret';
    rcli(r, 'CONFIG', 'SET', 'requirepass', pw);
    r.password = pw;
    const ok = await startServe(r);
    const bad = await startServe({ ...r, password: pw + 'x' });
    try {
      const seen = [];
      for (const p of ['/', '/app.js', '/api/queues', `/api/queues/${Q}`, `/api/queues/${Q}/dead`, '/metrics']) {
        const res = await get(ok.base, p);
        assert.equal(res.status, 200, p + ': ' + res.text);
        seen.push(res.text);
      }
      const res = await waitFor('an error from the server with a wrong password', async () => {
        const x = await get(bad.base, '/api/queues');
        return x.status >= 500 ? x : null;
      });
      seen.push(res.text, ok.err, bad.err);
      for (const t of seen) assert.ok(!t.includes(pw), 'password leaked: ' + t.slice(0, 200));
    } finally {
      await stopChild(ok);
      await stopChild(bad);
      rcli(r, 'CONFIG', 'SET', 'requirepass', '');
      delete r.password;
    }
  });
}

let rc = 1;
try {
  await main();
  rc = summary('http.test.mjs');
} catch (e) {
  console.log('FAIL setup: ' + (e.stack || e));
} finally {
  await stopAll();
  stopRedis(r);
}
process.exit(rc);
