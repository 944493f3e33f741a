// The Tidings dashboard: one page, one WebSocket (the JS client), a few REST calls. No build step.
//
// Every string that comes from a user or the server is put in the page with textContent (through h()), never
// as HTML.
import { TidingsClient } from '/static/client/tidings.js';

const TOKEN_KEY = 'tidings.token';
const token = sessionStorage.getItem(TOKEN_KEY);
if (!token) location.replace(`/login?next=${encodeURIComponent(location.pathname + location.hash)}`);

// ---- small helpers ---------------------------------------------------------------------------------------
const $ = (selector, root = document) => root.querySelector(selector);

/** Create an element: h('li', {class: 'x', dataset: {id: 1}, onclick: fn}, 'text', child). Text is escaped. */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const moneyFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const dateFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
const moneyFormats = new Map();

/** A price in its currency, in the viewer's locale ("€1,125,000"); the bare number when the currency is unknown. */
function money(value, currency) {
  if (value === null || value === undefined) return '—';
  if (currency && /^[A-Za-z]{3}$/.test(currency)) {
    let fmt = moneyFormats.get(currency);
    if (!fmt) {
      try {
        fmt = new Intl.NumberFormat(undefined, { style: 'currency', currency: currency.toUpperCase(), maximumFractionDigits: 0 });
      } catch {
        fmt = null;
      }
      moneyFormats.set(currency, fmt);
    }
    if (fmt) return fmt.format(value);
  }
  return `${moneyFmt.format(value)}${currency ? ` ${currency}` : ''}`;
}

/** The change from old to new in percent, with its marker: {text: "▲ +5.0%", direction: "up"}; null if unknown. */
function priceChange(oldPrice, newPrice) {
  if (oldPrice === null || oldPrice === undefined || newPrice === null || newPrice === undefined || oldPrice === 0) return null;
  const percent = ((newPrice - oldPrice) / oldPrice) * 100;
  const direction = percent > 0 ? 'up' : percent < 0 ? 'down' : 'same';
  const marker = direction === 'up' ? '▲' : direction === 'down' ? '▼' : '■';
  const sign = percent > 0 ? '+' : percent < 0 ? '−' : '±';
  return { text: `${marker} ${sign}${Math.abs(percent).toFixed(1)}%`, direction, percent };
}
const clock = (seconds) => timeFmt.format(seconds ? new Date(seconds * 1000) : new Date());

// Message times in the viewer's locale and time zone: "14:03", "yesterday 09:12", "Mon 09:12", "28 Nov 09:12".
const hmFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const weekdayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'short' });
const dayFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const yearFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });
const relativeDay = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
const startOfDay = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();

/** A server timestamp (seconds since the epoch) as a short local time relative to today. */
function messageTime(seconds, now = new Date()) {
  const date = new Date(seconds * 1000);
  const days = Math.round((startOfDay(now) - startOfDay(date)) / 86400000);
  const time = hmFmt.format(date);
  if (days <= 0) return time;
  if (days === 1) return `${relativeDay.format(-1, 'day')} ${time}`;
  if (days < 7) return `${weekdayFmt.format(date)} ${time}`;
  return `${(date.getFullYear() === now.getFullYear() ? dayFmt : yearFmt).format(date)} ${time}`;
}

/** A <time> element for a server timestamp; nothing when the message has none (never "now"). */
function timeElement(seconds, className) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return null;
  const date = new Date(seconds * 1000);
  return h('time', { class: className, datetime: date.toISOString(), title: fullFmt.format(date) }, messageTime(seconds));
}

function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  client?.disconnect();
  const next = encodeURIComponent(location.pathname + location.hash);
  location.assign(`/login?next=${next}${reason ? `&reason=${encodeURIComponent(reason)}` : ''}`);
}

/** The sign-out button: revoke this token on the server (its sockets close on every node), then sign out here. */
async function logout() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    try {
      await fetch('/auth/logout', { method: 'POST', headers: { Authorization: `Bearer ${token}` }, keepalive: true });
    } catch {
      // offline: the token still ends at its expiry
    }
  }
  signOut();
}

/** fetch() with the bearer token; JSON in and out; a 401 sends the user back to the sign-in page. */
async function api(path, { method = 'GET', body } = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) {
    signOut('session expired');
    throw new Error('Not signed in');
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = data?.detail;
    const text = typeof detail === 'string' ? detail : Array.isArray(detail) ? detail.map((d) => d.msg).join('; ') : '';
    throw new Error(text || `${method} ${path} failed (${response.status})`);
  }
  return data;
}

// ---- toasts ----------------------------------------------------------------------------------------------
const TOAST_MS = 12000;

function toast(kind, title, message) {
  const el = h(
    'div',
    { class: `toast toast-${kind}`, role: 'status', dataset: { kind } },
    h('div', { class: 'toast-title' }, title),
    h('div', { class: 'toast-message' }, message),
    h('button', { class: 'toast-close', type: 'button', 'aria-label': 'Dismiss', onclick: () => el.remove() }, '×'),
  );
  $('#toasts').prepend(el);
  setTimeout(() => el.remove(), TOAST_MS);
  // At most six at a time; an aggregate (price changes) is never the one pushed out.
  const plain = () => [...$('#toasts').children].filter((t) => !t.dataset.aggregate);
  while ($('#toasts').children.length > 6 && plain().length) plain().at(-1).remove();
  return el;
}

// Price changes come in bursts (a crawl can change dozens): one toast gathers them while it is shown, "12 prices
// changed — view", so none is dropped; a single change names the property, with its currency, linking to it.
const priceBurst = { changes: [], el: null, timer: null };

function describeChange(c) {
  const change = priceChange(c.old_price, c.new_price);
  return `${money(c.old_price, c.currency)} → ${money(c.new_price, c.currency)}${change ? ` (${change.text})` : ''}`;
}

function renderPriceToast() {
  const { changes } = priceBurst;
  let el = priceBurst.el;
  if (!el || !el.isConnected) {
    el = h('div', { class: 'toast toast-property toast-prices', role: 'status', dataset: { kind: 'price', aggregate: 'true' } });
    priceBurst.el = el;
    $('#toasts').prepend(el);
  }
  el.dataset.count = String(changes.length);
  const close = h('button', { class: 'toast-close', type: 'button', 'aria-label': 'Dismiss', onclick: () => { el.remove(); priceBurst.changes = []; } }, '×');
  if (changes.length === 1) {
    const c = changes[0];
    const name = c.title || `Property #${c.property_id}`;
    el.replaceChildren(
      h('div', { class: 'toast-title' }, 'Price change · ', h('a', { href: `#property/${c.property_id}`, class: 'toast-link' }, name)),
      h('div', { class: 'toast-message' }, describeChange(c)),
      close,
    );
  } else {
    const items = changes.slice(-5).reverse().map((c) =>
      h('li', {}, h('a', { href: `#property/${c.property_id}` }, c.title || `Property #${c.property_id}`), ': ', describeChange(c)),
    );
    const more = changes.length > 5 ? h('li', { class: 'muted' }, `and ${changes.length - 5} more`) : null;
    el.replaceChildren(
      h('div', { class: 'toast-title' }, `${changes.length} prices changed — `, h('a', { href: '#properties', class: 'toast-link' }, 'view')),
      h('ul', { class: 'toast-list' }, items, more),
      close,
    );
  }
  clearTimeout(priceBurst.timer);
  priceBurst.timer = setTimeout(() => { el.remove(); priceBurst.changes = []; }, TOAST_MS);
}

function onPriceChange(m) {
  if (!priceBurst.el?.isConnected) priceBurst.changes = [];
  priceBurst.changes.push(m);
  renderPriceToast();
  updatePropertyRow(m);
}

function showBanner(text, { signIn = true } = {}) {
  const banner = $('#banner');
  const link = signIn ? h('a', { href: '#', onclick: (e) => { e.preventDefault(); signOut(); } }, 'Sign in again') : null;
  banner.replaceChildren(text, ' ', link);
  banner.dataset.signIn = String(signIn);
  banner.hidden = false;
}

// ---- the connection --------------------------------------------------------------------------------------
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/authenticated`;
const client = new TidingsClient(wsUrl, {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  minReconnectDelay: 300,
  maxReconnectDelay: 5000,
  pingInterval: 15000,
  pongTimeout: 7000,
});
window.tidings = client; // handy in the console

const STATE_LABEL = {
  idle: 'idle',
  connecting: 'connecting',
  connected: 'connected',
  reconnecting: 'reconnecting',
  offline: 'offline',
};

function renderState(state) {
  const conn = $('#conn');
  conn.dataset.state = state;
  $('#conn-label').textContent = STATE_LABEL[state] ?? state;
  conn.title = state === 'connected' ? 'Live: updates arrive as they happen' : 'Not connected: updates are paused';
}

client.on('state', ({ state }) => renderState(state));
client.on('reconnecting', ({ attempt, delay }) => {
  $('#conn').title = `Reconnecting (attempt ${attempt}, in ${Math.round(delay / 100) / 10}s)`;
});
client.on('terminal', ({ code, reason, signIn }) => {
  renderState('offline');
  // signIn comes from the close-code table (close-codes.js, generated from the server's close_codes.py):
  // 4003 token expired, 1008 authentication failures.
  if (signIn) {
    document.body.dataset.signIn = 'true';
    showBanner(`Your session ended (${reason || 'not authorized'}): sign in again.`);
  } else if (code === 1008 && /^Origin not allowed/.test(reason ?? '')) {
    showBanner(`Disconnected by the server: ${reason}, then restart the server.`, { signIn: false });
  } else if (code === 1008 && reason) {
    showBanner(`Disconnected: ${reason}.`, { signIn: false });
  } else if (code === 1008) {
    showBanner('Disconnected: not authorized.');
  } else {
    showBanner(`Disconnected (${code ?? 'no connection'}${reason ? `: ${reason}` : ''}).`);
  }
});
client.on('error', ({ source, error }) => console.warn('tidings client', source, error));

let connectedOnce = false;
client.on('connected', () => {
  $('#banner').hidden = true;
  if (connectedOnce) {
    // Back after a drop: the subscriptions recover their streams; refresh what lives outside them.
    loadJobs();
    for (const room of rooms.values()) refreshPresence(room);
    if (property) refreshViewers();
  }
  connectedOnce = true;
});
client.on('recovery_failed', ({ channel }) => {
  // The server could not replay what we missed (e.g. it restarted with in-memory history): reload state.
  document.body.dataset.recoveries = String(Number(document.body.dataset.recoveries ?? 0) + 1);
  if (channel.startsWith('room:')) {
    const room = rooms.get(channel);
    if (room) reloadRoom(room);
  } else if (channel.startsWith('user:') || channel === 'job_updates') {
    loadJobs();
  } else if (channel.startsWith('property:') && property?.channel === channel) {
    loadProperty(property.id);
  }
});

// ---- notifications -------------------------------------------------------------------------------------
const seenPriceChanges = new Set();
client.onMessage('system_notification', (m) => toast('system', `Announcement · ${m.category}`, m.message));
client.onMessage('admin_notification', (m) => toast('admin', `Admins · ${m.category}`, m.message));
client.onMessage('property_notification', (m) => {
  if (m.event === 'new_properties') {
    toast('property', 'New properties', `${m.count} new ${m.count === 1 ? 'listing' : 'listings'}${m.location ? ` in ${m.location}` : ''}`);
    if (currentView === 'properties' && !property) loadProperties();
  } else if (m.event === 'price_change') {
    // property_updates and (on its page) property:<id> both carry it: handle each change once
    const key = `${m.property_id}:${m.timestamp}`;
    if (seenPriceChanges.has(key)) return;
    seenPriceChanges.add(key);
    if (seenPriceChanges.size > 5000) seenPriceChanges.clear();
    onPriceChange(m);
    if (property && property.id === m.property_id) loadProperty(property.id);
  } else {
    toast('property', 'Property update', m.event ?? 'update');
  }
});

// ---- jobs ------------------------------------------------------------------------------------------------
const jobs = new Map(); // job_id -> job (as the REST API returns it, updated by job_update events)
const FINAL = new Set(['completed', 'failed', 'cancelled']);

function jobCard(job) {
  let card = document.getElementById(`job-${job.job_id}`);
  if (!card) {
    card = h(
      'article',
      { class: 'job-card', id: `job-${job.job_id}`, dataset: { jobId: job.job_id } },
      h('header', {}, h('h3', {}, `Job #${job.job_id}`), h('span', { class: 'badge status' })),
      h('div', { class: 'job-target muted small' }),
      h('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100 }, h('div', { class: 'fill' })),
      h('footer', {}, h('span', { class: 'items' }), h('span', { class: 'job-resumed badge' }), h('span', { class: 'job-error' }), h('span', { class: 'job-actions' })),
    );
    const list = $('#jobs');
    // Newest first.
    const after = [...list.children].find((el) => Number(el.dataset.jobId) < job.job_id);
    list.insertBefore(card, after ?? null);
  }
  return card;
}

function renderJob(job) {
  const card = jobCard(job);
  card.dataset.status = job.status;
  $('.status', card).textContent = job.status;
  $('.job-target', card).textContent = `${job.spider_name ?? 'spider'} · ${(job.target_urls ?? []).join(', ')}`;
  const items = job.items_scraped ?? 0;
  const total = job.total_items ?? null;
  const bar = $('.progress', card);
  let percent;
  if (job.status === 'completed') percent = 100;
  else if (total) percent = Math.min(100, Math.round((100 * items) / total));
  else percent = null;
  bar.classList.toggle('indeterminate', percent === null && job.status === 'running');
  bar.classList.toggle('done', job.status === 'completed');
  bar.classList.toggle('failed', job.status === 'failed' || job.status === 'cancelled');
  $('.fill', bar).style.width = `${percent ?? (FINAL.has(job.status) ? 100 : 0)}%`;
  if (percent !== null) bar.setAttribute('aria-valuenow', String(percent));
  $('.items', card).textContent = `${items} ${items === 1 ? 'item' : 'items'} scraped${total ? ` of ${total}` : ''}`;
  $('.job-error', card).textContent = job.error && job.status !== 'completed' ? job.error : '';
  // A job re-queued after an interruption: "resumed after restart" (or after its worker was lost).
  const resumed = $('.job-resumed', card);
  const reason = job.resume_reason ?? '';
  const label = !reason ? '' : reason === 'worker lost' ? 'resumed after its worker was lost' : 'resumed after restart';
  resumed.textContent = job.status === 'pending' && reason ? `${label.replace('resumed', 'waiting to resume')}` : label;
  resumed.hidden = !label;
  resumed.title = reason ? `${reason}${job.attempts ? ` · attempt ${job.attempts}` : ''}` : '';
  card.dataset.resumed = String(Boolean(label));
  const actions = $('.job-actions', card);
  actions.replaceChildren();
  if (!FINAL.has(job.status)) {
    actions.append(h('button', { class: 'ghost small', type: 'button', onclick: () => cancelJob(job.job_id) }, 'Cancel'));
  }
  $('#jobs-empty').hidden = jobs.size > 0;
  $('#jobs-count').textContent = `${jobs.size} shown`;
}

async function loadJobs() {
  try {
    const { jobs: list } = await api('/api/jobs?limit=50');
    for (const job of list) {
      const known = jobs.get(job.job_id);
      jobs.set(job.job_id, { ...job, total_items: known?.total_items ?? null });
      renderJob(jobs.get(job.job_id));
    }
    $('#jobs-empty').hidden = jobs.size > 0;
  } catch (err) {
    if (err.message.includes('404')) $('#jobs-empty').hidden = false;
    else console.warn('jobs', err);
  }
}

client.onMessage('job_update', async (m) => {
  let job = jobs.get(m.job_id);
  if (!job) {
    job = { job_id: m.job_id, status: m.status ?? 'pending', items_scraped: 0 };
    jobs.set(m.job_id, job);
    api(`/api/jobs/${m.job_id}`).then((full) => {
      const current = jobs.get(m.job_id);
      // Keep the live fields: an event may have arrived after the REST snapshot was taken.
      jobs.set(m.job_id, { ...full, ...current, spider_name: full.spider_name, target_urls: full.target_urls });
      renderJob(jobs.get(m.job_id));
    }).catch(() => {});
  }
  const before = job.status;
  if (typeof m.items_scraped === 'number') job.items_scraped = Math.max(job.items_scraped ?? 0, m.items_scraped);
  if (m.total_items != null) job.total_items = m.total_items;
  if (m.status) job.status = m.status;
  else if (m.event === 'job_completed') job.status = 'completed';
  else if (m.event === 'job_failed') job.status = 'failed';
  else if (m.event === 'job_started' || m.event === 'job_progress') job.status = 'running';
  if (m.error !== undefined) job.error = m.error;
  if (m.resume_reason) job.resume_reason = m.resume_reason;
  if (typeof m.attempt === 'number') job.attempts = m.attempt;
  if (m.requeued) job.items_scraped = 0; // crawled again from the start (items are upserted by URL)
  renderJob(job);
  // Administrators get their own jobs' events twice (user:<id> and job_updates): toast on the change only.
  if (before !== job.status && job.status === 'completed') {
    toast('job', `Job #${m.job_id} completed`, `${job.items_scraped} items scraped`);
  } else if (before !== job.status && job.status === 'failed') {
    toast('job', `Job #${m.job_id} failed`, m.error ?? 'failed');
  }
});

async function cancelJob(jobId) {
  try {
    const job = await api(`/api/jobs/${jobId}/cancel`, { method: 'POST' });
    jobs.set(jobId, { ...jobs.get(jobId), ...job });
    renderJob(jobs.get(jobId));
  } catch (err) {
    toast('error', `Job #${jobId}`, err.message);
  }
}

$('#job-url').value = `${location.origin}/sample-site/`;
$('#job-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const error = $('#job-error');
  error.hidden = true;
  try {
    const job = await api('/api/jobs', {
      method: 'POST',
      body: { spider_name: $('#job-spider').value, target_urls: [$('#job-url').value] },
    });
    const current = jobs.get(job.job_id);
    jobs.set(job.job_id, { ...job, ...current, spider_name: job.spider_name, target_urls: job.target_urls });
    renderJob(jobs.get(job.job_id));
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
  }
});

// ---- live charts -----------------------------------------------------------------------------------------
const POINTS = 60;
const css = getComputedStyle(document.documentElement);
const color = (name) => css.getPropertyValue(name).trim() || '#4f46e5';

function lineChart(canvas, datasets) {
  return new window.Chart(canvas, {
    type: 'line',
    data: {
      labels: [],
      datasets: datasets.map(([label, cssVar]) => ({
        label,
        data: [],
        borderColor: color(cssVar),
        backgroundColor: `${color(cssVar)}22`,
        fill: true,
        tension: 0.3,
        pointRadius: 0,
        borderWidth: 2,
      })),
    },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: 'index', intersect: false },
      scales: {
        x: { ticks: { maxTicksLimit: 6, color: color('--muted') }, grid: { display: false } },
        y: { beginAtZero: true, ticks: { precision: 0, color: color('--muted') }, grid: { color: color('--line') } },
      },
      plugins: { legend: { labels: { boxWidth: 12, color: color('--text') } } },
    },
  });
}

const charts = window.Chart
  ? {
      connections: lineChart($('#chart-connections'), [['connections', '--accent'], ['users', '--green']]),
      rates: lineChart($('#chart-rates'), [['delivered / s', '--accent'], ['published / s', '--amber'], ['received / s', '--green']]),
    }
  : null;

function push(chart, label, values) {
  chart.data.labels.push(label);
  values.forEach((value, i) => chart.data.datasets[i].data.push(value));
  if (chart.data.labels.length > POINTS) {
    chart.data.labels.shift();
    for (const dataset of chart.data.datasets) dataset.data.shift();
  }
  chart.update('none');
}

// Figures are pushed: every node publishes one stats_update per interval on dashboard_stats (computed once per
// node, not per viewer). The page reads /api/stats and /api/dashboard/rates once at start for its first figures.
const lastByNode = new Map(); // node -> last stats_update
const nodeRates = new Map(); // node -> {time, values: [delivered/s, published/s, received/s]}
let lastStatsAt = 0;

function renderTotals(connections, users) {
  $('#stat-connections').textContent = connections;
  $('#stat-users').textContent = users;
}

function markStale(stale) {
  const tiles = $('.tiles');
  tiles.dataset.stale = String(stale);
  tiles.classList.toggle('stale', stale);
  const note = $('#stats-note');
  if (stale) {
    note.textContent = lastStatsAt ? `not live: figures from ${clock(lastStatsAt)}` : 'not live';
  } else {
    note.textContent = 'live';
  }
  for (const tile of document.querySelectorAll('.tile')) {
    tile.title = stale ? `Disconnected: these figures are from ${lastStatsAt ? clock(lastStatsAt) : 'before'}, not live` : '';
  }
}

client.onMessage('stats_update', (m) => {
  const label = clock(m.time);
  lastStatsAt = m.time;
  renderTotals(m.connections, m.users);
  if (charts) push(charts.connections, label, [m.connections, m.users]);
  const previous = lastByNode.get(m.node);
  lastByNode.set(m.node, m);
  if (previous && m.time > previous.time && m.deliveries >= previous.deliveries) {
    const dt = m.time - previous.time;
    nodeRates.set(m.node, { time: m.time, values: ['deliveries', 'publications', 'messages_received'].map((k) => (m[k] - previous[k]) / dt) });
    // The cluster's rates: the sum over the nodes that reported within the last two intervals.
    const totals = [0, 0, 0];
    for (const rate of nodeRates.values()) {
      if (m.time - rate.time > 2 * (m.interval || 2)) continue;
      rate.values.forEach((v, i) => { totals[i] += v; });
    }
    const values = totals.map((v) => Math.round(v * 10) / 10);
    $('#stat-rate').textContent = values[0];
    if (charts) push(charts.rates, label, values);
  }
  if (client.state === 'connected') markStale(false);
});

client.on('state', ({ state }) => {
  if (state !== 'connected') markStale(true);
});
client.on('recovery_failed', ({ channel }) => {
  if (channel === 'dashboard_stats') { lastByNode.clear(); nodeRates.clear(); } // counters start again
});

async function loadStats() {
  try {
    const stats = await api('/api/stats');
    renderTotals(stats.connections, stats.users);
    lastStatsAt = Date.now() / 1000;
  } catch (err) {
    console.warn('stats', err);
  }
}

// ---- chat rooms ------------------------------------------------------------------------------------------
const rooms = new Map(); // channel -> room
let activeRoom = null;

function roomView(room) {
  const messages = h('ol', { class: 'messages', 'aria-live': 'polite' });
  const people = h('ul', { class: 'people presence' });
  const input = h('input', { name: 'text', placeholder: `Message #${room.name}`, autocomplete: 'off', maxlength: 2000, required: true });
  const form = h(
    'form',
    {
      class: 'send-form',
      onsubmit: async (event) => {
        event.preventDefault();
        const text = input.value.trim();
        if (!text) return;
        input.value = '';
        try {
          // request(): wait for the publish_ack (or an error) instead of fire-and-forget.
          await client.request({ type: 'publish', channel: room.channel, data: { text } });
        } catch (err) {
          if (err.code === 'dropped' || err.code === 'connection_lost') client.publish(room.channel, { text });
          else toast('error', `#${room.name}`, err.message);
        }
      },
    },
    input,
    h('button', { class: 'primary', type: 'submit' }, 'Send'),
  );
  const head = h(
    'div',
    { class: 'room-head' },
    h('h3', { class: 'room-title' }, `#${room.name}`),
    h('button', { class: 'ghost small leave-room', type: 'button', onclick: () => leaveRoom(room) }, 'Leave room'),
  );
  return h(
    'div',
    { class: 'room', id: `room-${room.name}`, dataset: { room: room.name } },
    h('div', { class: 'room-main' }, head, messages, form),
    h(
      'aside',
      { class: 'room-side' },
      h('details', { class: 'room-people', open: true }, h('summary', {}, h('h3', {}, 'In this room ', h('span', { class: 'pill presence-count' }, '0'))), people),
    ),
  );
}

function messageKey(m) {
  return `${m.epoch}:${m.offset}`;
}

function addRoomItem(room, m) {
  if (!Number.isInteger(m.offset)) return;
  const key = messageKey(m);
  if (room.keys.has(key)) return;
  room.keys.add(key);
  if (!room.epochs.includes(m.epoch)) room.epochs.push(m.epoch);
  room.items.push(m);
  sortRoomItems(room);
  renderRoomMessages(room);
}

function sortRoomItems(room) {
  room.items.sort((a, b) => (room.epochs.indexOf(a.epoch) - room.epochs.indexOf(b.epoch)) || (a.offset - b.offset));
}

/** "ann joined", "ann and bob joined", "ann and 3 others joined". */
function namesDid(names, verb) {
  if (names.length === 1) return `${names[0]} ${verb}`;
  if (names.length === 2) return `${names[0]} and ${names[1]} ${verb}`;
  return `${names[0]} and ${names.length - 1} others ${verb}`;
}

function describeRun(run) {
  const parts = [];
  if (run.joined.length) parts.push(namesDid(run.joined, 'joined'));
  if (run.left.length) parts.push(namesDid(run.left, 'left'));
  return parts.join(' · ');
}

/** The divider at an epoch change: what a restart kept, and what could not be replayed. */
function restartText(room, epoch) {
  const info = room.restarts.get(epoch);
  if (info?.complete && !info.missing) return 'The server restarted: history kept, nothing was missed';
  if (info?.missing) {
    return `The server restarted: ${info.missing} ${info.missing === 1 ? 'message' : 'messages'} could not be replayed`;
  }
  if (info && !info.complete) {
    return info.durable ? 'The server restarted: some earlier messages could not be replayed' : 'The server restarted: earlier history was not kept';
  }
  return room.durable ? 'The server restarted' : 'The server restarted: earlier history was not kept';
}

function renderRoomMessages(room) {
  const list = $('.messages', room.el);
  const nodes = [];
  let epoch = room.items[0]?.epoch;
  let run = null; // consecutive join/leave events, shown as one line
  for (const m of room.items) {
    if (m.epoch !== epoch) {
      const info = room.restarts.get(m.epoch);
      nodes.push(h('li', { class: 'divider', dataset: { complete: info ? String(info.complete && !info.missing) : 'unknown' } }, restartText(room, m.epoch)));
      epoch = m.epoch;
      run = null;
    }
    if (m.type === 'publication') {
      run = null;
      const user = m.data?.user?.username ?? 'server';
      const body = m.data?.body ?? m.data;
      const text = typeof body?.text === 'string' ? body.text : JSON.stringify(body);
      const mine = m.data?.user?.user_id === me?.user_id;
      nodes.push(
        h(
          'li',
          { class: `msg${mine ? ' mine' : ''}`, dataset: { offset: m.offset, user } },
          h('span', { class: 'msg-user' }, user),
          h('span', { class: 'msg-text' }, text),
          timeElement(m.timestamp, 'msg-time'),
        ),
      );
    } else if (m.type === 'join' || m.type === 'leave') {
      if (!run) {
        run = { joined: [], left: [], el: h('li', { class: 'event' }) };
        nodes.push(run.el);
      }
      const name = m.user?.username ?? 'someone';
      const names = m.type === 'join' ? run.joined : run.left;
      if (!names.includes(name)) names.push(name);
      run.el.textContent = describeRun(run);
      run.el.title = [...run.joined.map((n) => `${n} joined`), ...run.left.map((n) => `${n} left`)].join(', ');
      run.el.dataset.offset = String(m.offset);
      run.el.dataset.events = String(Number(run.el.dataset.events ?? 0) + 1);
    }
  }
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren(...nodes);
  if (atBottom || nodes.length < 20) list.scrollTop = list.scrollHeight;
}

function renderPresence(room) {
  const users = [...room.presence.values()].sort((a, b) => a.username.localeCompare(b.username));
  $('.presence', room.el).replaceChildren(
    ...users.map((u) => h('li', { dataset: { user: u.username } }, h('span', { class: 'avatar' }, u.username.slice(0, 1).toUpperCase()), u.username)),
  );
  $('.presence-count', room.el).textContent = String(users.length);
}

async function refreshPresence(room) {
  try {
    const reply = await client.request({ type: 'presence', subscription: room.channel });
    room.presence = new Map(reply.users.map((u) => [u.user_id, u]));
    renderPresence(room);
  } catch (err) {
    console.warn('presence', room.channel, err);
  }
}

/** The room's backlog; with ``since`` (the last position we have), what came after it and whether the server
 * could replay all of it (the stored history of a durable room survives restarts). */
async function loadRoomHistory(room, since = null) {
  const params = new URLSearchParams({ limit: '200' });
  if (since) {
    params.set('since_epoch', since.epoch);
    params.set('since_offset', String(since.offset));
  }
  const history = await api(`/api/history/${encodeURIComponent(room.channel)}?${params}`);
  room.durable = history.durable;
  room.el.dataset.durable = String(history.durable);
  if (since && history.epoch !== since.epoch) {
    room.restarts.set(history.epoch, { complete: history.complete, missing: history.missing, durable: history.durable });
  }
  for (const m of history.messages) addRoomItem(room, m);
  // The backlog is oldest first, across restarts: its epochs come in that order, before any newer one seen live.
  const order = [...new Set(history.messages.map((m) => m.epoch))];
  room.epochs = [...order, ...room.epochs.filter((e) => !order.includes(e))];
  sortRoomItems(room);
  renderRoomMessages(room);
}

async function reloadRoom(room) {
  room.reloads += 1;
  room.el.dataset.reloads = String(room.reloads);
  const last = room.items[room.items.length - 1];
  const since = last ? { epoch: last.epoch, offset: last.offset } : null;
  await loadRoomHistory(room, since).catch((err) => console.warn('history', err));
  await refreshPresence(room);
}

/** Leave a room: unsubscribe (the others see us leave), forget it in this tab, show another room or none. */
async function leaveRoom(room) {
  rooms.delete(room.channel);
  saveRooms();
  if (activeRoom === room) activeRoom = null;
  try {
    await client.unsubscribe(room.channel);
  } catch (err) {
    console.warn('leave', room.channel, err);
  }
  const next = [...rooms.values()][0];
  if (next) {
    location.hash = `#rooms/${encodeURIComponent(next.name)}`;
  } else {
    if (location.hash !== '#rooms') window.history.replaceState(null, '', '#rooms');
    showNoRoom(`You left #${room.name}.`);
  }
  renderRoomTabs();
}

function showNoRoom(prefix = '') {
  $('#room-host').replaceChildren(
    h('p', { class: 'empty' }, `${prefix ? `${prefix} ` : ''}Join a room to start chatting; others in it see you arrive.`),
  );
}

function renderRoomTabs() {
  $('#room-tabs').replaceChildren(
    ...[...rooms.values()].map((room) =>
      h(
        'button',
        {
          type: 'button',
          role: 'tab',
          class: `room-tab${room === activeRoom ? ' active' : ''}`,
          'aria-selected': room === activeRoom ? 'true' : 'false',
          dataset: { room: room.name },
          onclick: () => { location.hash = `#rooms/${encodeURIComponent(room.name)}`; },
        },
        `#${room.name}`,
        room.unread ? h('span', { class: 'pill' }, String(room.unread)) : null,
      ),
    ),
  );
}

function showRoom(room) {
  activeRoom = room;
  room.unread = 0;
  $('#room-host').replaceChildren(room.el);
  renderRoomTabs();
  const list = $('.messages', room.el);
  list.scrollTop = list.scrollHeight;
  $('input', room.el).focus();
}

async function joinRoom(name, { show = true } = {}) {
  const channel = `room:${name}`;
  let room = rooms.get(channel);
  if (!room) {
    room = {
      name, channel, items: [], keys: new Set(), epochs: [], presence: new Map(), unread: 0, reloads: 0,
      restarts: new Map(), durable: false,
    };
    room.el = roomView(room);
    rooms.set(channel, room);
    saveRooms();
    try {
      await client.subscribe(channel); // announces us (join) and keeps the room across reconnects
    } catch (err) {
      rooms.delete(channel);
      saveRooms();
      toast('error', `#${name}`, err.message);
      return;
    }
    await loadRoomHistory(room).catch((err) => console.warn('history', err));
    await refreshPresence(room);
  }
  if (show) showRoom(room);
}

function saveRooms() {
  sessionStorage.setItem('tidings.rooms', JSON.stringify([...rooms.values()].map((r) => r.name)));
}

client.onMessage('publication', (m) => {
  const room = rooms.get(m.channel);
  if (!room) return;
  addRoomItem(room, m);
  if (room !== activeRoom || currentView !== 'rooms') {
    room.unread += 1;
    renderRoomTabs();
  }
});

for (const type of ['join', 'leave']) {
  client.onMessage(type, (m) => {
    const room = rooms.get(m.channel);
    if (room && m.user) {
      if (type === 'join') room.presence.set(m.user.user_id, m.user);
      else room.presence.delete(m.user.user_id);
      renderPresence(room);
      addRoomItem(room, m);
    }
    if (property && property.channel === m.channel && m.user) {
      if (type === 'join') property.viewers.set(m.user.user_id, m.user);
      else property.viewers.delete(m.user.user_id);
      renderViewers();
    }
  });
}

$('#room-join').addEventListener('submit', (event) => {
  event.preventDefault();
  const name = $('#room-name').value.trim();
  if (!name) return;
  $('#room-name').value = '';
  location.hash = `#rooms/${encodeURIComponent(name)}`;
});

// ---- properties and who is viewing them -----------------------------------------------------------------
let property = null; // {id, channel, viewers: Map}

const FILTERS = [['location', '#filter-location'], ['min_price', '#filter-min'], ['max_price', '#filter-max']];
let shownProperties = null; // ids in the table (null: not loaded yet), to highlight the new ones

/** The filters as query parameters (only those set). */
function filterParams() {
  const params = new URLSearchParams();
  for (const [name, selector] of FILTERS) {
    const value = $(selector).value.trim();
    if (value !== '') params.set(name, value);
  }
  return params;
}

function applyFilterParams(params) {
  for (const [name, selector] of FILTERS) $(selector).value = params.get(name) ?? '';
}

function priceCell(p) {
  return h('td', { class: 'num price', dataset: { price: p.price ?? '' } }, p.price == null ? '' : money(p.price, p.currency));
}

function propertyRow(p) {
  return h(
    'tr',
    { dataset: { propertyId: p.property_id } },
    h('td', {}, String(p.property_id)),
    h('td', {}, h('a', { href: `#property/${p.property_id}` }, p.title)),
    h('td', {}, p.location ?? ''),
    priceCell(p),
  );
}

function flash(el, className) {
  el.classList.remove('changed', 'up', 'down', 'new');
  void el.offsetWidth; // restart the animation
  el.classList.add(...className.split(' '));
}

let propertiesRequest = 0;
async function loadProperties() {
  const request = ++propertiesRequest;
  const params = filterParams();
  try {
    const { properties, total } = await api(`/api/properties?limit=100${params.size ? `&${params}` : ''}`);
    if (request !== propertiesRequest) return; // a newer filter won
    const before = shownProperties;
    $('#properties').replaceChildren(...properties.map(propertyRow));
    if (before) {
      for (const p of properties) {
        if (!before.has(p.property_id)) flash($(`#properties tr[data-property-id="${p.property_id}"]`), 'new');
      }
    }
    shownProperties = new Set(properties.map((p) => p.property_id));
    $('#properties-empty').hidden = properties.length > 0;
    $('#properties-empty').textContent = params.size ? 'No property matches these filters.' : 'No properties yet: crawl the sample site from the Jobs tab.';
    $('#properties-count').textContent = `${properties.length} of ${total} ${total === 1 ? 'property' : 'properties'}${params.size ? ' matching' : ''}`;
  } catch (err) {
    $('#properties').replaceChildren();
    $('#properties-empty').hidden = false;
    $('#properties-count').textContent = err.message;
  }
}

/** A price change while the table is open: the row's price in place, highlighted up or down. */
function updatePropertyRow(m) {
  const row = document.querySelector(`#properties tr[data-property-id="${m.property_id}"]`);
  if (!row) return;
  const cell = $('.price', row);
  cell.textContent = m.new_price == null ? '' : money(m.new_price, m.currency);
  cell.dataset.price = m.new_price ?? '';
  const change = priceChange(m.old_price, m.new_price);
  cell.title = change ? `was ${money(m.old_price, m.currency)} (${change.text})` : '';
  flash(row, `changed ${change?.direction === 'down' ? 'down' : 'up'}`);
  row.dataset.changes = String(Number(row.dataset.changes ?? 0) + 1);
}

let filterTimer = null;
function filtersChanged() {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    const params = filterParams();
    // The URL carries the filters, so a filtered view can be shared (replaceState: no history entry per key).
    window.history.replaceState(null, '', `#properties${params.size ? `?${params}` : ''}`);
    loadProperties();
  }, 250);
}
$('#property-filters').addEventListener('input', filtersChanged);
$('#property-filters').addEventListener('submit', (event) => { event.preventDefault(); filtersChanged(); });
$('#property-filters').addEventListener('reset', () => setTimeout(filtersChanged, 0));

function renderViewers() {
  const users = [...property.viewers.values()].sort((a, b) => a.username.localeCompare(b.username));
  $('#viewers').replaceChildren(
    ...users.map((u) => h('li', { dataset: { user: u.username } }, h('span', { class: 'avatar' }, u.username.slice(0, 1).toUpperCase()), u.username, u.user_id === me?.user_id ? h('span', { class: 'muted small' }, ' (you)') : null)),
  );
  $('#viewer-count').textContent = String(users.length);
}

async function refreshViewers() {
  if (!property) return;
  const current = property;
  try {
    const reply = await client.request({ type: 'presence', subscription: current.channel });
    if (property !== current) return;
    current.viewers = new Map(reply.users.map((u) => [u.user_id, u]));
    renderViewers();
  } catch (err) {
    console.warn('viewers', err);
  }
}

// Only http(s) URLs become links (a stored javascript: or data: URL is shown as text, never followed).
function httpUrl(value) {
  try {
    const url = new URL(String(value));
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

async function loadProperty(id) {
  const facts = $('#property-facts');
  try {
    const p = await api(`/api/properties/${id}`);
    $('#property-title').textContent = p.title;
    const fact = (label, value) => [h('dt', {}, label), h('dd', {}, value ?? '—')];
    facts.replaceChildren(
      ...fact('Price', p.price == null ? null : money(p.price, p.currency)),
      ...fact('Location', p.location),
      ...fact('Bedrooms', p.bedrooms),
      ...fact('Area', p.area_m2 == null ? null : `${p.area_m2} m²`),
      ...fact('Listing', httpUrl(p.url) ? h('a', { href: httpUrl(p.url), target: '_blank', rel: 'noopener noreferrer' }, p.url) : p.url),
    );
    $('#property-history').replaceChildren(
      ...(p.price_history.length
        ? [...p.price_history].reverse().map((c) => {
            const change = priceChange(c.old_price, c.new_price);
            const date = c.changed_at ? new Date(c.changed_at) : null;
            return h(
              'li',
              { class: `price-change ${change?.direction ?? ''}` },
              date ? h('time', { datetime: date.toISOString(), title: fullFmt.format(date) }, dateFmt.format(date)) : null,
              h('span', { class: 'prices' }, `${money(c.old_price, p.currency)} → ${money(c.new_price, p.currency)}`),
              change ? h('span', { class: `change ${change.direction}` }, change.text) : null,
            );
          })
        : [h('li', { class: 'muted' }, 'No price changes recorded')]),
    );
    drawPriceChart(p);
  } catch (err) {
    drawPriceChart(null);
    $('#property-title').textContent = `Property #${id}`;
    facts.replaceChildren(h('dt', {}, 'Status'), h('dd', {}, err.message));
    $('#property-history').replaceChildren();
  }
}

let priceChart = null;

/** The price over time, from the first time the property was seen to now (Chart.js, vendored; stepped). */
function drawPriceChart(p) {
  const canvas = $('#price-chart');
  priceChart?.destroy();
  priceChart = null;
  const points = [];
  if (p) {
    const history = p.price_history ?? [];
    const first = history[0];
    const start = first ? first.old_price : p.price;
    if (start != null && p.first_seen) points.push({ x: p.first_seen, y: start });
    for (const c of history) if (c.new_price != null && c.changed_at) points.push({ x: c.changed_at, y: c.new_price });
    if (points.length && p.price != null) points.push({ x: p.last_seen ?? new Date().toISOString(), y: p.price });
  }
  canvas.dataset.points = String(points.length);
  $('#price-chart-figure').hidden = points.length === 0;
  if (!points.length || !window.Chart) return;
  const label = (iso) => { const d = new Date(iso); return `${dateFmt.format(d)} ${hmFmt.format(d)}`; };
  priceChart = new window.Chart(canvas, {
    type: 'line',
    data: {
      labels: points.map((pt) => label(pt.x)),
      datasets: [{
        label: `price${p.currency ? ` (${p.currency})` : ''}`,
        data: points.map((pt) => pt.y),
        stepped: 'before',
        borderColor: color('--accent'),
        backgroundColor: `${color('--accent')}22`,
        fill: true,
        pointRadius: 3,
        borderWidth: 2,
      }],
    },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      scales: {
        x: { ticks: { maxTicksLimit: 5, color: color('--muted') }, grid: { display: false } },
        y: { ticks: { color: color('--muted'), callback: (v) => money(v, p.currency) }, grid: { color: color('--line') } },
      },
      plugins: {
        legend: { display: false },
        tooltip: { callbacks: { label: (ctx) => money(ctx.parsed.y, p.currency) } },
      },
    },
  });
}

async function openProperty(id) {
  if (property?.id === id) return;
  closeProperty();
  property = { id, channel: `property:${id}`, viewers: new Map() };
  $('#property-list-panel').hidden = true;
  $('#property-view').hidden = false;
  $('#property-view').dataset.propertyId = String(id);
  renderViewers();
  loadProperty(id);
  try {
    await client.subscribe(property.channel); // we are now among the viewers
    await refreshViewers();
  } catch (err) {
    toast('error', `Property #${id}`, err.message);
  }
}

function closeProperty() {
  if (!property) return;
  client.unsubscribe(property.channel); // the others see us leave
  property = null;
  $('#property-view').hidden = true;
  $('#property-list-panel').hidden = false;
}

$('#property-open').addEventListener('submit', (event) => {
  event.preventDefault();
  location.hash = `#property/${Number($('#property-id').value)}`;
});

// ---- administration --------------------------------------------------------------------------------------
$('#broadcast-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const status = $('#broadcast-status');
  const admins = $('#broadcast-audience').value === 'admins';
  try {
    await api(admins ? '/admin/notify-admins' : '/admin/broadcast', {
      method: 'POST',
      body: { message: $('#broadcast-message').value, category: $('#broadcast-category').value },
    });
    status.textContent = `Sent to ${admins ? 'administrators' : 'everyone'} at ${clock()}`;
    $('#broadcast-message').value = '';
  } catch (err) {
    status.textContent = err.message;
  }
});

// ---- navigation ------------------------------------------------------------------------------------------
let currentView = 'jobs';

function route() {
  const [path, query = ''] = location.hash.replace(/^#/, '').split('?');
  const [view, arg] = decodeURIComponent(path).split('/');
  let name = ['jobs', 'rooms', 'properties', 'admin'].includes(view) ? view : view === 'property' ? 'properties' : 'jobs';
  if (name === 'admin' && me?.role !== 'admin') name = 'jobs';
  currentView = name;
  for (const section of document.querySelectorAll('.view')) section.hidden = section.dataset.view !== name;
  for (const tab of document.querySelectorAll('[data-tab]')) tab.classList.toggle('active', tab.dataset.tab === name);
  if (view === 'property' && Number(arg) > 0) {
    openProperty(Number(arg));
  } else {
    closeProperty();
    if (name === 'properties') {
      applyFilterParams(new URLSearchParams(query));
      loadProperties();
    }
  }
  if (name === 'rooms' && arg) joinRoom(arg);
  else if (name === 'rooms' && activeRoom) showRoom(activeRoom);
  else if (name === 'rooms') showNoRoom();
}

// ---- start -----------------------------------------------------------------------------------------------
let me = null;

async function start() {
  renderState(client.state);
  try {
    me = await api('/api/me');
  } catch {
    return; // api() has already sent us to the sign-in page
  }
  $('#whoami').replaceChildren(h('strong', {}, me.username), h('span', { class: 'badge role' }, me.role));
  document.body.dataset.role = me.role;
  for (const el of document.querySelectorAll('.admin-only')) el.hidden = me.role !== 'admin';
  $('#logout').addEventListener('click', () => logout());

  client.connect().catch(() => {}); // failures are reported through the state and terminal events
  // Job events: our own arrive on user:<id> (administrators: every job on job_updates). Subscribing explicitly
  // makes the client recover them after a reconnect.
  client.subscribe(`user:${me.user_id}`).catch(() => {});
  if (me.role === 'admin') client.subscribe('job_updates').catch(() => {});
  client.subscribe('property_updates').catch(() => {});

  client.subscribe('dashboard_stats').catch(() => {});

  await loadJobs();
  loadStats();
  window.addEventListener('hashchange', route);
  route();
  // Rooms joined earlier in this tab come back after a page reload.
  for (const name of JSON.parse(sessionStorage.getItem('tidings.rooms') ?? '[]')) {
    if (!rooms.has(`room:${name}`)) joinRoom(name, { show: false }).then(renderRoomTabs);
  }
  document.body.dataset.ready = 'true';
}

if (token) start();
