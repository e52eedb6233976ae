// redq serve's dashboard. Everything here is served by `redq serve` itself
// (no libraries, no network fetches elsewhere). Data from the API goes into
// the page only as text (textContent, setAttribute of a title), never as
// HTML: message bodies are whatever producers pushed.
'use strict';

const DEAD_PAGE = 20;
const HISTORY_MS = 5 * 60 * 1000; // the chart's window
const RATE_WINDOW_MS = 5000; // the table's rates: over about this long
// The chart's series: messages per second, from the queue's counters of
// messages moved (counted in Redis by every producer and consumer).
const SERIES = [
  { key: 'pushed', label: 'in/s (produced)', color: '#2f6fde' },
  { key: 'taken', label: 'out/s (taken)', color: '#23884a' },
  { key: 'acked', label: 'acked/s', color: '#b7791f' },
  { key: 'dead_lettered', label: 'dead-lettered/s', color: '#c73a3a' },
];

const state = {
  refreshMs: 2000,
  queues: [],
  selected: null,
  deadOffset: 0,
  history: new Map(), // queue -> [{t, pushed, taken, acked, dead_lettered}]
  token: sessionStorage.getItem('redq-token') || '',
  timer: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function setStatus(text, isError) {
  const s = $('status');
  s.textContent = text;
  s.classList.toggle('err', !!isError);
}

function headers(post) {
  const h = {};
  if (state.token) h.Authorization = 'Bearer ' + state.token;
  if (post) {
    h['Content-Type'] = 'application/json';
    h['X-Redq-Request'] = '1';
  }
  return h;
}

async function api(path, post, body) {
  const res = await fetch(path, {
    method: post ? 'POST' : 'GET',
    headers: headers(post),
    body: post ? JSON.stringify(body || {}) : undefined,
    cache: 'no-store',
    credentials: 'same-origin',
  });
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (res.status === 401) $('tokenbox').hidden = false;
  if (!res.ok) {
    const msg = data && data.error ? data.error : res.status + ' ' + res.statusText;
    throw new Error(msg);
  }
  return data;
}

const qpath = (name) => '/api/queues/' + encodeURIComponent(name);

function fmtAge(ms) {
  if (ms === null || ms === undefined || ms < 0) return '-';
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + ' s';
  if (s < 3600) return (s / 60).toFixed(1) + ' min';
  if (s < 86400) return (s / 3600).toFixed(1) + ' h';
  return (s / 86400).toFixed(1) + ' d';
}

function fmtTime(ms) {
  if (ms === null || ms === undefined || ms < 0) return '-';
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

// A message's body as text: UTF-8 bodies as they are, others as base64
// with a note; at most `max` characters shown.
function bodyText(m, max) {
  let t = m.body !== undefined ? m.body : '[binary, base64] ' + m.body_b64;
  if (t.length > max) t = t.slice(0, max) + '\u2026';
  if (m.truncated) t += ' [' + m.len + ' bytes]';
  return t;
}

// --- history and the chart ------------------------------------------------

function record(queues) {
  const now = Date.now();
  for (const q of queues) {
    let h = state.history.get(q.name);
    if (!h) { h = []; state.history.set(q.name, h); }
    const p = { t: now };
    for (const s of SERIES) p[s.key] = q[s.key] || 0;
    h.push(p);
    while (h.length && h[0].t < now - HISTORY_MS) h.shift();
  }
}

// Per second, how much counter `key` grew from sample a to sample b. A
// counter that went down was reset (the queue's keys deleted): it counts
// from 0 again.
function rateBetween(a, b, key) {
  const dt = (b.t - a.t) / 1000;
  if (dt <= 0) return null;
  const d = b[key] >= a[key] ? b[key] - a[key] : b[key];
  return d / dt;
}

// The rate of `key` over about the last RATE_WINDOW_MS, or null before
// the page has two samples of the queue.
function rate(name, key) {
  const h = state.history.get(name);
  if (!h || h.length < 2) return null;
  const b = h[h.length - 1];
  const a = h.find((p) => p.t >= b.t - RATE_WINDOW_MS - state.refreshMs / 2) || h[0];
  if (a === b) return rateBetween(h[h.length - 2], b, key);
  return rateBetween(a, b, key);
}

// The chart's points: at each sample, the rate over about the last
// CHART_SMOOTH_MS (at least the previous sample), so that bursts between
// refreshes do not draw as spikes to zero.
const CHART_SMOOTH_MS = 2000;
function ratePoints(h) {
  const out = [];
  let j = 0;
  for (let i = 1; i < h.length; i++) {
    while (j < i - 1 && h[j + 1].t <= h[i].t - CHART_SMOOTH_MS) j++;
    const p = { t: h[i].t };
    for (const s of SERIES) p[s.key] = rateBetween(h[j], h[i], s.key) || 0;
    out.push(p);
  }
  return out;
}

const fmtRate = (r) => (r === null ? '-' : r.toFixed(1));

function fmtSpan(ms) {
  return ms >= 120000 ? Math.round(ms / 60000) + ' min' : Math.round(ms / 1000) + ' s';
}

function drawChart() {
  const c = $('chart');
  const ratio = window.devicePixelRatio || 1;
  const w = c.clientWidth || 900, hgt = c.clientHeight || 180;
  if (c.width !== Math.round(w * ratio)) { c.width = Math.round(w * ratio); c.height = Math.round(hgt * ratio); }
  const g = c.getContext('2d');
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, hgt);
  const samples = state.history.get(state.selected) || [];
  const h = ratePoints(samples);
  // The window grows with the history the page has seen, from 1 to 5 min.
  const now = Date.now();
  const span = Math.min(HISTORY_MS, Math.max(60000, samples.length ? now - samples[0].t : 0));
  const t0 = now - span;
  const left = 48, right = 8, top = 8, bottom = 20;
  let max = 1;
  for (const p of h) for (const s of SERIES) max = Math.max(max, p[s.key]);
  // Round the scale up to 1, 2 or 5 times a power of ten.
  const mag = Math.pow(10, Math.floor(Math.log10(max)));
  max = [1, 2, 5, 10].map((k) => k * mag).find((v) => v >= max);
  const x = (t) => left + (t - t0) / span * (w - left - right);
  const y = (v) => hgt - bottom - v / max * (hgt - top - bottom);
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = '#6b7385';
  g.strokeStyle = '#e2e5ec';
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4, yy = Math.round(y(v)) + 0.5;
    g.beginPath(); g.moveTo(left, yy); g.lineTo(w - right, yy); g.stroke();
    g.fillText(String(Math.round(v * 100) / 100), 4, yy + 4);
  }
  for (let m = 0; m <= 4; m++) {
    const xx = x(now - m * span / 4);
    g.fillText(m === 0 ? 'now' : '-' + fmtSpan(m * span / 4), xx - 14, hgt - 5);
  }
  for (const s of SERIES) {
    g.strokeStyle = s.color;
    g.lineWidth = 2;
    g.beginPath();
    h.forEach((p, i) => {
      const xx = x(p.t), yy = y(p[s.key]);
      if (i === 0) g.moveTo(xx, yy); else g.lineTo(xx, yy);
    });
    g.stroke();
  }
  const legend = $('legend');
  legend.replaceChildren();
  for (const s of SERIES) {
    const span = el('span', s.label + ': ' + fmtRate(rate(state.selected, s.key)));
    span.dataset.series = s.key;
    span.style.setProperty('--c', s.color);
    legend.append(span);
  }
}

// --- rendering -------------------------------------------------------------

function renderQueues() {
  const tbody = $('queues').tBodies[0];
  tbody.replaceChildren();
  $('noqueues').hidden = state.queues.length > 0;
  for (const q of state.queues) {
    const tr = el('tr');
    tr.dataset.queue = q.name;
    if (q.name === state.selected) tr.className = 'sel';
    tr.append(el('td', q.name, 'qname'));
    for (const k of ['ready', 'due', 'processing', 'delayed', 'dead']) {
      const td = el('td', q[k], 'n');
      td.dataset.field = k;
      tr.append(td);
    }
    const cons = el('td', q.consumers + ' / ' + q.registered, 'n');
    cons.dataset.field = 'consumers';
    cons.title = 'live / registered';
    tr.append(cons);
    for (const [field, key] of [['in_rate', 'pushed'], ['out_rate', 'taken']]) {
      const td = el('td', fmtRate(rate(q.name, key)), 'n');
      td.dataset.field = field;
      tr.append(td);
    }
    tr.append(el('td', fmtAge(q.oldest_age_ms), 'n'));
    const fmt = el('td', q.format || 'plain');
    fmt.dataset.field = 'format';
    tr.append(fmt);
    const st = el('td');
    const b = el('span', q.paused ? 'paused' : 'running', 'badge' + (q.paused ? ' paused' : ''));
    b.dataset.field = 'state';
    st.append(b);
    tr.append(st);
    tr.addEventListener('click', () => select(q.name));
    tbody.append(tr);
  }
}

function renderDetail() {
  const q = state.queues.find((x) => x.name === state.selected);
  $('detail').hidden = !q;
  if (!q) return;
  $('dq').textContent = q.name;
  $('dstate').textContent = q.paused ? 'paused' : 'running';
  $('dstate').className = 'badge' + (q.paused ? ' paused' : '');
  $('consumers').textContent = q.consumers + ' live consumer connection' +
    (q.consumers === 1 ? '' : 's') + ' (heartbeat), ' + q.registered +
    ' registered; ' + q.processing + ' message' + (q.processing === 1 ? '' : 's') +
    ' being processed.' + (q.last_seen_ms > 0 ? ' Last used ' + fmtTime(q.last_seen_ms) + '.' : '');
  document.querySelector('[data-act=pause]').disabled = !!q.paused;
  document.querySelector('[data-act=resume]').disabled = !q.paused;
  document.querySelector('[data-act=requeue]').disabled = q.dead === 0;
  document.querySelector('[data-act=purge]').disabled = q.dead === 0;
  drawChart();
}

async function loadMessages() {
  const name = state.selected;
  if (!name) return;
  const [dead, peek, parts] = await Promise.all([
    api(qpath(name) + '/dead?offset=' + state.deadOffset + '&count=' + DEAD_PAGE),
    api(qpath(name) + '/peek?count=10'),
    api(qpath(name) + '/partitions'),
  ]);
  if (name !== state.selected) return;
  // A partitioned queue's numbers above are sums; one row per partition.
  $('partsbox').hidden = parts.partitions.length < 2;
  const ptb = $('parts').tBodies[0];
  ptb.replaceChildren();
  for (const p of parts.partitions) {
    const tr = el('tr');
    tr.append(el('td', p.index, 'n'), el('td', p.name, 'qname'), el('td', p.slot, 'n'),
              el('td', p.node || '-'), el('td', p.ready, 'n'), el('td', p.processing, 'n'),
              el('td', p.dead, 'n'), el('td', p.retired ? 'retired' : 'active'));
    ptb.append(tr);
  }
  const db = $('dead').tBodies[0];
  db.replaceChildren();
  for (const m of dead.messages) {
    const tr = el('tr');
    tr.append(el('td', m.index, 'n'), el('td', m.id || '-', 'qname'), el('td', m.attempts, 'n'),
              el('td', fmtTime(m.dead_ts_ms)), el('td', m.reason || '-', 'reason'));
    const body = el('td', bodyText(m, 200), 'body');
    body.title = bodyText(m, 4000);
    tr.append(body);
    const act = el('td');
    if (m.id) {
      const rq = el('button', 'Requeue');
      rq.type = 'button';
      rq.dataset.act = 'requeue-one';
      rq.addEventListener('click', () => confirmAction(
        'Requeue dead letter ' + m.id + ' of ' + name + '?',
        qpath(name) + '/dead/' + encodeURIComponent(m.id) + '/requeue'));
      const del = el('button', 'Delete', 'danger');
      del.type = 'button';
      del.dataset.act = 'delete-one';
      del.addEventListener('click', () => confirmAction(
        'Delete dead letter ' + m.id + ' of ' + name + '? This cannot be undone.',
        qpath(name) + '/dead/' + encodeURIComponent(m.id) + '/delete'));
      act.append(rq, del);
    }
    tr.append(act);
    db.append(tr);
  }
  const q = state.queues.find((x) => x.name === name);
  const total = q ? q.dead : 0;
  $('deadpage').textContent = total === 0 ? 'no dead letters' :
    (state.deadOffset + 1) + '\u2013' + (state.deadOffset + dead.messages.length) + ' of ' + total;
  $('deadprev').disabled = state.deadOffset === 0;
  $('deadnext').disabled = state.deadOffset + DEAD_PAGE >= total;
  const pb = $('peek').tBodies[0];
  pb.replaceChildren();
  for (const m of peek.messages) {
    const tr = el('tr');
    tr.append(el('td', m.index, 'n'), el('td', m.id || '-', 'qname'), el('td', m.attempts, 'n'),
              el('td', fmtTime(m.ts_ms)), el('td', bodyText(m, 200), 'body'));
    pb.append(tr);
  }
}

async function refresh() {
  clearTimeout(state.timer);
  try {
    const data = await api('/api/queues');
    state.refreshMs = data.refresh_ms || 2000;
    $('redis').textContent = data.redis + ' \u00b7 redq ' + data.version;
    state.queues = data.queues;
    record(data.queues);
    if (!state.selected && state.queues.length) state.selected = fromHash() || state.queues[0].name;
    renderQueues();
    renderDetail();
    await loadMessages();
    setStatus('updated ' + new Date().toLocaleTimeString(), false);
  } catch (e) {
    setStatus(e.message, true);
  }
  state.timer = setTimeout(refresh, state.refreshMs);
}

function fromHash() {
  const m = /^#q=(.*)$/.exec(location.hash);
  if (!m) return null;
  try { return decodeURIComponent(m[1]); } catch (e) { return null; }
}

function select(name) {
  state.selected = name;
  state.deadOffset = 0;
  history.replaceState(null, '', '#q=' + encodeURIComponent(name));
  renderQueues();
  renderDetail();
  loadMessages().catch((e) => setStatus(e.message, true));
}

// --- actions, each after a confirmation ------------------------------------

let pending = null;

function confirmAction(text, path, body) {
  pending = { path, body };
  $('confirmtext').textContent = text;
  $('confirm').showModal();
}

async function runPending() {
  const p = pending;
  pending = null;
  $('confirm').close();
  if (!p) return;
  try {
    const r = await api(p.path, true, p.body);
    setStatus(r.action + ' ' + r.queue + ': ' + r.n, false);
  } catch (e) {
    setStatus(e.message, true);
  }
  refresh();
}

function queueAction(act) {
  const q = state.queues.find((x) => x.name === state.selected);
  if (!q) return;
  const texts = {
    pause: 'Pause ' + q.name + '? Consumers stop taking messages from it until it is resumed.',
    resume: 'Resume ' + q.name + '?',
    requeue: 'Requeue all ' + q.dead + ' dead letters of ' + q.name + '? They are taken first.',
    purge: 'Purge all ' + q.dead + ' dead letters of ' + q.name + '? This cannot be undone.',
    recover: 'Recover the messages held by dead consumers of ' + q.name + ' now?',
  };
  confirmAction(texts[act], qpath(q.name) + '/' + act);
}

function init() {
  for (const b of document.querySelectorAll('.actions [data-act]')) {
    b.addEventListener('click', () => queueAction(b.dataset.act));
  }
  $('confirmok').addEventListener('click', runPending);
  $('confirmcancel').addEventListener('click', () => { pending = null; $('confirm').close(); });
  $('deadprev').addEventListener('click', () => {
    state.deadOffset = Math.max(0, state.deadOffset - DEAD_PAGE);
    loadMessages().catch((e) => setStatus(e.message, true));
  });
  $('deadnext').addEventListener('click', () => {
    state.deadOffset += DEAD_PAGE;
    loadMessages().catch((e) => setStatus(e.message, true));
  });
  $('tokenuse').addEventListener('click', () => {
    state.token = $('token').value;
    sessionStorage.setItem('redq-token', state.token);
    $('tokenbox').hidden = true;
    refresh();
  });
  window.addEventListener('resize', drawChart);
  refresh();
}

init();
