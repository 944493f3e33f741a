import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, flush } from '../test-support/fakes.mjs';

function connected(options) {
  const env = setup(options);
  env.client.connect();
  env.last().establish();
  return env;
}

test('request assigns distinct ids and resolves with the reply echoing its id', async () => {
  const { client, last } = connected();
  const a = client.request({ type: 'request_status' });
  const b = client.request({ type: 'presence', subscription: 'room:a' });
  const [sa, sb] = last().sent;
  assert.notEqual(sa.id, undefined);
  assert.notEqual(sa.id, sb.id);
  last().receive({ type: 'presence', subscription: 'room:a', users: [], id: sb.id });
  last().receive({ type: 'status_update', connections: 1, id: 'someone-else' });
  last().receive({ type: 'status_update', connections: 2, id: sa.id });
  assert.equal((await a).connections, 2);
  assert.deepEqual((await b).users, []);
});

test('a caller-chosen id is kept', async () => {
  const { client, last } = connected();
  const p = client.request({ type: 'ping', id: 42 });
  assert.equal(last().sent[0].id, 42);
  last().receive({ type: 'pong', id: 42 });
  assert.equal((await p).type, 'pong');
});

test('an error reply rejects with the server code', async () => {
  const { client, last } = connected();
  const p = client.request({ type: 'publish', channel: 'broadcast', data: {} });
  last().receive({ type: 'error', code: 'forbidden', message: 'no', id: last().sent[0].id });
  await assert.rejects(p, { name: 'TidingsError', code: 'forbidden', message: 'no' });
});

test('a request times out', async () => {
  const { client, clock } = connected();
  const p = client.request({ type: 'request_status' }, { timeout: 100 });
  clock.advance(100);
  await assert.rejects(p, { code: 'timeout' });
});

test('a sent request fails when the connection drops; a queued one is sent after reconnect', async () => {
  const { client, last, clock } = connected();
  const sent = client.request({ type: 'request_status' });
  last().serverClose(1006);
  await assert.rejects(sent, { code: 'connection_lost' });
  const queued = client.request({ type: 'request_status' });
  clock.advance(500);
  last().establish();
  const id = last().sent[0].id;
  last().receive({ type: 'status_update', id });
  assert.equal((await queued).id, id);
});

test('a request dropped from the offline queue rejects', async () => {
  const { client } = setup({ maxOfflineQueue: 1 });
  const first = client.request({ type: 'request_status' });
  client.send({ type: 'ping' });
  await assert.rejects(first, { code: 'dropped' });
  await flush();
});
