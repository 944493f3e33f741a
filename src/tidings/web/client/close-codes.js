// GENERATED from src/tidings/close_codes.py by `python -m tidings.codegen`: do not edit (make generate).
/**
 * WebSocket close codes of the Tidings protocol and what a client does after each (docs/protocol.md).
 *
 * Actions: `'stop'` (normal closure: go offline quietly), `'reconnect'` (backoff, resubscribe, recover),
 * `'pause'` (reconnect after the longest backoff delay), `'refresh'` (the token expired: reconnect only with a
 * different token from a token function, else sign in again), `'terminal'` (go offline and report).
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
  TOKEN_EXPIRED: 4003,
  PERMISSIONS_CHANGED: 4004,
});

/** The close-code table: one row per named code. */
export const CLOSE_CODES = Object.freeze({
  1000: Object.freeze({"code": 1000, "name": "NORMAL", "action": "stop", "meaning": "Normal closure", "sentByServer": true, "signIn": false, "signInReasons": [], "reasonActions": {}}),
  1001: Object.freeze({"code": 1001, "name": "GOING_AWAY", "action": "reconnect", "meaning": "Server going away (shutdown, restart): reconnect, to another node, and recover from history", "sentByServer": true, "signIn": false, "signInReasons": [], "reasonActions": {}}),
  1006: Object.freeze({"code": 1006, "name": "ABNORMAL", "action": "reconnect", "meaning": "The connection dropped without a close frame (network failure, heartbeat timeout); never sent", "sentByServer": false, "signIn": false, "signInReasons": [], "reasonActions": {}}),
  1008: Object.freeze({"code": 1008, "name": "POLICY_VIOLATION", "action": "terminal", "meaning": "Policy violation: authentication, origin or connection limits; the reason says which", "sentByServer": true, "signIn": false, "signInReasons": ["Authentication required", "Invalid token", "Token expired", "Token revoked", "User not found or inactive"], "reasonActions": {"Too many connections": "pause"}}),
  1009: Object.freeze({"code": 1009, "name": "MESSAGE_TOO_BIG", "action": "terminal", "meaning": "Message too big (TIDINGS_MAX_MESSAGE_BYTES)", "sentByServer": true, "signIn": false, "signInReasons": [], "reasonActions": {}}),
  1011: Object.freeze({"code": 1011, "name": "INTERNAL_ERROR", "action": "reconnect", "meaning": "Internal server error", "sentByServer": true, "signIn": false, "signInReasons": [], "reasonActions": {}}),
  1013: Object.freeze({"code": 1013, "name": "TRY_AGAIN_LATER", "action": "reconnect", "meaning": "Try again later: the node or the client address is at its connection cap", "sentByServer": true, "signIn": false, "signInReasons": [], "reasonActions": {}}),
  4000: Object.freeze({"code": 4000, "name": "SLOW_CONSUMER", "action": "reconnect", "meaning": "Slow consumer: the outbound queue overflowed (TIDINGS_SEND_QUEUE_MAX); recover from history", "sentByServer": true, "signIn": false, "signInReasons": [], "reasonActions": {}}),
  4001: Object.freeze({"code": 4001, "name": "IDLE_TIMEOUT", "action": "reconnect", "meaning": "Idle timeout: no inbound message for TIDINGS_IDLE_TIMEOUT", "sentByServer": true, "signIn": false, "signInReasons": [], "reasonActions": {}}),
  4002: Object.freeze({"code": 4002, "name": "RATE_LIMITED", "action": "pause", "meaning": "Rate limited too often", "sentByServer": true, "signIn": false, "signInReasons": [], "reasonActions": {}}),
  4003: Object.freeze({"code": 4003, "name": "TOKEN_EXPIRED", "action": "refresh", "meaning": "The access token expired: reconnect only with a new token, else sign in again", "sentByServer": true, "signIn": true, "signInReasons": [], "reasonActions": {}}),
  4004: Object.freeze({"code": 4004, "name": "PERMISSIONS_CHANGED", "action": "reconnect", "meaning": "Permissions changed: reconnect to get the subscriptions the user may have now", "sentByServer": true, "signIn": false, "signInReasons": [], "reasonActions": {}}),
});

/** Codes not listed one by one, by range. */
export const CLOSE_RANGES = Object.freeze([
  Object.freeze({"first": 4000, "last": 4499, "action": "reconnect", "meaning": "Reserved for Tidings, reconnect class"}),
  Object.freeze({"first": 4500, "last": 4999, "action": "terminal", "meaning": "Application-defined, terminal"}),
]);

/**
 * The table row of `code`, else the range it falls in, else undefined.
 * @param {number} code
 */
export function closeInfo(code) {
  if (Object.hasOwn(CLOSE_CODES, code)) return CLOSE_CODES[code];
  return CLOSE_RANGES.find((range) => range.first <= code && code <= range.last);
}

/**
 * What to do after the server (or the network) closed the connection with `code` and `reason`.
 * Unknown codes reconnect.
 * @param {number} code
 * @param {string} [reason]
 * @returns {'stop' | 'reconnect' | 'pause' | 'refresh' | 'terminal'}
 */
export function closeAction(code, reason = '') {
  const info = closeInfo(code);
  if (!info) return 'reconnect';
  if (info.reasonActions && Object.hasOwn(info.reasonActions, reason)) return info.reasonActions[reason];
  return info.action;
}

/**
 * True when a close with `code` and `reason` means the user must sign in again.
 * @param {number | undefined} code
 * @param {string} [reason]
 */
export function signsOut(code, reason = '') {
  if (code === undefined || code === null || !Object.hasOwn(CLOSE_CODES, code)) return false;
  const info = CLOSE_CODES[code];
  return info.signIn || info.signInReasons.some((match) => String(reason ?? '').startsWith(match));
}
