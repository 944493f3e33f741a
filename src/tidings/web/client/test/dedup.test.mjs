import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup } from '../test-support/fakes.mjs';

function connected() {
  const env = setup();
  env.client.connect();
  env.last().establish();
  const got = [];
  env.client.onMessage('*', (m) => got.push(m));
  return { ...env, got };
}

const pub = (offset, epoch = 'E', channel = 'room:a') => ({ type: 'publication', channel, data: { offset }, offset, epoch });

test('duplicate and stale offsets are dropped, higher ones pass', () => {
  const { last, got } = connected();
  for (const offset of [1, 2, 2, 1, 3, 3, 5]) last().receive(pub(offset));
  assert.deepEqual(got.map((m) => m.offset), [1, 2, 3, 5]);
});

test('a new epoch resets the channel tracking', () => {
  const { client, last, got } = connected();
  last().receive(pub(10, 'E1'));
  last().receive(pub(1, 'E2'));
  last().receive(pub(1, 'E2'));
  last().receive(pub(2, 'E2'));
  assert.deepEqual(got.map((m) => `${m.epoch}:${m.offset}`), ['E1:10', 'E2:1', 'E2:2']);
  assert.deepEqual(client.position('room:a'), { offset: 2, epoch: 'E2' });
});

test('channels are tracked independently; typed events count too', () => {
  const { last, got } = connected();
  last().receive(pub(1, 'E', 'room:a'));
  last().receive(pub(1, 'E', 'room:b'));
  last().receive({ type: 'job_update', channel: 'user:7', event: 'job_started', job_id: 1, offset: 4, epoch: 'U' });
  last().receive({ type: 'job_update', channel: 'user:7', event: 'job_started', job_id: 1, offset: 4, epoch: 'U' });
  assert.deepEqual(got.map((m) => `${m.channel}:${m.offset}`), ['room:a:1', 'room:b:1', 'user:7:4']);
});

test('messages without channel+offset are never dropped; publish_ack does not advance the stream', () => {
  const { last, got } = connected();
  last().receive({ type: 'pong', timestamp: 1 });
  last().receive({ type: 'pong', timestamp: 1 });
  last().receive({ type: 'publish_ack', channel: 'room:a', offset: 9, epoch: 'E' });
  last().receive(pub(9));
  last().receive({ type: 'publish_ack', channel: 'room:a', offset: 9, epoch: 'E' });
  assert.deepEqual(got.map((m) => m.type), ['pong', 'pong', 'publish_ack', 'publication', 'publish_ack']);
});

test('dropped duplicates reach no handler, typed or wildcard', () => {
  const { client, last } = connected();
  let typed = 0;
  client.onMessage('publication', () => typed++);
  last().receive(pub(1));
  last().receive(pub(1));
  assert.equal(typed, 1);
});

test('a subscription_confirmed carrying channel and the current offset is not mistaken for a duplicate', async () => {
  const { client, last } = connected();
  const p = client.subscribe('room:a');
  last().receive(pub(3));
  last().receive({ type: 'subscription_confirmed', subscription: 'room:a', channel: 'room:a', offset: 3, epoch: 'E' });
  assert.equal((await p).offset, 3);
});
