// A baseline on Node's `ws` library: `node bench/ws_node_server.mjs <port>`.
//
// Subscribers connect to `/`; the load client asks for broadcasts on `/control` with
// `{"publish": K, "seq0": S, "size": B, "t": ms?}` (the protocol of bench/ws_broadcast_server.py) and gets
// `{"done": K}` once the K messages were written to every subscriber. Each message is serialised once and sent
// to every open subscriber with `ws.send()` (compression off), yielding to the event loop between messages, as
// the websockets baseline does.
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2]);
const subscribers = new Set();

function message(seq, ts, size) {
  const bare = JSON.stringify({ bseq: seq, bts: Math.round(ts * 1000) / 1000, pad: '' });
  return JSON.stringify({ bseq: seq, bts: Math.round(ts * 1000) / 1000, pad: 'x'.repeat(Math.max(0, size - bare.length)) });
}

const nowMs = () => performance.timeOrigin + performance.now();
const tick = () => new Promise((resolve) => setImmediate(resolve));

const wss = new WebSocketServer({ port, host: '127.0.0.1', perMessageDeflate: false, backlog: 4096 });
wss.on('connection', (ws, req) => {
  if (req.url === '/control') {
    ws.on('message', async (data) => {
      const r = JSON.parse(String(data));
      const count = Number(r.publish);
      const seq0 = Number(r.seq0 ?? 0);
      const size = Number(r.size ?? 64);
      for (let seq = seq0; seq < seq0 + count; seq++) {
        const text = message(seq, r.t ?? nowMs(), size);
        for (const sub of subscribers) if (sub.readyState === 1) sub.send(text);
        await tick();
      }
      ws.send(JSON.stringify({ done: count }));
    });
    return;
  }
  subscribers.add(ws);
  ws.on('close', () => subscribers.delete(ws));
  ws.on('error', () => subscribers.delete(ws));
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { wss.close(); process.exit(0); });
