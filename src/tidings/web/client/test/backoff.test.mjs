import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay } from '../backoff.js';
import { closeAction } from '../close-codes.js';

const opts = (random, extra = {}) => ({ minDelay: 500, maxDelay: 30000, factor: 2, jitter: 0.5, random: () => random, ...extra });

test('base delay grows exponentially (random 0.5 = no jitter offset)', () => {
  const delays = [1, 2, 3, 4, 5].map((n) => backoffDelay(n, opts(0.5)));
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000]);
});

test('delay is capped at maxDelay, also after jitter', () => {
  assert.equal(backoffDelay(7, opts(0.5)), 30000); // 500 * 64 = 32000 -> 30000
  assert.equal(backoffDelay(50, opts(0.999)), 30000);
  assert.equal(backoffDelay(Infinity, opts(0.5)), 30000);
  assert.equal(backoffDelay(1e6, opts(0)), 15000);
});

test('jitter stays within [base*(1-j), base*(1+j)] and covers the range', () => {
  let seed = 42;
  const random = () => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
  for (let attempt = 1; attempt <= 10; attempt++) {
    const base = Math.min(30000, 500 * 2 ** (attempt - 1));
    const seen = [];
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(attempt, { minDelay: 500, maxDelay: 30000, factor: 2, jitter: 0.5, random });
      assert.ok(d >= Math.floor(base * 0.5) && d <= Math.min(30000, Math.ceil(base * 1.5)), `attempt ${attempt}: ${d}`);
      seen.push(d);
    }
    assert.ok(Math.max(...seen) - Math.min(...seen) > base * 0.4, `attempt ${attempt} spreads`);
  }
  assert.equal(backoffDelay(3, opts(0)), 1000);
  assert.equal(backoffDelay(3, opts(0.999)), 2998);
});

test('jitter 0 gives the bare base delay whatever random returns', () => {
  assert.equal(backoffDelay(2, opts(0, { jitter: 0 })), 1000);
  assert.equal(backoffDelay(2, opts(0.99, { jitter: 0 })), 1000);
});

test('closeAction follows the close-code table', () => {
  assert.equal(closeAction(1000), 'stop');
  for (const code of [1008, 1009, 4500, 4501, 4999]) assert.equal(closeAction(code), 'terminal', String(code));
  for (const code of [1001, 1005, 1006, 1011, 1012, 1013, 4000, 4001, 4004, 4499]) assert.equal(closeAction(code), 'reconnect', String(code));
  assert.equal(closeAction(4002), 'pause');
  assert.equal(closeAction(1008, 'Too many connections'), 'pause');
  assert.equal(closeAction(1008, 'Invalid token'), 'terminal');
  assert.equal(closeAction(1013, 'Try again later'), 'reconnect');
  assert.equal(closeAction(4003), 'refresh');
});
