/**
 * WebSocket close codes used by the Tidings server (docs/protocol.md) and what a client does after each.
 * @module tidings-client/close-codes
 */

/** Close codes named by the protocol. */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  TRY_AGAIN_LATER: 1013,
  SLOW_CONSUMER: 4000,
  IDLE_TIMEOUT: 4001,
  RATE_LIMITED: 4002,
  TOKEN_EXPIRED: 4500,
});

/** The reason of the one 1008 close that is worth retrying (after a long delay). */
const TOO_MANY_CONNECTIONS = /^too many connections/i;

/**
 * What to do after the server (or the network) closed the connection with `code`.
 *
 * - `'stop'`: 1000, a normal closure: go offline quietly.
 * - `'terminal'`: 1008 (authentication, origin, ...), 1009 (message too big) and 4500–4999
 *   (application-defined, 4500 = token expired): go offline and report; never retry.
 * - `'pause'`: 4002 (rate limited too often) and 1008 "Too many connections" (the user's connection limit; a
 *   dead node's connections are released within seconds): reconnect after the longest backoff delay.
 * - `'reconnect'`: everything else (1001, 1006, 1011, 1013 "Try again later", 4000, 4001, ...): reconnect
 *   with backoff.
 *
 * @param {number} code
 * @param {string} [reason] - The close reason (it tells the retryable 1008 from the others).
 * @returns {'stop' | 'terminal' | 'pause' | 'reconnect'}
 */
export function closeAction(code, reason = '') {
  if (code === CloseCode.NORMAL) return 'stop';
  if (code === CloseCode.POLICY_VIOLATION && TOO_MANY_CONNECTIONS.test(reason ?? '')) return 'pause';
  if (code === CloseCode.POLICY_VIOLATION || code === CloseCode.MESSAGE_TOO_BIG) return 'terminal';
  if (code >= 4500 && code <= 4999) return 'terminal';
  if (code === CloseCode.RATE_LIMITED) return 'pause';
  return 'reconnect';
}
