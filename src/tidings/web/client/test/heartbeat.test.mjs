import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup } from '../test-support/fakes.mjs';

test('a ping is sent every pingInterval', () => {
  const { client, WS, clock } = setup({ pingInterval: 1000, pongTimeout: 500 });
  client.connect();
  const ws = WS.instances[0];
  ws.establish();
  clock.advance(999);
  assert.equal(ws.sentOfType('ping').length, 0);
  clock.advance(1);
  assert.equal(ws.sentOfType('ping').length, 1);
  ws.receive({ type: 'pong', timestamp: 1 });
  clock.advance(1000);
  ws.receive({ type: 'pong', timestamp: 2 });
  clock.advance(1000);
  assert.equal(ws.sentOfType('ping').length, 3);
  assert.deepEqual(ws.sentOfType('ping')[0], { type: 'ping' });
});

test('no message within pongTimeout after a ping: close and reconnect', () => {
  const { client, WS, clock, eventsNamed } = setup({ pingInterval: 1000, pongTimeout: 500 });
  client.connect();
  const ws = WS.instances[0];
  ws.establish();
  clock.advance(1000); // ping
  clock.advance(499);
  assert.equal(ws.closeCalls.length, 0);
  clock.advance(1); // pong timeout
  assert.equal(ws.closeCalls.length, 1);
  assert.equal(client.state, 'reconnecting');
  assert.deepEqual(eventsNamed('disconnected')[0], { code: 1006, reason: 'Heartbeat timeout', wasClean: false, willReconnect: true });
  ws.serverClose(1006); // the dead socket's eventual close event changes nothing
  assert.equal(eventsNamed('disconnected').length, 1);
  clock.advance(500);
  assert.equal(WS.instances.length, 2);
});

test('any message (not only pong) counts as proof of life', () => {
  const { client, WS, clock } = setup({ pingInterval: 1000, pongTimeout: 500 });
  client.connect();
  const ws = WS.instances[0];
  ws.establish();
  clock.advance(1000);
  ws.receive({ type: 'publication', channel: 'broadcast', data: {}, offset: 1, epoch: 'e' });
  clock.advance(600);
  assert.equal(ws.closeCalls.length, 0);
  assert.equal(client.state, 'connected');
});

test('pingInterval 0 disables the heartbeat', () => {
  const { client, WS, clock } = setup({ pingInterval: 0 });
  client.connect();
  WS.instances[0].establish();
  clock.advance(10 * 60 * 1000);
  assert.equal(WS.instances[0].sentOfType('ping').length, 0);
  assert.equal(client.state, 'connected');
});
