import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, fakeWebSocketClass, FakeClock } from '../test-support/fakes.mjs';
import { TidingsClient } from '../tidings.js';

function connected() {
  const env = setup();
  env.client.connect();
  env.last().establish();
  return env;
}

test('onMessage dispatches by type and to *, and its return value unsubscribes', () => {
  const { client, last } = connected();
  const typed = [];
  const all = [];
  const off = client.onMessage('publication', (m) => typed.push(m.offset));
  client.onMessage('*', (m) => all.push(m.type));
  last().receive({ type: 'publication', channel: 'c', data: {}, offset: 1, epoch: 'e' });
  last().receive({ type: 'pong' });
  off();
  last().receive({ type: 'publication', channel: 'c', data: {}, offset: 2, epoch: 'e' });
  assert.deepEqual(typed, [1]);
  assert.deepEqual(all, ['publication', 'pong', 'publication']);
});

test('a throwing message handler is reported and isolated', () => {
  const { client, last, eventsNamed } = connected();
  const seen = [];
  client.onMessage('publication', () => {
    throw new Error('boom');
  });
  client.onMessage('publication', (m) => seen.push(m.offset));
  last().receive({ type: 'publication', channel: 'c', data: {}, offset: 1, epoch: 'e' });
  last().receive({ type: 'publication', channel: 'c', data: {}, offset: 2, epoch: 'e' });
  assert.deepEqual(seen, [1, 2]);
  const errors = eventsNamed('error');
  assert.equal(errors.length, 2);
  assert.equal(errors[0].source, 'handler');
  assert.equal(errors[0].event, 'publication');
  assert.equal(errors[0].error.message, 'boom');
  assert.equal(client.state, 'connected');
});

test('a throwing event listener is isolated too, even an error listener', (t) => {
  const logged = t.mock.method(console, 'error', () => {});
  const { client, last, clock, eventsNamed } = setup();
  client.on('state', () => {
    throw new Error('listener bug');
  });
  client.on('error', () => {
    throw new Error('error listener bug');
  });
  client.connect();
  last().establish();
  assert.equal(client.state, 'connected');
  last().serverClose(1006);
  clock.advance(500);
  assert.equal(client.state, 'reconnecting');
  last().establish();
  assert.equal(client.state, 'connected');
  assert.ok(eventsNamed('error').some((e) => e.source === 'listener' && e.event === 'state'));
  assert.ok(logged.mock.callCount() > 0, 'a throwing error listener falls back to console.error');
});

test('without an error listener, handler failures go to console.error', (t) => {
  const logged = t.mock.method(console, 'error', () => {});
  const WS = fakeWebSocketClass();
  const clock = new FakeClock();
  const client = new TidingsClient('wss://hub.test/ws/authenticated', { token: 't', WebSocket: WS, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout });
  client.connect();
  WS.instances[0].establish();
  client.onMessage('pong', () => {
    throw new Error('unheard');
  });
  WS.instances[0].receive({ type: 'pong' });
  assert.equal(logged.mock.callCount(), 1);
  assert.equal(logged.mock.calls[0].arguments[1].message, 'unheard');
  assert.equal(client.state, 'connected');
});

test('invalid JSON and binary frames are reported; the connection stays up', () => {
  const { client, last, eventsNamed } = connected();
  last().receive('not json');
  last().onmessage({ data: new ArrayBuffer(2) });
  assert.deepEqual(eventsNamed('error').map((e) => e.source), ['parse', 'parse']);
  assert.equal(client.state, 'connected');
  assert.equal(last().closeCalls.length, 0);
});

test('handlers may call client methods re-entrantly', () => {
  const { client, last, clock } = connected();
  client.on('disconnected', () => client.disconnect());
  last().serverClose(1006);
  assert.equal(client.state, 'offline');
  clock.advance(60000);
  assert.equal(client.state, 'offline');
});
