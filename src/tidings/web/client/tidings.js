/**
 * Tidings browser client: one authenticated WebSocket to a Tidings server with reconnection (exponential
 * backoff and jitter), heartbeats, resubscription with history recovery, duplicate suppression, an offline
 * send queue and request/reply by id. No dependencies; runs in browsers and, with an injected WebSocket, in Node.
 *
 * The wire protocol is docs/protocol.md of the Tidings repository.
 * @module tidings-client
 */

import { backoffDelay } from './backoff.js';
import { CloseCode, closeAction, signsOut } from './close-codes.js';
import { Emitter } from './emitter.js';

export { backoffDelay } from './backoff.js';
export { CLOSE_CODES, CLOSE_RANGES, CloseCode, closeAction, closeInfo, signsOut } from './close-codes.js';

const OPEN = 1; // WebSocket.OPEN, spelled out so that injected implementations need not define it.

/**
 * Replies that may carry `channel` and `offset` but are not part of the channel's stream: they are never
 * dropped as duplicates and do not move the channel's position (a `publish_ack` arriving before the
 * publication itself must not hide it).
 */
const NOT_STREAM = new Set([
  'publish_ack',
  'subscription_confirmed',
  'subscription_error',
  'unsubscribed',
  'presence',
  'error',
  'pong',
  'connection_established',
]);

/** Reply types that make `request()` reject instead of resolve. */
const ERROR_REPLIES = new Set(['error', 'subscription_error']);

/**
 * @typedef {'idle' | 'connecting' | 'connected' | 'reconnecting' | 'offline'} ConnectionState
 */

/**
 * @typedef {object} TidingsClientOptions
 * @property {string | null | (() => string | null | undefined | Promise<string | null | undefined>)} [token]
 *   The JWT, or a function (possibly async) returning it; a function is called before every connect and
 *   reconnect, so it can fetch a fresh token. Sent as the WebSocket subprotocols `['bearer', token]`, never in
 *   the URL. Default: none (the server then closes with 1008).
 * @property {new (url: string, protocols?: string | string[]) => any} [WebSocket] - WebSocket constructor.
 *   Default: `globalThis.WebSocket`.
 * @property {number} [minReconnectDelay=500] - Base delay of the first reconnect attempt, ms.
 * @property {number} [maxReconnectDelay=30000] - Cap of every reconnect delay (after jitter), ms.
 * @property {number} [reconnectFactor=2] - Growth of the base delay per attempt (>= 1).
 * @property {number} [jitter=0.5] - Spread of each delay as a fraction of its base, 0..1: the delay is uniform
 *   in `[base * (1 - jitter), base * (1 + jitter))`, then capped at maxReconnectDelay.
 * @property {number} [maxReconnectAttempts=Infinity] - Consecutive failed attempts before giving up
 *   (state `offline`, a `terminal` event with `gaveUp: true`). 0 never reconnects.
 * @property {number} [pingInterval=25000] - Send `{"type":"ping"}` this often, ms. 0 disables the heartbeat.
 * @property {number} [pongTimeout=10000] - After a ping, the connection is considered dead when no message at
 *   all arrives within this time, ms: it is closed and the client reconnects.
 * @property {number} [connectTimeout=10000] - A connection attempt that has not received
 *   `connection_established` within this time is abandoned and retried, ms. 0 disables.
 * @property {number} [requestTimeout=10000] - Default timeout of `request()`, ms. 0 disables.
 * @property {number} [maxOfflineQueue=100] - Messages kept by `send()` while not connected; when full the
 *   oldest is dropped and `queue_overflow` is emitted.
 * @property {() => number} [random=Math.random] - Uniform random in [0, 1), for jitter.
 * @property {(fn: () => void, ms: number) => any} [setTimeout=globalThis.setTimeout]
 * @property {(handle: any) => void} [clearTimeout=globalThis.clearTimeout]
 * @property {() => number} [now=Date.now] - Clock in ms, for `lastMessageAt`.
 */

/** @type {Required<Omit<TidingsClientOptions, 'token' | 'WebSocket' | 'random' | 'setTimeout' | 'clearTimeout' | 'now'>>} */
const DEFAULTS = Object.freeze({
  minReconnectDelay: 500,
  maxReconnectDelay: 30000,
  reconnectFactor: 2,
  jitter: 0.5,
  maxReconnectAttempts: Infinity,
  pingInterval: 25000,
  pongTimeout: 10000,
  connectTimeout: 10000,
  requestTimeout: 10000,
  maxOfflineQueue: 100,
});

/** An error reported by the client: a failed request or subscription, a lost reply, a timeout. */
export class TidingsError extends Error {
  /**
   * @param {string} message
   * @param {{code?: string, reply?: object}} [details]
   */
  constructor(message, { code, reply } = {}) {
    super(message);
    this.name = 'TidingsError';
    /** Machine-readable code: the server's error code, or `timeout`, `connection_lost`, `dropped`, ... */
    this.code = code;
    /** The server's reply, when there was one. */
    this.reply = reply;
  }
}

function checkNumber(options, name, { min = 0, max = Infinity } = {}) {
  const value = options[name];
  if (typeof value !== 'number' || Number.isNaN(value) || value < min || value > max) {
    throw new RangeError(`options.${name} must be a number in [${min}, ${max}], got ${value}`);
  }
}

/** A promise whose rejection is not reported as unhandled when nobody awaits it. */
function quietPromise(executor) {
  const promise = new Promise(executor);
  promise.catch(() => {});
  return promise;
}

/** A client for one Tidings WebSocket connection that keeps itself connected. */
export class TidingsClient {
  #url;
  #opts;
  #WebSocket;
  #token;
  #random;
  #setTimeout;
  #clearTimeout;
  #now;

  #events;
  #messages;

  /** @type {ConnectionState} */
  #state = 'idle';
  #socket = null;
  /** Bumped by every connection attempt and by disconnect(); stale async work compares against it. */
  #generation = 0;
  /** Consecutive reconnect attempts since the last `connection_established`. */
  #attempt = 0;
  #established = false;
  #ready = null;

  /** Timer handles, null when not running. */
  #timers = { reconnect: null, connect: null, ping: null, pong: null };
  #lastMessageAt = null;

  /** Remembered subscriptions: channel -> {confirmed, confirmation, pending: [{resolve, reject}]}. */
  #channels = new Map();
  /** Last position seen per channel: channel -> {offset, epoch}. */
  #positions = new Map();
  /** Pending unsubscribe() promises: channel -> [resolve]. */
  #unsubscribing = new Map();
  /** Offline queue: [{message, text}]. */
  #queue = [];
  /** Pending request() promises: id -> {resolve, reject, timer, sent}. */
  #requests = new Map();
  #nextId = 0;
  /** The token of the current (or last) connection, and the one that expired (4003) when refreshing. */
  #tokenUsed = null;
  #expiredToken = null;

  /**
   * @param {string | URL} url - ws:// or wss:// URL of the server's `/ws/authenticated` endpoint.
   * @param {TidingsClientOptions} [options]
   */
  constructor(url, options = {}) {
    const href = String(url);
    if (!/^wss?:\/\//i.test(href)) throw new TypeError(`url must be a ws:// or wss:// URL, got ${href}`);
    this.#url = href;
    const opts = { ...DEFAULTS };
    for (const key of Object.keys(DEFAULTS)) if (options[key] !== undefined) opts[key] = options[key];
    checkNumber(opts, 'minReconnectDelay');
    checkNumber(opts, 'maxReconnectDelay', { min: opts.minReconnectDelay });
    checkNumber(opts, 'reconnectFactor', { min: 1 });
    checkNumber(opts, 'jitter', { max: 1 });
    for (const name of ['maxReconnectAttempts', 'pingInterval', 'pongTimeout', 'connectTimeout', 'requestTimeout', 'maxOfflineQueue']) {
      checkNumber(opts, name);
    }
    this.#opts = opts;
    this.#token = options.token;
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError('No WebSocket implementation: pass options.WebSocket');
    }
    this.#random = options.random ?? Math.random;
    this.#setTimeout = options.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms));
    this.#clearTimeout = options.clearTimeout ?? ((handle) => globalThis.clearTimeout(handle));
    this.#now = options.now ?? Date.now;
    this.#events = new Emitter((error, name) => this.#listenerFailed(error, { source: 'listener', event: name }));
    this.#messages = new Emitter((error, type) => this.#listenerFailed(error, { source: 'handler', event: type }));
  }

  // ---------------------------------------------------------------------------------------------- public API

  /** @returns {ConnectionState} The connection state. */
  get state() {
    return this.#state;
  }

  /** @returns {string} The server URL. */
  get url() {
    return this.#url;
  }

  /** @returns {string[]} The remembered subscriptions, resubscribed after every reconnect. */
  get subscriptions() {
    return [...this.#channels.keys()];
  }

  /** @returns {number} Messages waiting in the offline queue. */
  get queueSize() {
    return this.#queue.length;
  }

  /** @returns {number | null} `now()` when the last message arrived, or null. */
  get lastMessageAt() {
    return this.#lastMessageAt;
  }

  /**
   * The last position seen on a channel, as sent in `since` when resubscribing.
   * @param {string} channel
   * @returns {{offset: number, epoch: string | undefined} | undefined}
   */
  position(channel) {
    const pos = this.#positions.get(channel);
    return pos ? { ...pos } : undefined;
  }

  /**
   * Start connecting (from `idle` or `offline`); a no-op while already connecting or connected.
   * @returns {Promise<object>} Resolves with the `connection_established` message of the first successful
   *   connection; rejects when the client goes `offline` before that. Need not be awaited.
   */
  connect() {
    if (this.#state !== 'idle' && this.#state !== 'offline') return this.#ready.promise;
    let settle;
    const promise = quietPromise((resolve, reject) => (settle = { resolve, reject }));
    this.#ready = { promise, ...settle };
    this.#attempt = 0;
    const generation = this.#generation;
    this.#transition('connecting');
    if (generation === this.#generation) this.#dial(); // unless a state listener called disconnect()
    return promise;
  }

  /**
   * Close the connection and stop reconnecting (state `offline`). Remembered subscriptions and the offline
   * queue are kept for a later `connect()`.
   * @param {number} [code=1000] - Close code sent to the server (1000 or 3000–4999).
   * @param {string} [reason='']
   */
  disconnect(code = CloseCode.NORMAL, reason = '') {
    if (this.#state === 'idle' || this.#state === 'offline') return;
    const socket = this.#detachSocket();
    if (socket) {
      try {
        socket.close(code, reason);
      } catch {
        socket.close(); // a code the implementation refuses (not 1000 or 3000-4999)
      }
    }
    this.#connectionLost();
    this.#goOffline(code, reason, { code, reason, wasClean: true, willReconnect: false }, null);
  }

  /**
   * Send a message now when connected, else queue it (bounded; the oldest is dropped when full, with a
   * `queue_overflow` event). Queued messages are sent in order after the next `connection_established` and
   * resubscription.
   * @param {object} message - A protocol message, e.g. `{type: 'request_status'}`.
   * @returns {boolean} True when sent now, false when queued (or dropped).
   */
  send(message) {
    if (message === null || typeof message !== 'object') throw new TypeError('message must be an object');
    const entry = { message, text: JSON.stringify(message) };
    if (this.#isOpen() && this.#transmit(entry)) return true;
    this.#enqueue(entry);
    return false;
  }

  /**
   * Subscribe to a channel and remember it: it is resubscribed after every reconnect, with `since` set to the
   * last position seen so that missed publications are replayed.
   * @param {string} channel
   * @returns {Promise<object>} Resolves with the `subscription_confirmed` message; rejects with a TidingsError
   *   on `subscription_error` (the channel is then forgotten), on unsubscribe() or when the client goes
   *   offline first. Need not be awaited.
   */
  subscribe(channel) {
    if (typeof channel !== 'string' || channel === '') throw new TypeError('channel must be a non-empty string');
    let sub = this.#channels.get(channel);
    if (sub?.confirmed && this.#isOpen()) return Promise.resolve(sub.confirmation);
    if (!sub) {
      sub = { confirmed: false, confirmation: null, pending: [] };
      this.#channels.set(channel, sub);
      if (this.#isOpen()) this.#sendSubscribe(channel);
    }
    const target = sub;
    return quietPromise((resolve, reject) => target.pending.push({ resolve, reject }));
  }

  /**
   * Unsubscribe from a channel and forget it (and its position).
   * @param {string} channel
   * @returns {Promise<object | undefined>} Resolves with the `unsubscribed` reply, or with undefined when not
   *   connected or when the connection drops first (the subscription ended with it).
   */
  unsubscribe(channel) {
    if (typeof channel !== 'string' || channel === '') throw new TypeError('channel must be a non-empty string');
    const sub = this.#channels.get(channel);
    this.#channels.delete(channel);
    this.#positions.delete(channel);
    if (sub) {
      for (const { reject } of sub.pending) {
        reject(new TidingsError(`Unsubscribed from ${channel} before confirmation`, { code: 'unsubscribed' }));
      }
    }
    if (!this.#isOpen()) return Promise.resolve(undefined);
    return quietPromise((resolve) => {
      const waiting = this.#unsubscribing.get(channel) ?? [];
      waiting.push(resolve);
      this.#unsubscribing.set(channel, waiting);
      this.#transmit({ message: null, text: JSON.stringify({ type: 'unsubscribe', subscription: channel }) });
    });
  }

  /**
   * Publish to a channel (where clients may publish: `room:*`). Queued like `send()` while offline. Use
   * `request({type: 'publish', channel, data})` to wait for the `publish_ack`.
   * @param {string} channel
   * @param {unknown} data
   * @returns {boolean} As `send()`.
   */
  publish(channel, data) {
    if (typeof channel !== 'string' || channel === '') throw new TypeError('channel must be a non-empty string');
    return this.send({ type: 'publish', channel, data });
  }

  /**
   * Send a message with an `id` and wait for the reply echoing it. The id is assigned (`"r1"`, `"r2"`, ...)
   * unless the message has one. Queued like `send()` while offline.
   * @param {object} message
   * @param {{timeout?: number}} [options] - Timeout in ms (default: the `requestTimeout` option; 0 = none).
   * @returns {Promise<object>} Resolves with the reply; rejects with a TidingsError on an `error` or
   *   `subscription_error` reply (`code` = the server's code), on timeout (`timeout`), when the connection drops
   *   after it was sent (`connection_lost`) or when it is dropped from the offline queue (`dropped`).
   */
  request(message, { timeout = this.#opts.requestTimeout } = {}) {
    if (message === null || typeof message !== 'object') throw new TypeError('message must be an object');
    const id = message.id ?? `r${++this.#nextId}`;
    if (this.#requests.has(id)) throw new TypeError(`a request with id ${id} is already pending`);
    const full = { ...message, id };
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, timer: null, sent: false };
      this.#requests.set(id, entry);
      if (timeout > 0 && Number.isFinite(timeout)) {
        entry.timer = this.#setTimeout(() => {
          entry.timer = null;
          this.#settleRequest(id, new TidingsError(`Request ${id} timed out after ${timeout} ms`, { code: 'timeout' }));
        }, timeout);
      }
      try {
        this.send(full);
      } catch (error) {
        this.#settleRequest(id, error);
      }
    });
  }

  /**
   * Handle incoming messages of one `type` (`'*'` for every message), after duplicate suppression.
   * A handler that throws is reported as an `error` event and does not affect other handlers.
   * @param {string} type
   * @param {(message: any) => void} handler
   * @returns {() => void} Removes the handler.
   */
  onMessage(type, handler) {
    return this.#messages.on(type, handler);
  }

  /**
   * Listen to a client event: `state`, `connected`, `disconnected`, `reconnecting`, `terminal`, `error`,
   * `queue_overflow`, `recovery_failed`.
   * @param {string} event
   * @param {(payload: any) => void} listener
   * @returns {() => void} Removes the listener.
   */
  on(event, listener) {
    return this.#events.on(event, listener);
  }

  // ---------------------------------------------------------------------------------------------- connection

  #dial() {
    const generation = ++this.#generation;
    let token;
    try {
      token = typeof this.#token === 'function' ? this.#token() : this.#token;
    } catch (error) {
      this.#tokenFailed(generation, error);
      return;
    }
    if (token && typeof token.then === 'function') {
      token.then(
        (value) => this.#open(generation, value),
        (error) => this.#tokenFailed(generation, error),
      );
    } else {
      this.#open(generation, token);
    }
  }

  #tokenFailed(generation, error) {
    if (generation !== this.#generation) return;
    this.#emit('error', { source: 'token', error });
    if (generation === this.#generation) this.#closed(CloseCode.ABNORMAL, 'Token unavailable', false);
  }

  #open(generation, token) {
    if (generation !== this.#generation) return; // disconnect() or another attempt happened meanwhile
    if (this.#expiredToken !== null && token === this.#expiredToken) {
      // The token function gave the token that expired again: no way back in without signing in.
      const reason = 'Token expired';
      this.#expiredToken = null;
      this.#goOffline(CloseCode.TOKEN_EXPIRED, reason, null, { code: CloseCode.TOKEN_EXPIRED, reason, signIn: true });
      return;
    }
    this.#tokenUsed = token ?? null;
    this.#expiredToken = null;
    let socket;
    try {
      socket = token ? new this.#WebSocket(this.#url, ['bearer', String(token)]) : new this.#WebSocket(this.#url);
    } catch (error) {
      // A bad URL or a token that is not a valid subprotocol: retrying cannot help.
      this.#emit('error', { source: 'socket', error });
      if (generation !== this.#generation) return;
      const reason = String(error?.message ?? error);
      this.#goOffline(undefined, reason, null, { code: undefined, reason });
      return;
    }
    this.#socket = socket;
    socket.onopen = () => {
      if (socket === this.#socket) this.#startHeartbeat();
    };
    socket.onmessage = (event) => {
      if (socket === this.#socket) this.#received(event.data);
    };
    socket.onerror = (event) => {
      if (socket === this.#socket) this.#emit('error', { source: 'socket', error: event });
    };
    socket.onclose = (event) => {
      if (socket !== this.#socket) return;
      this.#detachSocket();
      this.#closed(event?.code ?? CloseCode.ABNORMAL, event?.reason ?? '', Boolean(event?.wasClean));
    };
    if (this.#opts.connectTimeout > 0) {
      this.#timers.connect = this.#setTimeout(() => {
        this.#timers.connect = null;
        this.#abandon('Connect timeout');
      }, this.#opts.connectTimeout);
    }
  }

  /** Give up on an unresponsive socket without waiting for its close event, and reconnect. */
  #abandon(reason) {
    const socket = this.#detachSocket();
    if (!socket) return;
    try {
      socket.close();
    } catch {
      // already closing
    }
    this.#closed(CloseCode.ABNORMAL, reason, false);
  }

  /** Stop using the current socket: clear its timers and handlers. Returns it. */
  #detachSocket() {
    const socket = this.#socket;
    this.#socket = null;
    this.#established = false;
    this.#clearTimer('connect');
    this.#clearTimer('ping');
    this.#clearTimer('pong');
    if (socket) socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
    return socket;
  }

  /** The connection is gone: fail what was waiting on it. */
  #connectionLost() {
    for (const sub of this.#channels.values()) sub.confirmed = false;
    for (const waiting of this.#unsubscribing.values()) for (const resolve of waiting) resolve(undefined);
    this.#unsubscribing.clear();
    for (const [id, entry] of [...this.#requests]) {
      if (entry.sent) {
        this.#settleRequest(id, new TidingsError(`Connection lost before the reply to ${id}`, { code: 'connection_lost' }));
      }
    }
  }

  /** The socket closed (or was abandoned) with `code`: stop, report or reconnect. */
  #closed(code, reason, wasClean) {
    this.#connectionLost();
    let action = closeAction(code, reason);
    if (action === 'refresh') {
      // The token expired: only a token function can give a new one (the same one again ends in terminal).
      if (typeof this.#token === 'function' && this.#tokenUsed !== null) this.#expiredToken = this.#tokenUsed;
      else action = 'terminal';
    }
    const retry = action === 'reconnect' || action === 'pause' || action === 'refresh';
    if (retry && this.#attempt < this.#opts.maxReconnectAttempts) {
      this.#attempt++;
      const delay = action === 'refresh' ? 0 : backoffDelay(action === 'pause' ? Infinity : this.#attempt, {
        minDelay: this.#opts.minReconnectDelay,
        maxDelay: this.#opts.maxReconnectDelay,
        factor: this.#opts.reconnectFactor,
        jitter: this.#opts.jitter,
        random: this.#random,
      });
      this.#timers.reconnect = this.#setTimeout(() => {
        this.#timers.reconnect = null;
        this.#dial();
      }, delay);
      this.#transition('reconnecting', code, reason, [
        ['disconnected', { code, reason, wasClean, willReconnect: true }],
        ['reconnecting', { attempt: this.#attempt, delay, code, reason }],
      ]);
      return;
    }
    let terminal = null;
    if (retry) terminal = { code, reason, gaveUp: true, attempts: this.#attempt };
    else if (action === 'terminal') terminal = { code, reason, signIn: signsOut(code, reason) };
    this.#goOffline(code, reason, { code, reason, wasClean, willReconnect: false }, terminal);
  }

  /**
   * Enter `offline`: no socket, no timers, pending subscriptions and connect() rejected. Emits `state`, then
   * `disconnected` (when a connection ended) and `terminal` (when the client gave up or was refused).
   */
  #goOffline(code, reason, disconnected, terminal) {
    this.#clearTimer('reconnect');
    this.#detachSocket();
    this.#generation++; // invalidates a pending token fetch
    const error = new TidingsError(`Client went offline${reason ? `: ${reason}` : ''}`, { code: 'offline' });
    for (const sub of this.#channels.values()) {
      for (const { reject } of sub.pending) reject(error);
      sub.pending = [];
    }
    this.#ready?.reject(error);
    const events = [];
    if (disconnected) events.push(['disconnected', disconnected]);
    if (terminal) events.push(['terminal', terminal]);
    this.#transition('offline', code, reason, events);
  }

  /**
   * Set the state first, then emit `state` and `events` in order. A listener may call connect() or
   * disconnect(); the remaining events of this transition are then dropped as outdated.
   */
  #transition(state, code, reason, events = []) {
    const previous = this.#state;
    this.#state = state;
    const generation = this.#generation;
    if (previous !== state) this.#emit('state', { state, previous, code, reason });
    for (const [name, payload] of events) {
      if (generation !== this.#generation) return;
      this.#emit(name, payload);
    }
  }

  #isOpen() {
    return this.#established && this.#socket !== null && this.#socket.readyState === OPEN;
  }

  // ---------------------------------------------------------------------------------------------- heartbeat

  #startHeartbeat() {
    if (!(this.#opts.pingInterval > 0) || !Number.isFinite(this.#opts.pingInterval)) return;
    this.#timers.ping = this.#setTimeout(() => {
      this.#timers.ping = null;
      if (!this.#socket) return;
      this.#transmit({ message: null, text: '{"type":"ping"}' });
      if (this.#timers.pong === null && this.#opts.pongTimeout > 0) {
        this.#timers.pong = this.#setTimeout(() => {
          this.#timers.pong = null;
          this.#abandon('Heartbeat timeout');
        }, this.#opts.pongTimeout);
      }
      this.#startHeartbeat();
    }, this.#opts.pingInterval);
  }

  // ---------------------------------------------------------------------------------------------- inbound

  #received(data) {
    this.#lastMessageAt = this.#now();
    this.#clearTimer('pong'); // any message proves the connection alive
    if (typeof data !== 'string') {
      this.#emit('error', { source: 'parse', error: new TidingsError('Binary frame ignored', { code: 'binary' }) });
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch (error) {
      this.#emit('error', { source: 'parse', error, data });
      return;
    }
    if (message === null || typeof message !== 'object' || Array.isArray(message)) {
      this.#emit('error', { source: 'parse', error: new TidingsError('Message is not an object'), data });
      return;
    }
    this.#handle(message);
  }

  #handle(message) {
    if (!this.#advance(message)) return; // duplicate or stale
    switch (message.type) {
      case 'connection_established':
        if (!this.#established) this.#onEstablished(message);
        break;
      case 'subscription_confirmed':
        this.#onConfirmed(message);
        break;
      case 'subscription_error':
        this.#onSubscriptionError(message);
        break;
      case 'unsubscribed': {
        const waiting = this.#unsubscribing.get(message.subscription);
        this.#unsubscribing.delete(message.subscription);
        for (const resolve of waiting ?? []) resolve(message);
        break;
      }
      default:
        break;
    }
    if (message.id !== undefined && message.id !== null && this.#requests.has(message.id)) {
      const failed = ERROR_REPLIES.has(message.type);
      this.#settleRequest(
        message.id,
        failed ? new TidingsError(message.message ?? message.type, { code: message.code, reply: message }) : null,
        message,
      );
    }
    this.#messages.emit(message.type, message);
    this.#messages.emit('*', message);
  }

  /**
   * Duplicate suppression and position tracking: a stream message (`channel` + integer `offset`) whose offset
   * is not above the last one seen on its channel in the same epoch is dropped; a new epoch starts afresh.
   * @returns {boolean} False when the message must be dropped.
   */
  #advance(message) {
    const { channel, offset } = message;
    if (typeof channel !== 'string' || !Number.isInteger(offset) || NOT_STREAM.has(message.type)) return true;
    const last = this.#positions.get(channel);
    const epoch = message.epoch !== undefined ? message.epoch : last?.epoch;
    if (last && last.epoch === epoch && offset <= last.offset) return false;
    this.#positions.set(channel, { offset, epoch });
    return true;
  }

  #onEstablished(message) {
    this.#established = true;
    this.#attempt = 0;
    this.#clearTimer('connect');
    for (const channel of this.#channels.keys()) this.#sendSubscribe(channel);
    while (this.#queue.length > 0 && this.#isOpen()) {
      if (!this.#transmit(this.#queue[0])) break;
      this.#queue.shift();
    }
    this.#ready?.resolve(message);
    this.#transition('connected', undefined, undefined, [['connected', message]]);
  }

  #sendSubscribe(channel) {
    const message = { type: 'subscribe', subscription: channel };
    const pos = this.#positions.get(channel);
    if (pos && pos.epoch !== undefined) message.since = { offset: pos.offset, epoch: pos.epoch };
    this.#transmit({ message: null, text: JSON.stringify(message) });
  }

  #onConfirmed(message) {
    const channel = message.subscription;
    const sub = this.#channels.get(channel);
    if (!sub) return;
    // The confirmation tells where the stream stands; never move backwards within an epoch.
    if (Number.isInteger(message.offset) && message.epoch !== undefined) {
      const last = this.#positions.get(channel);
      if (!last || last.epoch !== message.epoch || message.offset > last.offset) {
        this.#positions.set(channel, { offset: message.offset, epoch: message.epoch });
      }
    }
    sub.confirmed = true;
    sub.confirmation = message;
    const pending = sub.pending;
    sub.pending = [];
    for (const { resolve } of pending) resolve(message);
    if (message.recovered === false) this.#emit('recovery_failed', { channel, offset: message.offset, epoch: message.epoch });
  }

  #onSubscriptionError(message) {
    const channel = message.subscription;
    const sub = this.#channels.get(channel);
    if (!sub) return;
    this.#channels.delete(channel);
    const error = new TidingsError(message.message ?? `Cannot subscribe to ${channel}`, { code: message.code, reply: message });
    for (const { reject } of sub.pending) reject(error);
  }

  // ---------------------------------------------------------------------------------------------- outbound

  /** Write one message to the socket; false when that failed (the caller queues it). */
  #transmit(entry) {
    const socket = this.#socket;
    if (!socket || socket.readyState !== OPEN) return false;
    try {
      socket.send(entry.text);
    } catch (error) {
      this.#emit('error', { source: 'send', error });
      return false;
    }
    const id = entry.message?.id;
    if (id !== undefined && id !== null) {
      const request = this.#requests.get(id);
      if (request) request.sent = true;
    }
    return true;
  }

  #enqueue(entry) {
    this.#queue.push(entry);
    while (this.#queue.length > this.#opts.maxOfflineQueue) {
      const dropped = this.#queue.shift();
      const id = dropped.message?.id;
      if (id !== undefined && id !== null && this.#requests.has(id)) {
        this.#settleRequest(id, new TidingsError(`Request ${id} dropped from the offline queue`, { code: 'dropped' }));
      }
      this.#emit('queue_overflow', { dropped: dropped.message, queued: this.#queue.length });
    }
  }

  #settleRequest(id, error, reply) {
    const entry = this.#requests.get(id);
    if (!entry) return;
    this.#requests.delete(id);
    if (entry.timer !== null) this.#clearTimeout(entry.timer);
    if (error) entry.reject(error);
    else entry.resolve(reply);
  }

  // ---------------------------------------------------------------------------------------------- helpers

  #emit(event, payload) {
    this.#events.emit(event, payload);
  }

  #listenerFailed(error, details) {
    const recursive = details.source === 'listener' && details.event === 'error';
    if (!recursive && this.#events.has('error')) this.#emit('error', { ...details, error });
    else if (typeof console !== 'undefined') console.error('tidings-client: a handler threw', error);
  }

  #clearTimer(name) {
    if (this.#timers[name] !== null) this.#clearTimeout(this.#timers[name]);
    this.#timers[name] = null;
  }
}

export default TidingsClient;
