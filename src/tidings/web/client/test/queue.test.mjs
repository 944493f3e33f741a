import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup } from '../test-support/fakes.mjs';

test('send while connected goes out immediately', () => {
  const { client, last } = setup();
  client.connect();
  last().establish();
  assert.equal(client.send({ type: 'request_status' }), true);
  assert.deepEqual(last().sent, [{ type: 'request_status' }]);
});

test('offline queue is bounded, drops the oldest with queue_overflow, flushes in order after resubscribe', () => {
  const { client, last, clock, eventsNamed } = setup({ maxOfflineQueue: 3 });
  client.connect();
  last().establish();
  client.subscribe('room:a');
  last().receive({ type: 'subscription_confirmed', subscription: 'room:a', offset: 0, epoch: 'E' });
  last().serverClose(1006);
  for (let n = 1; n <= 5; n++) assert.equal(client.publish('room:a', { n }), false);
  assert.equal(client.queueSize, 3);
  assert.deepEqual(eventsNamed('queue_overflow').map((e) => e.dropped.data.n), [1, 2]);
  assert.equal(eventsNamed('queue_overflow')[0].queued, 3);
  clock.advance(500);
  const ws = last();
  ws.open();
  assert.equal(ws.sent.length, 0, 'nothing is sent before connection_established');
  ws.receive({ type: 'connection_established', user_id: 7 });
  assert.deepEqual(ws.sent, [
    { type: 'subscribe', subscription: 'room:a', since: { offset: 0, epoch: 'E' } },
    { type: 'publish', channel: 'room:a', data: { n: 3 } },
    { type: 'publish', channel: 'room:a', data: { n: 4 } },
    { type: 'publish', channel: 'room:a', data: { n: 5 } },
  ]);
  assert.equal(client.queueSize, 0);
});

test('messages sent before the first connection are queued and flushed', () => {
  const { client, last } = setup();
  client.send({ type: 'request_status' });
  client.connect();
  last().establish();
  assert.deepEqual(last().sent, [{ type: 'request_status' }]);
});

test('maxOfflineQueue 0 drops everything sent offline', () => {
  const { client, eventsNamed } = setup({ maxOfflineQueue: 0 });
  client.send({ type: 'ping' });
  assert.equal(client.queueSize, 0);
  assert.deepEqual(eventsNamed('queue_overflow'), [{ dropped: { type: 'ping' }, queued: 0 }]);
});

test('queued messages are kept across disconnect() and sent after the next connect()', () => {
  const { client, last } = setup();
  client.connect();
  last().establish();
  client.disconnect();
  client.send({ type: 'request_status' });
  client.connect();
  last().establish();
  assert.deepEqual(last().sent, [{ type: 'request_status' }]);
});
