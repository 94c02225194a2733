/**
 * Errors that reach a user. Every command-line tool prints `prog: message` for a TsvmError and exits
 * with its exitCode; anything else is a bug (and still gets one line, see cli/main-guard.ts).
 */
export class TsvmError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = 'TsvmError';
  }
}

/** A saved device/CPU state that does not fit this build (wrong version, hostile or corrupt values). */
export class StateError extends TsvmError {
  constructor(message: string) {
    super(message);
    this.name = 'StateError';
  }
}

export function errorMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
