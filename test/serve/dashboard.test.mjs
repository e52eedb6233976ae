// The dashboard in a real browser: Debian's chromium, headless, driven by
// puppeteer-core. The page must show the depths Redis holds, requeue dead
// letters (one, then all: Redis checked after), pause a running consumer
// (its output stops growing) and resume it, and render hostile dead
// letters as text (no element made from them, no dialog). Every request
// the page makes must go to the server itself. Leaves a screenshot in
// docs/dashboard.png (REDQ_SCREENSHOT=path to put it elsewhere, "" none).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import {
  check, summary, startRedis, stopRedis, rcli, llen, addDead, startServe,
  startChild, stopAll, waitFor, redq, root,
} from './lib.mjs';

const CHROMIUM = process.env.REDQ_CHROMIUM || '/usr/bin/chromium';
const SHOT = process.env.REDQ_SCREENSHOT ?? path.join(root, 'docs', 'dashboard.png');
const Q = 'emails';
const HOSTILE = '<img src=x onerror=alert(1)>';
const HOSTILE2 = '<script>alert(2)</script>';
let r;
let browser;

const push = (q, ...msgs) => execFileSync(redq, ['push', '--url', r.url, '-q', q, ...msgs]);
const cell = (page, q, field) => page.$eval(
  `#queues tr[data-queue="${q}"] [data-field="${field}"]`, (e) => e.textContent).catch(() => null);

async function confirm(page) {
  await page.waitForSelector('#confirm[open]', { timeout: 5000 });
  await page.click('#confirmok');
  await page.waitForSelector('#confirm:not([open])', { timeout: 5000 });
}

async function main() {
  r = startRedis();
  // A few queues, as an operator would see them.
  push(Q, ...Array.from({ length: 12 }, (_, i) => `{"to":"user${i}@example.com","template":"welcome"}`));
  push('thumbnails', 'img-1', 'img-2', 'img-3');
  push('webhooks', 'w1');
  // No register(): redq push records the queues in the registry itself.
  addDead(r, Q, 'm-1001', 'SMTP%20550%20mailbox%20unavailable', '{"to":"gone@example.com","template":"welcome"}');
  addDead(r, Q, 'm-1002', 'handler%20threw', HOSTILE);
  addDead(r, Q, 'm-1003', 'handler%20threw', HOSTILE2);
  addDead(r, 'thumbnails', 't-9', 'decode%20error', Buffer.from([0x89, 0x50, 0x4e, 0x47, 0xff]));
  const s = await startServe(r, ['--interval', '500']);

  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...(process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : []),
           '--disable-dev-shm-usage', '--no-first-run'],
    timeout: 30000,
  });
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 1000 });
  const dialogs = [];
  const foreign = [];
  const errors = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  page.on('request', (q) => { if (!q.url().startsWith(s.base + '/')) foreign.push(q.url()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(s.base + '/#q=' + Q, { waitUntil: 'load', timeout: 15000 });

  await check('the page shows the depths Redis holds', async () => {
    await waitFor('the emails row', async () => (await cell(page, Q, 'ready')) === String(llen(r, Q)), 10000);
    assert.equal(await cell(page, Q, 'dead'), String(llen(r, `{${Q}}/dead`)));
    assert.equal(await cell(page, 'thumbnails', 'ready'), '3');
    assert.equal(await cell(page, Q, 'state'), 'running');
    // It follows changes in Redis.
    push(Q, 'later-1', 'later-2');
    await waitFor('the new depth', async () => (await cell(page, Q, 'ready')) === String(llen(r, Q)), 10000);
  });

  await check('in/s and out/s come from the counters of messages moved', async () => {
    // webhooks: 1 message so far, no consumer. 40 more in: in/s > 0 and
    // out/s 0.0 (a depth-only estimate could not tell them apart); then a
    // consumer takes all 41: out/s > 0.
    const num = async (f) => parseFloat(await cell(page, 'webhooks', f));
    await waitFor('two samples of webhooks', async () => (await cell(page, 'webhooks', 'in_rate')) === '0.0', 10000);
    push('webhooks', ...Array.from({ length: 40 }, (_, i) => `hook-${i}`));
    await waitFor('in/s above 0', async () => (await num('in_rate')) > 0, 10000);
    assert.equal(await cell(page, 'webhooks', 'out_rate'), '0.0');
    execFileSync(redq, ['pop', '--url', r.url, '-n', '41', 'webhooks']);
    await waitFor('out/s above 0', async () => (await num('out_rate')) > 0, 10000);
    assert.equal(llen(r, 'webhooks'), 0);
  });

  await check('hostile dead letters are text: no element from them, no dialog', async () => {
    await page.waitForSelector('#dead tbody tr', { timeout: 10000 });
    const bodies = await page.$$eval('#dead tbody td.body', (tds) => tds.map((t) => t.textContent));
    assert.ok(bodies.includes(HOSTILE), 'shown as text: ' + JSON.stringify(bodies));
    assert.ok(bodies.includes(HOSTILE2));
    assert.equal(await page.$$eval('#dead img, #dead script, main img', (x) => x.length), 0);
    assert.equal(await page.evaluate(() => document.querySelectorAll('script').length), 1);
    assert.deepEqual(dialogs, []);
  });

  // A chart with some history for the screenshot: the depth moves a bit.
  for (let i = 0; i < 4; i++) {
    push(Q, ...Array.from({ length: 5 + i * 3 }, (_, k) => `burst-${i}-${k}`));
    const want = String(llen(r, Q));
    await waitFor('the page to catch up', async () => (await cell(page, Q, 'ready')) === want, 10000);
    await new Promise((res) => setTimeout(res, 600)); // one more sample for the chart
  }
  await check('the chart legend shows the selected queue\'s rates', async () => {
    const legend = () => page.$eval('#legend [data-series=pushed]', (e) => e.textContent).catch(() => '');
    const v = await legend();
    assert.match(v, /^in\/s \(produced\): \d+\.\d$/);
    assert.ok(parseFloat(v.split(': ')[1]) > 0, 'in/s after the bursts: ' + v);
  });
  if (SHOT) {
    await page.screenshot({ path: SHOT, fullPage: true });
  }

  await check('requeue one dead letter, then all: Redis holds them in due', async () => {
    const due = llen(r, `{${Q}}/due`);
    const [btn] = await page.$$('xpath/.//tr[td[text()="m-1001"]]//button[@data-act="requeue-one"]');
    assert.ok(btn, 'a Requeue button on m-1001');
    await btn.click();
    await confirm(page);
    await waitFor('m-1001 to leave the dead list', () => llen(r, `{${Q}}/dead`) === 2, 10000);
    assert.equal(llen(r, `{${Q}}/due`), due + 1);
    assert.ok(!rcli(r, 'LRANGE', `{${Q}}/dead`, '0', '-1').includes('m-1001'));
    await page.click('[data-act=requeue]');
    await confirm(page);
    await waitFor('the dead list to be empty', () => llen(r, `{${Q}}/dead`) === 0, 10000);
    assert.equal(llen(r, `{${Q}}/due`), due + 3);
    await waitFor('the page to show 0 dead', async () => (await cell(page, Q, 'dead')) === '0', 10000);
  });

  await check('pause stops a running consumer; resume starts it again', async () => {
    const total = llen(r, Q) + llen(r, `{${Q}}/due`);
    const pop = startChild(redq, ['pop', '--reliable', '-q', '--url', r.url, Q]);
    const lines = () => (pop.out.match(/\n/g) || []).length;
    await waitFor(`the consumer to take all ${total}`, () => lines() >= total, 20000);
    await page.click('[data-act=pause]');
    await confirm(page);
    await waitFor('the pause flag in Redis', () => rcli(r, 'HGET', `{${Q}}/meta`, 'paused') === '1', 10000);
    await waitFor('the page to say paused', async () => (await cell(page, Q, 'state')) === 'paused', 10000);
    // Consumers stop within about promote_interval_ms (200 ms by default);
    // give them well over that, then push and watch nothing being taken.
    await new Promise((res) => setTimeout(res, 1500));
    const seen = lines();
    push(Q, 'p1', 'p2', 'p3', 'p4', 'p5');
    await new Promise((res) => setTimeout(res, 2000));
    assert.equal(lines(), seen, 'the consumer took messages from a paused queue');
    assert.equal(llen(r, Q), 5);
    await waitFor('the page to show 5 ready', async () => (await cell(page, Q, 'ready')) === '5', 10000);
    await page.click('[data-act=resume]');
    await confirm(page);
    await waitFor('the consumer to take the 5', () => lines() === seen + 5, 15000);
    assert.equal(llen(r, Q), 0);
    assert.match(pop.out, /p1\np2\np3\np4\np5\n$/);
    await waitFor('the page to say running', async () => (await cell(page, Q, 'state')) === 'running', 10000);
  });

  await check('the page made no request outside the server and threw no error', async () => {
    assert.deepEqual(foreign, []);
    assert.deepEqual(errors, []);
    assert.deepEqual(dialogs, []);
  });
}

let rc = 1;
try {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no ${CHROMIUM} (tools/bootstrap installs chromium)`);
  await main();
  rc = summary('dashboard.test.mjs');
} catch (e) {
  console.log('FAIL setup: ' + (e.stack || e));
} finally {
  if (browser) await browser.close().catch(() => {});
  await stopAll();
  stopRedis(r);
}
process.exit(rc);
