import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, flush } from '../test-support/fakes.mjs';
import TidingsDefault, { TidingsClient } from '../tidings.js';

test('default export is the class', () => {
  assert.equal(TidingsDefault, TidingsClient);
});

test('token goes in the subprotocols, never in the URL', () => {
  const { client, WS } = setup({ token: 'secret.jwt.value' });
  client.connect();
  assert.equal(WS.instances.length, 1);
  assert.deepEqual(WS.instances[0].protocols, ['bearer', 'secret.jwt.value']);
  assert.equal(WS.instances[0].url, 'ws://hub.test/ws/authenticated');
  assert.ok(!WS.instances[0].url.includes('secret'));
});

test('no token: no subprotocols', () => {
  const { client, WS } = setup({ token: undefined });
  client.connect();
  assert.equal(WS.instances[0].protocols, undefined);
});

test('rejects non-ws URLs and missing WebSocket', () => {
  assert.throws(() => new TidingsClient('http://x/ws', { WebSocket: class {} }), TypeError);
  assert.throws(() => new TidingsClient('ws://x/ws', { WebSocket: null }), TypeError);
  assert.throws(() => new TidingsClient('ws://x/ws', { WebSocket: class {}, jitter: 2 }), RangeError);
});

test('token function is called before every connect and may be async', async () => {
  let n = 0;
  const { client, WS, clock } = setup({ token: async () => `tok${++n}` });
  client.connect();
  assert.equal(WS.instances.length, 0, 'waits for the token');
  await flush();
  assert.deepEqual(WS.instances[0].protocols, ['bearer', 'tok1']);
  WS.instances[0].establish();
  WS.instances[0].serverClose(1001, 'going away');
  clock.advance(30000);
  await flush();
  assert.equal(WS.instances.length, 2);
  assert.deepEqual(WS.instances[1].protocols, ['bearer', 'tok2']);
});

test('a failing token function is reported and retried with backoff', async () => {
  let fail = true;
  const { client, WS, clock, eventsNamed } = setup({
    token: () => {
      if (fail) throw new Error('auth server down');
      return 'fresh';
    },
  });
  client.connect();
  assert.equal(WS.instances.length, 0);
  assert.equal(eventsNamed('error')[0].source, 'token');
  assert.equal(client.state, 'reconnecting');
  fail = false;
  clock.advance(500);
  assert.equal(WS.instances.length, 1);
  assert.deepEqual(WS.instances[0].protocols, ['bearer', 'fresh']);
});

test('backoff grows exponentially, is capped, and timers fire at those delays', () => {
  const { client, WS, clock, eventsNamed } = setup({ maxReconnectDelay: 5000 });
  client.connect();
  const expected = [500, 1000, 2000, 4000, 5000, 5000];
  for (const delay of expected) {
    const count = WS.instances.length;
    WS.instances[count - 1].serverClose(1006, '', false);
    clock.advance(delay - 1);
    assert.equal(WS.instances.length, count, `no reconnect before ${delay} ms`);
    clock.advance(1);
    assert.equal(WS.instances.length, count + 1, `reconnect at ${delay} ms`);
  }
  assert.deepEqual(eventsNamed('reconnecting').map((e) => e.delay), expected);
  assert.deepEqual(eventsNamed('reconnecting').map((e) => e.attempt), [1, 2, 3, 4, 5, 6]);
});

test('jitter in the client: random 0 and ~1 give the bounds of ±50%', () => {
  const { client, WS, rand, eventsNamed } = setup();
  client.connect();
  rand.value = 0;
  WS.instances[0].serverClose(1006);
  assert.equal(eventsNamed('reconnecting')[0].delay, 250);
  client.disconnect();
  rand.value = 0.9999;
  client.connect();
  WS.instances[1].serverClose(1006);
  assert.equal(eventsNamed('reconnecting')[1].delay, 750);
  assert.ok(rand.calls >= 2);
});

test('attempt counter resets after connection_established, not after a bare open', () => {
  const { client, WS, clock, eventsNamed } = setup();
  client.connect();
  WS.instances[0].serverClose(1006);
  clock.advance(500);
  WS.instances[1].open(); // opened, but never established
  WS.instances[1].serverClose(1011);
  clock.advance(1000);
  WS.instances[2].establish();
  assert.equal(client.state, 'connected');
  WS.instances[2].serverClose(1001);
  assert.deepEqual(eventsNamed('reconnecting').map((e) => e.delay), [500, 1000, 500]);
});

for (const code of [1001, 1006, 1011, 1013, 4000, 4001]) {
  test(`close code ${code} reconnects`, () => {
    const { client, WS, clock, eventsNamed } = setup();
    client.connect();
    WS.instances[0].establish();
    WS.instances[0].serverClose(code, 'bye');
    assert.equal(client.state, 'reconnecting');
    assert.deepEqual(eventsNamed('disconnected').at(-1), { code, reason: 'bye', wasClean: true, willReconnect: true });
    assert.equal(eventsNamed('terminal').length, 0);
    clock.advance(500);
    assert.equal(WS.instances.length, 2);
    WS.instances[1].establish();
    assert.equal(client.state, 'connected');
  });
}

test('close code 4002 (rate limited) reconnects after the longest delay', () => {
  const { client, WS, clock, eventsNamed } = setup();
  client.connect();
  WS.instances[0].establish();
  WS.instances[0].serverClose(4002, 'rate limited');
  assert.equal(eventsNamed('reconnecting')[0].delay, 30000);
  clock.advance(29999);
  assert.equal(WS.instances.length, 1);
  clock.advance(1);
  assert.equal(WS.instances.length, 2);
});

test('close 1008 "Too many connections" is retried after the longest delay, not terminal', () => {
  const { client, WS, clock, eventsNamed } = setup();
  client.connect();
  WS.instances[0].open();
  WS.instances[0].serverClose(1008, 'Too many connections');
  assert.equal(client.state, 'reconnecting');
  assert.equal(eventsNamed('terminal').length, 0);
  assert.equal(eventsNamed('reconnecting')[0].delay, 30000);
  clock.advance(30000);
  assert.equal(WS.instances.length, 2);
  WS.instances[1].establish();
  assert.equal(client.state, 'connected');
});

for (const [code, reason, signIn] of [[1008, 'Invalid token', true], [1008, 'Origin not allowed', false], [1009, 'Message too big', false], [4500, 'custom', false], [4999, 'custom', false]]) {
  test(`close code ${code} (${reason}) is terminal: offline, terminal event, never retried`, () => {
    const { client, WS, clock, eventsNamed } = setup();
    client.connect();
    WS.instances[0].open();
    WS.instances[0].serverClose(code, reason);
    assert.equal(client.state, 'offline');
    assert.deepEqual(eventsNamed('terminal'), [{ code, reason, signIn }]);
    assert.equal(eventsNamed('reconnecting').length, 0);
    assert.deepEqual(clock.pending(), []);
    clock.advance(10 * 60 * 1000);
    assert.equal(WS.instances.length, 1);
    const last = eventsNamed('state').at(-1);
    assert.deepEqual(last, { state: 'offline', previous: 'connecting', code, reason });
  });
}

test('server close 1000 stops quietly (offline, no terminal event)', () => {
  const { client, WS, clock, eventsNamed } = setup();
  client.connect();
  WS.instances[0].establish();
  WS.instances[0].serverClose(1000, 'done');
  assert.equal(client.state, 'offline');
  assert.equal(eventsNamed('terminal').length, 0);
  clock.advance(60000);
  assert.equal(WS.instances.length, 1);
});

test('disconnect() closes with 1000, goes offline and never reconnects', () => {
  const { client, WS, clock, eventsNamed } = setup();
  client.connect();
  WS.instances[0].establish();
  client.disconnect();
  assert.deepEqual(WS.instances[0].closeCalls, [{ code: 1000, reason: '' }]);
  assert.equal(client.state, 'offline');
  WS.instances[0].serverClose(1006); // a late close event from the old socket is ignored
  clock.advance(60000);
  assert.equal(WS.instances.length, 1);
  assert.equal(eventsNamed('reconnecting').length, 0);
  assert.deepEqual(eventsNamed('disconnected').at(-1), { code: 1000, reason: '', wasClean: true, willReconnect: false });
});

test('disconnect() during the backoff wait cancels the reconnect; connect() restarts', () => {
  const { client, WS, clock } = setup();
  client.connect();
  WS.instances[0].serverClose(1006);
  client.disconnect();
  clock.advance(60000);
  assert.equal(WS.instances.length, 1);
  client.connect();
  assert.equal(WS.instances.length, 2);
  assert.equal(client.state, 'connecting');
});

test('disconnect() while an async token is pending opens no socket', async () => {
  const { client, WS } = setup({ token: async () => 'later' });
  client.connect();
  client.disconnect();
  await flush();
  assert.equal(WS.instances.length, 0);
  assert.equal(client.state, 'offline');
});

test('maxReconnectAttempts: gives up with a terminal event', () => {
  const { client, WS, clock, eventsNamed } = setup({ maxReconnectAttempts: 2 });
  client.connect();
  WS.instances[0].serverClose(1006);
  clock.advance(500);
  WS.instances[1].serverClose(1006);
  clock.advance(1000);
  WS.instances[2].serverClose(1006, 'nope');
  assert.equal(client.state, 'offline');
  assert.deepEqual(eventsNamed('terminal'), [{ code: 1006, reason: 'nope', gaveUp: true, attempts: 2 }]);
  clock.advance(60000);
  assert.equal(WS.instances.length, 3);
});

test('state events carry state, previous, code and reason', () => {
  const { client, WS, clock, eventsNamed } = setup();
  assert.equal(client.state, 'idle');
  client.connect();
  WS.instances[0].establish();
  WS.instances[0].serverClose(1001, 'restart');
  clock.advance(500);
  WS.instances[1].establish();
  client.disconnect();
  assert.deepEqual(eventsNamed('state'), [
    { state: 'connecting', previous: 'idle', code: undefined, reason: undefined },
    { state: 'connected', previous: 'connecting', code: undefined, reason: undefined },
    { state: 'reconnecting', previous: 'connected', code: 1001, reason: 'restart' },
    { state: 'connected', previous: 'reconnecting', code: undefined, reason: undefined },
    { state: 'offline', previous: 'connected', code: 1000, reason: '' },
  ]);
  assert.equal(eventsNamed('connected').length, 2);
  assert.equal(eventsNamed('connected')[0].username, 'ann');
});

test('connect() resolves with connection_established and rejects on terminal', async () => {
  const a = setup();
  const ready = a.client.connect();
  a.WS.instances[0].establish();
  assert.equal((await ready).type, 'connection_established');
  const b = setup();
  const failing = b.client.connect();
  b.WS.instances[0].serverClose(1008, 'Invalid token');
  await assert.rejects(failing, { name: 'TidingsError', code: 'offline' });
});

test('connect timeout abandons a socket that never establishes', () => {
  const { client, WS, clock, eventsNamed } = setup({ connectTimeout: 3000 });
  client.connect();
  clock.advance(3000);
  assert.equal(WS.instances[0].closeCalls.length, 1);
  assert.equal(eventsNamed('disconnected')[0].reason, 'Connect timeout');
  clock.advance(500);
  assert.equal(WS.instances.length, 2);
});

// ---- token expiry (4003): "sign in again", never a reconnect loop -------------------------------------------

test('4003 token expired with a static token: terminal, sign in again, no reconnect', () => {
  const { client, WS, clock, eventsNamed } = setup({ token: 'old.jwt' });
  client.connect();
  WS.instances[0].establish();
  WS.instances[0].serverClose(4003, 'Token expired');
  assert.equal(client.state, 'offline');
  assert.deepEqual(eventsNamed('terminal'), [{ code: 4003, reason: 'Token expired', signIn: true }]);
  clock.advance(10 * 60 * 1000);
  assert.equal(WS.instances.length, 1);
});

test('4003 with a token function that returns the same token: terminal after no new socket', async () => {
  const { client, WS, clock, eventsNamed } = setup({ token: () => 'old.jwt' });
  client.connect();
  WS.instances[0].establish();
  WS.instances[0].serverClose(4003, 'Token expired');
  clock.advance(0);
  await flush();
  assert.equal(client.state, 'offline');
  assert.equal(WS.instances.length, 1, 'the expired token is never sent again');
  assert.deepEqual(eventsNamed('terminal'), [{ code: 4003, reason: 'Token expired', signIn: true }]);
  clock.advance(10 * 60 * 1000);
  assert.equal(WS.instances.length, 1);
});

test('4003 with a token function that returns a fresh token: reconnects at once with it', async () => {
  let n = 0;
  const { client, WS, clock, eventsNamed } = setup({ token: () => `tok${++n}` });
  client.connect();
  WS.instances[0].establish();
  WS.instances[0].serverClose(4003, 'Token expired');
  clock.advance(0);
  await flush();
  assert.equal(WS.instances.length, 2);
  assert.deepEqual(WS.instances[1].protocols, ['bearer', 'tok2']);
  WS.instances[1].establish();
  assert.equal(client.state, 'connected');
  assert.equal(eventsNamed('terminal').length, 0);
});

test('a fresh token that the server refuses as expired (1008) ends in sign in again', async () => {
  let n = 0;
  const { client, WS, clock, eventsNamed } = setup({ token: () => `tok${++n}` });
  client.connect();
  WS.instances[0].establish();
  WS.instances[0].serverClose(4003, 'Token expired');
  clock.advance(0);
  await flush();
  WS.instances[1].open();
  WS.instances[1].serverClose(1008, 'Token expired');
  assert.equal(client.state, 'offline');
  assert.deepEqual(eventsNamed('terminal'), [{ code: 1008, reason: 'Token expired', signIn: true }]);
  clock.advance(10 * 60 * 1000);
  assert.equal(WS.instances.length, 2);
});
