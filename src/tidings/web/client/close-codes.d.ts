// GENERATED from src/tidings/close_codes.py by `python -m tidings.codegen`: do not edit (make generate).

/** What a client does after a close. */
export type CloseAction = 'stop' | 'reconnect' | 'pause' | 'refresh' | 'terminal';

/** Close codes named by the protocol. */
export const CloseCode: Readonly<{
  NORMAL: 1000;
  GOING_AWAY: 1001;
  ABNORMAL: 1006;
  POLICY_VIOLATION: 1008;
  MESSAGE_TOO_BIG: 1009;
  INTERNAL_ERROR: 1011;
  TRY_AGAIN_LATER: 1013;
  SLOW_CONSUMER: 4000;
  IDLE_TIMEOUT: 4001;
  RATE_LIMITED: 4002;
  TOKEN_EXPIRED: 4003;
  PERMISSIONS_CHANGED: 4004;
}>;

/** One row of the close-code table. */
export interface CloseCodeInfo {
  readonly code: number;
  readonly name: string;
  readonly action: CloseAction;
  readonly meaning: string;
  /** False for codes only a client sees (1006). */
  readonly sentByServer: boolean;
  /** The user must sign in again after this close (when it ends the client). */
  readonly signIn: boolean;
  /** Reasons of this code after which the user must sign in again. */
  readonly signInReasons: readonly string[];
  /** Close reasons that change the action. */
  readonly reasonActions: Readonly<Record<string, CloseAction>>;
}

export interface CloseRange {
  readonly first: number;
  readonly last: number;
  readonly action: CloseAction;
  readonly meaning: string;
}

export const CLOSE_CODES: Readonly<Record<number, CloseCodeInfo>>;
export const CLOSE_RANGES: readonly CloseRange[];

/** The table row of `code`, else its range, else undefined. */
export function closeInfo(code: number): CloseCodeInfo | CloseRange | undefined;

/** What the client does after a close with `code` (and `reason`). */
export function closeAction(code: number, reason?: string): CloseAction;

/** True when a close with `code` / `reason` means the user must sign in again. */
export function signsOut(code: number | undefined, reason?: string): boolean;
