// Load client for the fan-out benchmark, driven by bench/fanout.py (one JSON config as argv[2]).
//
// Steps; after each it prints one JSON line on stdout and waits for a line on stdin before the next, so the
// driver can measure the server in between:
//   warm        1 subscriber + the trigger connected, one broadcast received (baseline RSS taken after this)
//   connected   the other N-1 subscribers connected (and subscribed) (idle RSS taken after this)
//   latency     `warmup` + `paced` single broadcasts, `gapMs` apart, each awaited at every subscriber (and the
//               median time to the first subscriber's receipt)
//   throughput  `messages` broadcasts back to back, awaited at every subscriber (server CPU measured around)
//   done        everything closed
// Every bench message carries "bseq" (sequence number) and "bts" (publish time, ms since the epoch, taken by
// whoever triggered the publish); they are found by key, so they may sit inside any envelope.
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import zlib from 'node:zlib';
import { Worker } from 'node:worker_threads';
import WebSocket from 'ws';
import { nowMs, publishHttp } from './httppublish.mjs';

const cfg = JSON.parse(process.argv[2]);
const log = (...a) => process.stderr.write(`[loadclient] ${a.join(' ')}\n`);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- inflate in-process (cfg.inflate: 'memo', the default for deflate runs; 'sync'; 'ws' keeps ws's own) -------
// ws inflates each message on libuv's thread pool behind a process-wide limit of 10 in flight; on one pinned core
// that made this client the bottleneck of a compressed run (100 % of its core at ~22k deliveries/s), and a slower
// client let the server join more frames to a write: compression on and off were not compared at the same load
// (the publisher thread, see publish(), removes the other half of that coupling). When the server
// promised server_no_context_takeover (every message inflates on its own), the receiver inflates in its own
// parsing loop instead:
//   'sync'  every message is inflated (zlib's one-shot inflate, ~8 µs a message here);
//   'memo'  the same, but a payload equal to one of the last 1,024 inflated takes its output: with no context
//           takeover the output depends on those bytes alone, so every message is still checked, and a shared
//           frame is inflated about once per broadcast instead of once per subscriber.
const inflateMode = cfg.inflate || 'memo';
const inflateCount = { messages: 0, inflated: 0 };  // compressed messages received / inflated (the rest looked up)
if (cfg.deflate && inflateMode !== 'ws') {
  const { Receiver, PerMessageDeflate } = createRequire(import.meta.url)('ws');
  const viaPool = Receiver.prototype.decompress;
  const TRAILER = Buffer.from([0x00, 0x00, 0xff, 0xff]);
  const INFLATE = { finishFlush: zlib.constants.Z_SYNC_FLUSH };
  // A cheap key (the length and every 4th byte, FNV-1a): a collision costs an inflate, never a wrong output, as
  // a hit is confirmed byte for byte.
  const recent = new Map();  // key -> [payload, output], the last 1,024 inflated
  const fnv = (buf) => {
    let h = Math.imul(0x811c9dc5 ^ buf.length, 0x01000193);
    for (let i = buf.length - 1; i >= 0; i -= 4) h = Math.imul(h ^ buf[i], 0x01000193);
    return h >>> 0;
  };
  const inflate = (payload) => {
    inflateCount.messages++;
    inflateCount.inflated++;
    if (inflateMode !== 'memo') return zlib.inflateRawSync(Buffer.concat([payload, TRAILER]), INFLATE);
    const key = fnv(payload);
    const hit = recent.get(key);
    if (hit !== undefined && hit[0].equals(payload)) { inflateCount.inflated--; return hit[1]; }
    const out = zlib.inflateRawSync(Buffer.concat([payload, TRAILER]), INFLATE);
    if (recent.size >= 1024) recent.delete(recent.keys().next().value);
    recent.set(key, [Buffer.from(payload), out]);
    return out;
  };
  // Replaces Receiver#decompress (ws 8): called from getData with the state INFLATING; dataMessage then emits the
  // message (or, for a fragment, waits for the next frame) and the loop that called getData goes on.
  Receiver.prototype.decompress = function decompress(data, cb) {
    const pmd = this._extensions[PerMessageDeflate.extensionName];
    if (!pmd.params.server_no_context_takeover) { viaPool.call(this, data, cb); return; }
    if (!this._fin) { (this.deflatedParts ||= []).push(data); this.dataMessage(cb); return; }
    const payload = this.deflatedParts ? Buffer.concat([...this.deflatedParts, data]) : data;
    this.deflatedParts = null;
    let out;
    try { out = inflate(payload); } catch (e) {
      cb(this.createError(Error, `cannot inflate: ${e.message}`, true, 1007, 'WS_ERR_INFLATE'));
      return;
    }
    this._messageLength += out.length;
    if (this._maxPayload > 0 && this._messageLength > this._maxPayload) {
      cb(this.createError(RangeError, 'Max payload size exceeded', false, 1009, 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH'));
      return;
    }
    this._fragments.push(out);
    this.dataMessage(cb);
  };
}

// ---- stdin: one line per "go on" ------------------------------------------------------------------------
const lines = [];
let lineWaiter = null;
createInterface({ input: process.stdin }).on('line', (l) => {
  if (lineWaiter) { const w = lineWaiter; lineWaiter = null; w(l); } else lines.push(l);
}).on('close', () => { if (lineWaiter) lineWaiter('quit'); else lines.push('quit'); });
const nextLine = () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => { lineWaiter = r; }));
async function step(obj) {
  emit(obj);
  const l = await nextLine();
  if (l.trim() === 'quit') { closeAll(); process.exit(0); }
}

// ---- fast field extraction from a frame Buffer ----------------------------------------------------------
const KEY_SEQ = Buffer.from('"bseq"');
const KEY_TS = Buffer.from('"bts"');
function numAt(buf, key) {
  const k = buf.indexOf(key);
  if (k < 0) return NaN;
  let i = k + key.length;
  while (i < buf.length && (buf[i] === 58 || buf[i] === 32)) i++; // ':' and ' '
  const start = i;
  while (i < buf.length) {
    const c = buf[i];
    if ((c >= 48 && c <= 57) || c === 46 || c === 45 || c === 101 || c === 69 || c === 43) i++; else break;
  }
  return Number(buf.toString('latin1', start, i));
}

// ---- measurement state ----------------------------------------------------------------------------------
const phase = {
  seq0: -1, seq1: -1,        // accepted bseq range [seq0, seq1)
  expected: 0, received: 0, bytes: 0, disorder: 0,
  record: false, samples: null, nSamples: 0,
  perSeq: null,               // per-broadcast receipt counts (paced phase)
  done: null,
};
let otherMessages = 0;

// The non-negative integer after `key` (-1 when absent): digits read in place, no string made.
function intAt(buf, key) {
  const k = buf.indexOf(key);
  if (k < 0) return -1;
  let i = k + key.length;
  while (i < buf.length && (buf[i] === 58 || buf[i] === 32)) i++;
  let v = 0;
  for (let c = buf[i]; c >= 48 && c <= 57; c = buf[++i]) v = v * 10 + (c - 48);
  return v;
}

function onBench(client, buf) {
  const seq = intAt(buf, KEY_SEQ);
  if (seq < 0) { otherMessages++; return; }
  if (seq < phase.seq0 || seq >= phase.seq1) return; // late or stray
  if (seq <= client.last) phase.disorder++;
  client.last = seq;
  phase.received++;
  phase.bytes += buf.length;
  if (phase.record) {
    const ts = numAt(buf, KEY_TS);
    if (phase.nSamples < phase.samples.length) phase.samples[phase.nSamples++] = nowMs() - ts;
  }
  if (phase.perSeq) phase.perSeq[seq - phase.seq0]++;
  if (phase.received >= phase.expected && phase.done) { const d = phase.done; phase.done = null; d(true); }
}

function expectRange(seq0, count, nClients, record, sampleCap) {
  Object.assign(phase, {
    seq0, seq1: seq0 + count, expected: count * nClients, received: 0, bytes: 0, disorder: 0,
    record, samples: record ? new Float64Array(sampleCap) : null, nSamples: 0,
    perSeq: null, done: null,
  });
  return new Promise((resolve) => {
    phase.done = resolve;
    if (phase.received >= phase.expected) { phase.done = null; resolve(true); }
  });
}
function withTimeout(p, ms) {
  let t;
  return Promise.race([p, new Promise((r) => { t = setTimeout(() => r(false), ms); })]).finally(() => clearTimeout(t));
}

// ---- subscribers ----------------------------------------------------------------------------------------
const clients = [];
let closedEarly = 0;
let connectFailures = 0;
let firstError = null;

function connectOne(index) {
  return new Promise((resolve) => {
    const ws = new WebSocket(cfg.url, cfg.protocols && cfg.protocols.length ? cfg.protocols : undefined, {
      headers: cfg.headers || {}, perMessageDeflate: cfg.deflate ? { threshold: 0 } : false, skipUTF8Validation: true, handshakeTimeout: 30000,
    });
    const client = { ws, index, last: -1, ready: false };
    let stage = cfg.welcome ? 'welcome' : (cfg.subscribe ? 'confirm' : 'ready');
    let settled = false;
    const fail = (why) => {
      if (client.ready || settled) return;
      settled = true;
      connectFailures++;
      if (!firstError) firstError = String(why);
      try { ws.terminate(); } catch { /* already gone */ }
      resolve(null);
    };
    const becomeReady = () => { settled = true; client.ready = true; clients.push(client); resolve(client); };
    ws.on('open', () => {
      if (stage === 'confirm' && !cfg.welcome) ws.send(JSON.stringify(cfg.subscribe));
      if (stage === 'ready') becomeReady();
    });
    ws.on('message', (data) => {
      if (client.ready) { onBench(client, data); return; }
      let msg;
      try { msg = JSON.parse(data.toString()); } catch { return; }
      if (stage === 'welcome' && msg.type === cfg.welcome) {
        if (cfg.subscribe) { stage = 'confirm'; ws.send(JSON.stringify(cfg.subscribe)); } else becomeReady();
      } else if (stage === 'confirm' && msg.type === cfg.confirm) {
        if (msg.epoch !== undefined) client.epoch = msg.epoch;
        becomeReady();
      } else if (msg.type === 'error' || msg.type === 'subscription_error') {
        fail(`server said ${data.toString()}`);
      }
    });
    ws.on('error', (e) => fail(e.message));
    ws.on('close', (code, reason) => {
      if (client.ready) { client.ready = false; closedEarly++; if (!firstError) firstError = `closed ${code} ${reason}`; }
      else fail(`closed ${code} ${reason}`);
    });
  });
}

async function connectMany(count, startIndex) {
  let next = 0;
  const worker = async () => {
    while (next < count) { const i = next++; await connectOne(startIndex + i); }
  };
  await Promise.all(Array.from({ length: Math.min(cfg.connectConcurrency || 100, count) }, worker));
}
const openClients = () => clients.filter((c) => c.ready).length;

// ---- triggers -------------------------------------------------------------------------------------------
let control = null;
let publisher = null;  // the publisher thread (HTTP trigger)
async function openTrigger() {
  const t = cfg.trigger;
  if (t.mode === 'control') {
    control = new WebSocket(t.url, { perMessageDeflate: false, headers: t.headers || {} });
    await new Promise((resolve, reject) => { control.once('open', resolve); control.once('error', reject); });
    control.on('message', () => {}); // {"done": K} acknowledgements; completion is judged at the subscribers
  } else if (cfg.publisherThread !== false) {
    publisher = new Worker(new URL('./httppublish.mjs', import.meta.url), { workerData: { role: 'publisher', trigger: t } });
    publisher.unref();
  }
}
// Publish `count` messages starting at seq0; `stamp` true puts the trigger's own send time in each.
let envelopeSeen = null;  // bytes a delivered frame adds around `data` (HTTP trigger), from the warm-up broadcast
let lastDataBytes = 0;
async function publish(seq0, count, stamp, viaThread = false) {
  const t = cfg.trigger;
  if (t.mode === 'control') {
    const req = { publish: count, seq0, size: cfg.size };
    if (stamp) req.t = nowMs();
    control.send(JSON.stringify(req));
    return 0;
  }
  // HTTP: one POST per message, up to `concurrency` in flight (bench/httppublish.mjs). Back-to-back publishing
  // (`viaThread`) runs in the publisher thread: on this event loop the next POST would wait behind the frames
  // the subscribers are parsing, so the publish rate, and with it how many frames the server can join to one
  // write, would depend on how costly the client finds each frame (e.g. with compression on).
  const epoch = clients.length ? clients[0].epoch : undefined;
  const r = viaThread && publisher
    ? await new Promise((resolve) => {
      publisher.once('message', resolve);
      publisher.postMessage({ seq0, count, size: cfg.size, envelopeSeen, epoch });
    })
    : await publishHttp(t, seq0, count, cfg.size, envelopeSeen, epoch);
  lastDataBytes = r.lastDataBytes;
  if (r.firstError && !firstError) firstError = r.firstError;
  return r.failures;
}
function closeAll() {
  for (const c of clients) { c.ready = false; try { c.ws.terminate(); } catch { /* gone */ } }
  if (control) try { control.terminate(); } catch { /* gone */ }
  if (publisher) publisher.terminate();
}

function percentile(sorted, q) {
  if (!sorted.length) return null;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[idx];
}

// ---- the run --------------------------------------------------------------------------------------------
async function main() {
  const n = cfg.n;
  const timeoutMs = cfg.timeoutMs || 60000;
  let seq = 0;

  // warm: one subscriber, the trigger, one broadcast
  await connectMany(1, 0);
  if (!clients.length) { emit({ event: 'error', error: firstError || 'first subscriber failed' }); process.exit(2); }
  await openTrigger();
  let wait = expectRange(seq, 1, 1, false, 0);
  await publish(seq, 1, true);
  if (!(await withTimeout(wait, timeoutMs))) {
    emit({ event: 'error', error: `warm-up broadcast not received (${firstError || 'no error seen'})` });
    process.exit(2);
  }
  if (cfg.trigger.mode !== 'control' && phase.received === 1) envelopeSeen = Math.max(0, phase.bytes - lastDataBytes);
  seq += 1;
  await step({ event: 'warm', other_messages: otherMessages });

  // connected
  const t0 = performance.now();
  await connectMany(n - 1, 1);
  const connectS = (performance.now() - t0) / 1000;
  await step({
    event: 'connected', requested: n, connected: openClients(), failures: connectFailures,
    connect_s: connectS, first_error: firstError,
  });

  // latency: paced single broadcasts
  const warmup = cfg.warmup ?? 2;
  const paced = cfg.paced ?? 20;
  const gapMs = cfg.gapMs ?? 100;
  const all = [];
  const completion = [];
  const completionInOrder = [];
  const firstMs = [];      // publish -> first subscriber's receipt, per recorded broadcast
  let pacedLost = 0;
  let pacedPublishFailures = 0;
  for (let i = 0; i < warmup + paced; i++) {
    const record = i >= warmup;
    const live = openClients();
    wait = expectRange(seq, 1, live, record, live);
    const tPub = nowMs();
    pacedPublishFailures += await publish(seq, 1, true);
    const ok = await withTimeout(wait, timeoutMs);
    if (record) {
      const s = phase.samples.subarray(0, phase.nSamples);
      let first = Infinity;
      for (const v of s) { all.push(v); if (v < first) first = v; }
      firstMs.push(first);
      completion.push(nowMs() - tPub);
      completionInOrder.push(nowMs() - tPub);
      if (!ok) pacedLost += phase.expected - phase.received;
    }
    phase.record = false;
    seq += 1;
    await sleep(gapMs);
  }
  all.sort((a, b) => a - b);
  completion.sort((a, b) => a - b);
  await step({
    event: 'latency', broadcasts: paced, samples: all.length, lost: pacedLost,
    publish_failures: pacedPublishFailures,
    p50_ms: percentile(all, 0.5), p99_ms: percentile(all, 0.99), max_ms: all.length ? all[all.length - 1] : null,
    completion_p50_ms: percentile(completion, 0.5),
    completion_max_ms: completion.length ? completion[completion.length - 1] : null,
    completion_ms: completionInOrder.map((v) => Math.round(v * 10) / 10),
    first_p50_ms: percentile([...firstMs].sort((a, b) => a - b), 0.5),
  });

  // throughput: K back to back
  const k = cfg.messages;
  const live = openClients();
  wait = expectRange(seq, k, live, false, 0);
  const cpu0 = process.cpuUsage();
  const elu0 = performance.eventLoopUtilization();
  const w0 = performance.now();
  const publishFailures = await publish(seq, k, false, true);
  const ok = await withTimeout(wait, Math.max(timeoutMs, k * live * 0.2));
  const elapsedS = (performance.now() - w0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const elu = performance.eventLoopUtilization(elu0);
  const received = phase.received;
  const expected = phase.expected;
  seq += k;
  await step({
    event: 'throughput', clients: live, messages: k, expected, received, lost: expected - received,
    complete: ok, disorder: phase.disorder, publish_failures: publishFailures, elapsed_s: elapsedS,
    deliveries_per_s: received / elapsedS, frame_bytes: received ? phase.bytes / received : null,
    client_cpu_s: (cpu.user + cpu.system) / 1e6, client_user_s: cpu.user / 1e6, client_elu: elu.utilization,
    closed_early: closedEarly, other_messages: otherMessages, first_error: firstError,
  });

  closeAll();
  if (cfg.deflate && inflateMode !== 'ws') log(`inflated ${inflateCount.inflated} of ${inflateCount.messages} compressed messages`);
  emit({ event: 'done' });
  setTimeout(() => process.exit(0), 50);
}

main().catch((e) => { emit({ event: 'error', error: String(e && e.stack || e) }); process.exit(2); });
