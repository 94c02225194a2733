import { TsvmError, errorMessage } from '../base/errors.js';

/**
 * Runs a command's main function and turns every failure into one line on stderr and an exit code: a
 * TsvmError is the user's problem (its message and code); anything else is ours, still one line, with the
 * stack only when TSVM_DEBUG is set.
 */
export function runMain(program: string, main: () => Promise<number>): void {
  const fail = (e: unknown): void => {
    const message = errorMessage(e).split('\n')[0];
    process.stderr.write(`${program}: ${message}\n`);
    if (!(e instanceof TsvmError) && process.env.TSVM_DEBUG) process.stderr.write(`${(e as Error)?.stack ?? ''}\n`);
    process.exitCode = e instanceof TsvmError ? e.exitCode : 1;
  };
  process.on('uncaughtException', (e) => {
    fail(e);
    process.exit();
  });
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      fail(e);
      process.exit();
    },
  );
}
