/**
 * Reconnect delays: exponential backoff with jitter, capped.
 * @module tidings-client/backoff
 */

/**
 * The delay before reconnect attempt number `attempt` (1 for the first retry after a drop).
 *
 * `base = min(maxDelay, minDelay * factor ** (attempt - 1))`, then
 * `delay = base * (1 + jitter * (2 * random() - 1))`, rounded and clamped to `[0, maxDelay]`.
 * With `jitter = 0.5` the delay is uniform in `[0.5 * base, 1.5 * base)`, never above `maxDelay`.
 *
 * @param {number} attempt - 1-based attempt number; `Infinity` gives the capped delay.
 * @param {object} options
 * @param {number} options.minDelay - Base delay of the first attempt, in ms.
 * @param {number} options.maxDelay - Upper bound of every delay, in ms.
 * @param {number} options.factor - Growth factor per attempt (>= 1).
 * @param {number} options.jitter - Fraction of the base delay to spread over, 0..1.
 * @param {() => number} options.random - Uniform random in [0, 1).
 * @returns {number} Delay in whole milliseconds.
 */
export function backoffDelay(attempt, { minDelay, maxDelay, factor, jitter, random }) {
  const exponent = Math.max(0, attempt - 1);
  const base = Math.min(maxDelay, minDelay * Math.pow(factor, exponent));
  const spread = jitter > 0 ? base * jitter * (2 * random() - 1) : 0;
  return Math.round(Math.min(maxDelay, Math.max(0, base + spread)));
}
