// HTTP trigger of the fan-out benchmark: one POST per message, up to `concurrency` in flight, each stamped with
// the publisher's clock when issued. Used by loadclient.mjs on its own event loop (paced broadcasts) and inside
// a worker thread (the throughput phase), so that publishing does not wait behind the subscribers' frames.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';

// Milliseconds since the epoch: the publisher's stamps and the subscribers' receipts are both taken with it.
export const nowMs = () => performance.timeOrigin + performance.now();

// t: {url, headers, channel, concurrency, envelope}; envelopeSeen: bytes the server wraps around `data`
// (measured on the warm-up broadcast), or null to estimate it from t.envelope. Returns
// {failures, firstError, lastDataBytes}.
export async function publishHttp(t, seq0, count, size, envelopeSeen, epoch) {
  let next = 0;
  let failures = 0;
  let firstError = null;
  let lastDataBytes = 0;
  const worker = async () => {
    while (next < count) {
      const seq = seq0 + next++;
      const data = { bseq: seq, bts: Math.round(nowMs() * 1000) / 1000, pad: '' };
      // Aim the delivered frame (the envelope the server wraps around `data`) at `size` bytes.
      const envelope = envelopeSeen ?? (t.envelope ? JSON.stringify({ ...t.envelope, data: null, offset: seq + 1, epoch }).length - 4 : 0);
      const bare = JSON.stringify(data).length;
      data.pad = 'x'.repeat(Math.max(0, size - envelope - bare));
      lastDataBytes = bare + data.pad.length;
      try {
        const res = await fetch(t.url, {
          method: 'POST', headers: { 'content-type': 'application/json', ...(t.headers || {}) },
          body: JSON.stringify({ channel: t.channel, data }),
        });
        if (!res.ok) { failures++; if (!firstError) firstError = `publish HTTP ${res.status} ${await res.text()}`; }
        else await res.arrayBuffer();
      } catch (e) { failures++; if (!firstError) firstError = `publish ${e.message}`; }
    }
  };
  await Promise.all(Array.from({ length: Math.min(t.concurrency || 1, count) }, worker));
  return { failures, firstError, lastDataBytes };
}

// As a worker: each message {seq0, count, size, envelopeSeen, epoch} publishes and answers with the result.
if (!isMainThread && workerData?.role === 'publisher') {
  parentPort.on('message', async (m) => {
    parentPort.postMessage(await publishHttp(workerData.trigger, m.seq0, m.count, m.size, m.envelopeSeen, m.epoch));
  });
}
