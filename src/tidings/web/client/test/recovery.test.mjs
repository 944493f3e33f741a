import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, flush } from '../test-support/fakes.mjs';

function connected(options) {
  const env = setup(options);
  env.client.connect();
  env.last().establish();
  return env;
}

test('subscribe sends subscribe and resolves on subscription_confirmed', async () => {
  const { client, last } = connected();
  const p = client.subscribe('room:lobby');
  assert.deepEqual(last().sentOfType('subscribe'), [{ type: 'subscribe', subscription: 'room:lobby' }]);
  last().receive({ type: 'subscription_confirmed', subscription: 'room:lobby', offset: 4, epoch: 'e1' });
  const reply = await p;
  assert.equal(reply.offset, 4);
  assert.deepEqual(client.subscriptions, ['room:lobby']);
  assert.deepEqual(client.position('room:lobby'), { offset: 4, epoch: 'e1' });
});

test('subscribe while offline is sent once connected', async () => {
  const { client, WS } = setup();
  const p = client.subscribe('job:3');
  client.connect();
  WS.instances[0].establish();
  assert.deepEqual(WS.instances[0].sentOfType('subscribe'), [{ type: 'subscribe', subscription: 'job:3' }]);
  WS.instances[0].receive({ type: 'subscription_confirmed', subscription: 'job:3', offset: 0, epoch: 'e' });
  assert.equal((await p).subscription, 'job:3');
});

test('subscription_error rejects and the channel is forgotten', async () => {
  const { client, last, clock } = connected();
  const p = client.subscribe('admins');
  last().receive({ type: 'subscription_error', subscription: 'admins', code: 'forbidden', message: 'Invalid subscription: admins' });
  await assert.rejects(p, { name: 'TidingsError', code: 'forbidden', message: 'Invalid subscription: admins' });
  assert.deepEqual(client.subscriptions, []);
  last().serverClose(1001);
  clock.advance(500);
  last().establish();
  assert.equal(last().sentOfType('subscribe').length, 0);
});

test('after a reconnect every channel is resubscribed with since = last offset and epoch', () => {
  const { client, last, clock } = connected();
  client.subscribe('room:a');
  client.subscribe('property:9');
  last().receive({ type: 'subscription_confirmed', subscription: 'room:a', offset: 10, epoch: 'E' });
  last().receive({ type: 'subscription_confirmed', subscription: 'property:9', offset: 0, epoch: 'P' });
  last().receive({ type: 'publication', channel: 'room:a', data: { n: 11 }, offset: 11, epoch: 'E' });
  last().receive({ type: 'join', channel: 'room:a', user: { user_id: 2, username: 'bo' }, offset: 12, epoch: 'E' });
  last().serverClose(4000, 'slow consumer');
  clock.advance(500);
  last().establish();
  assert.deepEqual(last().sentOfType('subscribe'), [
    { type: 'subscribe', subscription: 'room:a', since: { offset: 12, epoch: 'E' } },
    { type: 'subscribe', subscription: 'property:9', since: { offset: 0, epoch: 'P' } },
  ]);
});

test('recovery: replayed publications pass, duplicates are dropped, recovered:true emits nothing', () => {
  const { client, last, clock, eventsNamed } = connected();
  const got = [];
  client.onMessage('publication', (m) => got.push(m.offset));
  client.subscribe('room:a');
  last().receive({ type: 'subscription_confirmed', subscription: 'room:a', offset: 2, epoch: 'E' });
  last().receive({ type: 'publication', channel: 'room:a', data: {}, offset: 3, epoch: 'E' });
  last().serverClose(1001);
  clock.advance(500);
  last().establish();
  for (const offset of [3, 4, 5]) last().receive({ type: 'publication', channel: 'room:a', data: {}, offset, epoch: 'E' });
  last().receive({ type: 'subscription_confirmed', subscription: 'room:a', offset: 5, epoch: 'E', recovered: true });
  assert.deepEqual(got, [3, 4, 5]);
  assert.equal(eventsNamed('recovery_failed').length, 0);
});

test('recovered:false emits recovery_failed and adopts the new position', () => {
  const { client, last, clock, eventsNamed } = connected();
  client.subscribe('room:a');
  last().receive({ type: 'subscription_confirmed', subscription: 'room:a', offset: 7, epoch: 'old' });
  last().serverClose(1006);
  clock.advance(500);
  last().establish();
  last().receive({ type: 'subscription_confirmed', subscription: 'room:a', offset: 2, epoch: 'new', recovered: false });
  assert.deepEqual(eventsNamed('recovery_failed'), [{ channel: 'room:a', offset: 2, epoch: 'new' }]);
  assert.deepEqual(client.position('room:a'), { offset: 2, epoch: 'new' });
});

test('unsubscribe sends, resolves on unsubscribed and is not resubscribed', async () => {
  const { client, last, clock } = connected();
  client.subscribe('room:a');
  last().receive({ type: 'subscription_confirmed', subscription: 'room:a', offset: 0, epoch: 'E' });
  const p = client.unsubscribe('room:a');
  assert.deepEqual(last().sentOfType('unsubscribe'), [{ type: 'unsubscribe', subscription: 'room:a' }]);
  last().receive({ type: 'unsubscribed', subscription: 'room:a' });
  assert.equal((await p).type, 'unsubscribed');
  last().serverClose(1001);
  clock.advance(500);
  last().establish();
  assert.equal(last().sentOfType('subscribe').length, 0);
  assert.equal(client.position('room:a'), undefined);
});

test('a pending subscribe is rejected when the client goes offline', async () => {
  const { client, last } = connected();
  const p = client.subscribe('room:a');
  last().serverClose(1008, 'Token expired');
  await assert.rejects(p, { code: 'offline' });
  await flush();
});

test('subscribe to an already confirmed channel resolves without resending', async () => {
  const { client, last } = connected();
  client.subscribe('room:a');
  last().receive({ type: 'subscription_confirmed', subscription: 'room:a', offset: 1, epoch: 'E' });
  const again = await client.subscribe('room:a');
  assert.equal(again.offset, 1);
  assert.equal(last().sentOfType('subscribe').length, 1);
});
