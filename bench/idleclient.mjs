// Idle-connection load client for bench/idle.py (one JSON config as argv[2]); one JSON line per step on stdout,
// one line on stdin to go on.
//   connected   N subscribers connected, authenticated and subscribed (connect rate per 1,000 reported)
//   (idle: the driver measures the server; the ws package answers the server's keepalive pings by itself)
//   broadcast   one publication (POST, stamped) awaited at every subscriber: time to reach all, lost count
//   alive       how many subscribers are still open (none may have been closed while idle)
// Subscribers bind source addresses 127.0.0.1, 127.0.0.2, ... in turn (cfg.sources), so N can exceed one
// address's ephemeral ports.
import { createInterface } from 'node:readline';
import WebSocket from 'ws';

const cfg = JSON.parse(process.argv[2]);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const lines = [];
let waiter = null;
createInterface({ input: process.stdin }).on('line', (l) => {
  if (waiter) { const w = waiter; waiter = null; w(l); } else lines.push(l);
}).on('close', () => process.exit(0));
const next = () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => { waiter = r; }));

const clients = [];
let closedEarly = 0;
let firstError = null;
let pendingBroadcast = null;

function connectOne(i) {
  return new Promise((resolve) => {
    const localAddress = `127.0.0.${1 + (i % cfg.sources)}`;
    const ws = new WebSocket(cfg.url, { headers: cfg.headers, perMessageDeflate: false, localAddress, handshakeTimeout: 60000 });
    const c = { ws, ready: false, got: false };
    let stage = 'welcome';
    ws.on('message', (data) => {
      if (c.ready) {
        if (pendingBroadcast && !c.got && data.includes(pendingBroadcast.marker)) {
          c.got = true;
          if (++pendingBroadcast.received === pendingBroadcast.expected) pendingBroadcast.done(Date.now());
        }
        return;
      }
      const msg = JSON.parse(data.toString());
      if (stage === 'welcome' && msg.type === cfg.welcome) { stage = 'confirm'; ws.send(JSON.stringify(cfg.subscribe)); }
      else if (stage === 'confirm' && msg.type === cfg.confirm) { c.ready = true; clients.push(c); resolve(true); }
    });
    ws.on('error', (e) => { if (!firstError) firstError = e.message; if (!c.ready) resolve(false); });
    ws.on('close', (code, reason) => {
      if (c.ready) { closedEarly++; c.ready = false; if (!firstError) firstError = `closed ${code}`; }
      else { if (!firstError) firstError = `closed ${code} ${reason} before subscribing`; resolve(false); }
    });
  });
}

async function main() {
  const t0 = Date.now();
  const marks = [];
  let started = 0, ok = 0, failed = 0;
  await new Promise((resolve) => {
    const launch = () => {
      while (started < cfg.n && started - ok - failed < cfg.concurrency) {
        const i = started++;
        connectOne(i).then((good) => {
          if (good) { ok++; if (ok % 1000 === 0) marks.push([ok, (Date.now() - t0) / 1000]); } else failed++;
          if (ok + failed === cfg.n) resolve(); else launch();
        });
      }
    };
    launch();
  });
  emit({ event: 'connected', connected: ok, failed, connect_s: (Date.now() - t0) / 1000, marks, first_error: firstError });
  await next();
  // one broadcast to all
  const marker = `idle-bench-${Date.now()}`;
  const expected = clients.filter((c) => c.ready).length;
  const t1 = Date.now();
  const finished = new Promise((resolve) => {
    pendingBroadcast = { marker, expected, received: 0, done: resolve };
    setTimeout(() => resolve(null), cfg.timeoutMs);
  });
  const res = await fetch(cfg.publish, {
    method: 'POST', headers: { 'content-type': 'application/json', ...cfg.headers },
    body: JSON.stringify({ channel: cfg.channel, data: { marker } }),
  });
  const tEnd = await finished;
  emit({ event: 'broadcast', status: res.status, expected, received: pendingBroadcast.received,
    lost: expected - pendingBroadcast.received, all_s: tEnd ? (tEnd - t1) / 1000 : null });
  await next();
  emit({ event: 'alive', alive: clients.filter((c) => c.ready).length, closed_early: closedEarly, first_error: firstError });
  await next();
  for (const c of clients) c.ws.terminate();
  emit({ event: 'done' });
}
main().catch((e) => { emit({ event: 'error', error: String(e && e.stack || e) }); process.exit(1); });
