// Type declarations for tidings-client (tidings.js). The wire protocol is docs/protocol.md of Tidings.

/** Connection state. `offline` is terminal until `connect()` is called again. */
export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'offline';

/** A token, or a function (possibly async) returning one; called before every connect and reconnect. */
export type TokenSource =
  | string
  | null
  | undefined
  | (() => string | null | undefined | PromiseLike<string | null | undefined>);

/** The subset of the WebSocket API the client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: { code?: number; reason?: string; wasClean?: boolean }) => void) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface TidingsClientOptions {
  /** JWT or a function returning it; sent as subprotocols `['bearer', token]`. Default: none. */
  token?: TokenSource;
  /** WebSocket constructor. Default: `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Base delay of the first reconnect attempt, ms. Default 500. */
  minReconnectDelay?: number;
  /** Cap of every reconnect delay (after jitter), ms. Default 30000. */
  maxReconnectDelay?: number;
  /** Growth of the base delay per attempt (>= 1). Default 2. */
  reconnectFactor?: number;
  /** Delay spread as a fraction of the base, 0..1: uniform in [base*(1-j), base*(1+j)). Default 0.5. */
  jitter?: number;
  /** Consecutive failed attempts before giving up (`terminal` with `gaveUp`). Default Infinity. */
  maxReconnectAttempts?: number;
  /** Heartbeat ping period, ms; 0 disables. Default 25000. */
  pingInterval?: number;
  /** Silence after a ping that marks the connection dead, ms. Default 10000. */
  pongTimeout?: number;
  /** Abandon an attempt without `connection_established` after this long, ms; 0 disables. Default 10000. */
  connectTimeout?: number;
  /** Default `request()` timeout, ms; 0 disables. Default 10000. */
  requestTimeout?: number;
  /** Capacity of the offline send queue (oldest dropped when full). Default 100. */
  maxOfflineQueue?: number;
  /** Uniform random in [0, 1) for jitter. Default `Math.random`. */
  random?: () => number;
  /** Timer hooks (for deterministic tests). Default: the global functions. */
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (handle: any) => void;
  /** Clock in ms. Default `Date.now`. */
  now?: () => number;
}

/** Any server message; `type` is always present. */
export interface ServerMessage {
  type: string;
  id?: string | number;
  channel?: string;
  offset?: number;
  epoch?: string;
  [key: string]: unknown;
}

export interface ConnectionEstablished extends ServerMessage {
  type: 'connection_established';
  user_id: number;
  username: string;
  message?: string;
  channels: string[];
}

export interface SubscriptionConfirmed extends ServerMessage {
  type: 'subscription_confirmed';
  subscription: string;
  offset: number;
  epoch: string;
  recovered?: boolean;
}

export interface Publication<T = unknown> extends ServerMessage {
  type: 'publication';
  channel: string;
  data: T;
  offset: number;
  epoch: string;
  /** When the server accepted the publication: seconds since the Unix epoch (UTC), e.g. 1764598980.123. */
  timestamp: number;
}

/** A message the client sends; `type` is required. */
export interface ClientMessage {
  type: string;
  id?: string | number;
  [key: string]: unknown;
}

export interface StateEvent {
  state: ConnectionState;
  previous: ConnectionState;
  /** Close code behind the change, when a close caused it. */
  code?: number;
  reason?: string;
}

export interface DisconnectedEvent {
  code: number;
  reason: string;
  wasClean: boolean;
  willReconnect: boolean;
}

export interface ReconnectingEvent {
  /** 1-based attempt number since the last successful connection. */
  attempt: number;
  /** Delay before the attempt, ms. */
  delay: number;
  code: number;
  reason: string;
}

export interface TerminalEvent {
  /** The close code (undefined when the socket could not even be created). */
  code: number | undefined;
  reason: string;
  /** True when maxReconnectAttempts was exhausted. */
  gaveUp?: boolean;
  /** True when the user must sign in again (4003 token expired without a new token, 1008 authentication). */
  signIn?: boolean;
  attempts?: number;
}

export interface ErrorEvent {
  /** `handler` (an onMessage handler threw), `listener` (an event listener threw), `parse` (bad frame),
   * `token` (the token function failed), `socket` (WebSocket error), `send` (socket.send threw). */
  source: 'handler' | 'listener' | 'parse' | 'token' | 'socket' | 'send';
  error: unknown;
  /** Message type or event name whose handler threw. */
  event?: string;
  /** Raw frame that could not be parsed. */
  data?: string;
}

export interface QueueOverflowEvent {
  /** The oldest queued message, dropped. */
  dropped: ClientMessage;
  /** Messages still queued. */
  queued: number;
}

export interface RecoveryFailedEvent {
  channel: string;
  /** The stream position the client continues from. */
  offset: number;
  epoch: string;
}

export interface TidingsEventMap {
  state: StateEvent;
  connected: ConnectionEstablished;
  disconnected: DisconnectedEvent;
  reconnecting: ReconnectingEvent;
  terminal: TerminalEvent;
  error: ErrorEvent;
  queue_overflow: QueueOverflowEvent;
  recovery_failed: RecoveryFailedEvent;
}

export interface ChannelPosition {
  offset: number;
  epoch: string | undefined;
}

/** Error reported by promises of the client. */
export class TidingsError extends Error {
  constructor(message: string, details?: { code?: string; reply?: ServerMessage });
  readonly name: 'TidingsError';
  /** Server error code, or `timeout`, `connection_lost`, `dropped`, `offline`, `unsubscribed`, `binary`. */
  readonly code: string | undefined;
  /** The server's reply, when there was one. */
  readonly reply: ServerMessage | undefined;
}

export class TidingsClient {
  /**
   * @param url ws:// or wss:// URL of `/ws/authenticated`.
   */
  constructor(url: string | URL, options?: TidingsClientOptions);

  readonly state: ConnectionState;
  readonly url: string;
  /** Remembered subscriptions, resubscribed after every reconnect. */
  readonly subscriptions: string[];
  /** Messages waiting in the offline queue. */
  readonly queueSize: number;
  /** `now()` at the last received message, or null. */
  readonly lastMessageAt: number | null;

  /** Last position seen on a channel (sent as `since` when resubscribing). */
  position(channel: string): ChannelPosition | undefined;

  /** Start connecting; resolves on the first `connection_established`, rejects if the client goes offline first. */
  connect(): Promise<ConnectionEstablished>;
  /** Close (default code 1000) and stop reconnecting. Subscriptions and the offline queue are kept. */
  disconnect(code?: number, reason?: string): void;

  /** Send now when connected (true), else queue (false). */
  send(message: ClientMessage): boolean;
  /** Subscribe and remember the channel; resolves on `subscription_confirmed`, rejects on `subscription_error`. */
  subscribe(channel: string): Promise<SubscriptionConfirmed>;
  /** Unsubscribe and forget the channel; resolves with the `unsubscribed` reply or undefined when not connected. */
  unsubscribe(channel: string): Promise<ServerMessage | undefined>;
  /** Publish `{type: 'publish', channel, data}` (queued while offline). */
  publish(channel: string, data: unknown): boolean;
  /** Send with an id and resolve with the reply echoing it; rejects on `error` replies and timeouts. */
  request<R extends ServerMessage = ServerMessage>(message: ClientMessage, options?: { timeout?: number }): Promise<R>;

  /** Handle messages of a type (`'*'` for all); returns a function removing the handler. */
  onMessage(type: 'publication', handler: (message: Publication) => void): () => void;
  onMessage(type: 'connection_established', handler: (message: ConnectionEstablished) => void): () => void;
  onMessage(type: 'subscription_confirmed', handler: (message: SubscriptionConfirmed) => void): () => void;
  onMessage(type: string, handler: (message: ServerMessage) => void): () => void;

  /** Listen to a client event; returns a function removing the listener. */
  on<K extends keyof TidingsEventMap>(event: K, listener: (payload: TidingsEventMap[K]) => void): () => void;
}

export default TidingsClient;

// The close-code table, generated from the server's (src/tidings/close_codes.py).
export {
  CLOSE_CODES,
  CLOSE_RANGES,
  CloseAction,
  CloseCode,
  CloseCodeInfo,
  CloseRange,
  closeAction,
  closeInfo,
  signsOut,
} from './close-codes.js';

/** Delay before reconnect attempt `attempt` (1-based), ms. */
export function backoffDelay(
  attempt: number,
  options: { minDelay: number; maxDelay: number; factor: number; jitter: number; random: () => number },
): number;
