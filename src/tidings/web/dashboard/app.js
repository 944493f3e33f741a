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
const clock = (seconds) => timeFmt.format(seconds ? new Date(seconds * 1000) : new Date());

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
  while ($('#toasts').children.length > 6) $('#toasts').lastElementChild.remove();
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
client.onMessage('system_notification', (m) => toast('system', `Announcement · ${m.category}`, m.message));
client.onMessage('admin_notification', (m) => toast('admin', `Admins · ${m.category}`, m.message));
client.onMessage('property_notification', (m) => {
  if (m.event === 'new_properties') {
    toast('property', 'New properties', `${m.count} new ${m.count === 1 ? 'listing' : 'listings'}${m.location ? ` in ${m.location}` : ''}`);
    if (currentView === 'properties') loadProperties();
  } else if (m.event === 'price_change') {
    const from = m.old_price == null ? '?' : moneyFmt.format(m.old_price);
    toast('property', `Price change · #${m.property_id}`, `${from} → ${moneyFmt.format(m.new_price)}`);
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
      h('footer', {}, h('span', { class: 'items' }), h('span', { class: 'job-error' }), h('span', { class: 'job-actions' })),
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
const POLL_MS = 2000;
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

let lastSample = null;
async function pollStats() {
  try {
    const [stats, sample] = await Promise.all([api('/api/stats'), api('/api/dashboard/rates')]);
    const label = clock();
    $('#stat-connections').textContent = stats.connections;
    $('#stat-users').textContent = stats.users;
    if (charts) push(charts.connections, label, [stats.connections, stats.users]);
    if (lastSample && sample.time > lastSample.time && sample.deliveries >= lastSample.deliveries) {
      const dt = sample.time - lastSample.time;
      const rate = (key) => Math.round(((sample[key] - lastSample[key]) / dt) * 10) / 10;
      const values = [rate('deliveries'), rate('publications'), rate('messages_received')];
      $('#stat-rate').textContent = values[0];
      if (charts) push(charts.rates, label, values);
    }
    lastSample = sample;
  } catch (err) {
    lastSample = null; // the server restarted or is away: counters start again
  } finally {
    setTimeout(pollStats, POLL_MS);
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
  return h(
    'div',
    { class: 'room', id: `room-${room.name}`, dataset: { room: room.name } },
    h('div', { class: 'room-main' }, messages, form),
    h('aside', { class: 'room-side' }, h('h3', {}, 'In this room ', h('span', { class: 'pill presence-count' }, '0')), people),
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
  room.items.sort((a, b) => (room.epochs.indexOf(a.epoch) - room.epochs.indexOf(b.epoch)) || (a.offset - b.offset));
  renderRoomMessages(room);
}

function renderRoomMessages(room) {
  const list = $('.messages', room.el);
  const nodes = [];
  let epoch = room.items[0]?.epoch;
  for (const m of room.items) {
    if (m.epoch !== epoch) {
      nodes.push(h('li', { class: 'divider' }, 'The server restarted: earlier history was not kept'));
      epoch = m.epoch;
    }
    if (m.type === 'publication') {
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
          h('time', { class: 'msg-time' }, clock(m.timestamp)),
        ),
      );
    } else if (m.type === 'join' || m.type === 'leave') {
      const verb = m.type === 'join' ? 'joined' : 'left';
      nodes.push(h('li', { class: 'event', dataset: { offset: m.offset } }, `${m.user?.username ?? 'someone'} ${verb}`));
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

async function loadRoomHistory(room) {
  const history = await api(`/api/history/${encodeURIComponent(room.channel)}?limit=200`);
  for (const m of history.messages) addRoomItem(room, m);
}

async function reloadRoom(room) {
  room.reloads += 1;
  room.el.dataset.reloads = String(room.reloads);
  await loadRoomHistory(room).catch((err) => console.warn('history', err));
  await refreshPresence(room);
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
    room = { name, channel, items: [], keys: new Set(), epochs: [], presence: new Map(), unread: 0, reloads: 0 };
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

async function loadProperties() {
  try {
    const { properties } = await api('/api/properties?limit=100');
    $('#properties').replaceChildren(
      ...properties.map((p) =>
        h(
          'tr',
          { dataset: { propertyId: p.property_id } },
          h('td', {}, String(p.property_id)),
          h('td', {}, h('a', { href: `#property/${p.property_id}` }, p.title)),
          h('td', {}, p.location ?? ''),
          h('td', { class: 'num' }, p.price == null ? '' : `${moneyFmt.format(p.price)} ${p.currency ?? ''}`),
        ),
      ),
    );
    $('#properties-empty').hidden = properties.length > 0;
  } catch (err) {
    $('#properties').replaceChildren();
    $('#properties-empty').hidden = false;
  }
}

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
      ...fact('Price', p.price == null ? null : `${moneyFmt.format(p.price)} ${p.currency ?? ''}`),
      ...fact('Location', p.location),
      ...fact('Bedrooms', p.bedrooms),
      ...fact('Area', p.area_m2 == null ? null : `${p.area_m2} m²`),
      ...fact('Listing', httpUrl(p.url) ? h('a', { href: httpUrl(p.url), target: '_blank', rel: 'noopener noreferrer' }, p.url) : p.url),
    );
    $('#property-history').replaceChildren(
      ...(p.price_history.length
        ? p.price_history.map((c) => h('li', {}, `${c.changed_at ?? ''}: ${c.old_price ?? '?'} → ${c.new_price ?? '?'}`))
        : [h('li', { class: 'muted' }, 'No price changes recorded')]),
    );
  } catch (err) {
    $('#property-title').textContent = `Property #${id}`;
    facts.replaceChildren(h('dt', {}, 'Status'), h('dd', {}, err.message));
    $('#property-history').replaceChildren();
  }
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
  const [view, arg] = decodeURIComponent(location.hash.replace(/^#/, '')).split('/');
  let name = ['jobs', 'rooms', 'properties', 'admin'].includes(view) ? view : view === 'property' ? 'properties' : 'jobs';
  if (name === 'admin' && me?.role !== 'admin') name = 'jobs';
  currentView = name;
  for (const section of document.querySelectorAll('.view')) section.hidden = section.dataset.view !== name;
  for (const tab of document.querySelectorAll('[data-tab]')) tab.classList.toggle('active', tab.dataset.tab === name);
  if (view === 'property' && Number(arg) > 0) {
    openProperty(Number(arg));
  } else {
    closeProperty();
    if (name === 'properties') loadProperties();
  }
  if (name === 'rooms' && arg) joinRoom(arg);
  else if (name === 'rooms' && activeRoom) showRoom(activeRoom);
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

  await loadJobs();
  pollStats();
  window.addEventListener('hashchange', route);
  route();
  // Rooms joined earlier in this tab come back after a page reload.
  for (const name of JSON.parse(sessionStorage.getItem('tidings.rooms') ?? '[]')) {
    if (!rooms.has(`room:${name}`)) joinRoom(name, { show: false }).then(renderRoomTabs);
  }
  document.body.dataset.ready = 'true';
}

if (token) start();
