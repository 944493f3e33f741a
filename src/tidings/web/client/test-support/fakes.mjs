/**
 * Test doubles: a fake WebSocket, a fake clock and a scripted random source, plus a client factory wiring them.
 */
import { TidingsClient } from '../tidings.js';

/** A WebSocket stand-in driven by the test: open(), receive(), serverClose(). */
export class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = FakeWebSocket.CONNECTING;
    /** Parsed messages the client sent. */
    this.sent = [];
    /** Arguments of every close() call by the client. */
    this.closeCalls = [];
    this.onopen = this.onmessage = this.onerror = this.onclose = null;
    this.constructor.instances.push(this);
  }

  send(text) {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error('InvalidStateError: not open');
    this.sent.push(JSON.parse(text));
  }

  close(code, reason) {
    this.closeCalls.push({ code, reason });
    this.readyState = FakeWebSocket.CLOSING;
  }

  // --- driven by the test ---
  open() {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.({ type: 'open' });
  }

  receive(message) {
    this.onmessage?.({ data: typeof message === 'string' ? message : JSON.stringify(message) });
  }

  establish(extra = {}) {
    this.open();
    this.receive({ type: 'connection_established', user_id: 7, username: 'ann', channels: ['broadcast', 'user:7'], ...extra });
  }

  serverClose(code, reason = '', wasClean = true) {
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.({ code, reason, wasClean });
  }

  sentOfType(type) {
    return this.sent.filter((m) => m.type === type);
  }
}

/** A fresh FakeWebSocket subclass with its own list of instances. */
export function fakeWebSocketClass() {
  return class extends FakeWebSocket {
    static instances = [];
  };
}

/** Manual clock: timers run only when advance() passes their due time. */
export class FakeClock {
  #now = 0;
  #nextId = 1;
  #timers = new Map();

  now = () => this.#now;

  setTimeout = (fn, ms) => {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), fn, ms });
    return id;
  };

  clearTimeout = (id) => {
    this.#timers.delete(id);
  };

  /** Delays (as scheduled) of the timers still pending, in due order. */
  pending() {
    return [...this.#timers.values()].sort((a, b) => a.at - b.at).map((t) => t.ms);
  }

  advance(ms) {
    const target = this.#now + ms;
    for (;;) {
      let nextId = null;
      let next = null;
      for (const [id, timer] of this.#timers) {
        if (timer.at <= target && (next === null || timer.at < next.at)) {
          nextId = id;
          next = timer;
        }
      }
      if (next === null) break;
      this.#timers.delete(nextId);
      this.#now = next.at;
      next.fn();
    }
    this.#now = target;
  }
}

/** A client wired to fakes; `rand.value` is what random() returns. */
export function setup(options = {}) {
  const WS = fakeWebSocketClass();
  const clock = new FakeClock();
  const rand = { value: 0.5, calls: 0 };
  const events = [];
  const client = new TidingsClient('ws://hub.test/ws/authenticated', {
    token: 'tok',
    WebSocket: WS,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => {
      rand.calls++;
      return rand.value;
    },
    ...options,
  });
  for (const name of ['state', 'connected', 'disconnected', 'reconnecting', 'terminal', 'error', 'queue_overflow', 'recovery_failed']) {
    client.on(name, (payload) => events.push({ name, payload }));
  }
  const last = () => WS.instances[WS.instances.length - 1];
  const eventsNamed = (name) => events.filter((e) => e.name === name).map((e) => e.payload);
  return { client, WS, clock, rand, events, eventsNamed, last };
}

/** Let pending promise callbacks run. */
export const flush = () => new Promise((resolve) => setImmediate(resolve));
