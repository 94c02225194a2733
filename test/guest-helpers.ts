import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ensureDefaultGuest, type GuestInfo } from '../src/guest/default-guest.js';

export const HAVE_QEMU = spawnSync('which', ['qemu-system-i386']).status === 0;

let guest: GuestInfo | null | undefined;
let whyNot = '';

/** The default guest, built on first use; null (with a reason) when it cannot be built here. */
export async function defaultGuestOrNull(): Promise<{ guest: GuestInfo | null; reason: string }> {
  if (guest === undefined) {
    try {
      guest = await ensureDefaultGuest({ onProgress: (l) => process.stderr.write(`# tsvm-guest: ${l}\n`) });
    } catch (e) {
      guest = null;
      whyNot = `the default guest could not be built: ${(e as Error).message}`;
    }
  }
  return { guest, reason: whyNot };
}

/**
 * Runs a VM process, writes `input` once its output contains `after` (or at once when `after` is empty), and
 * resolves with everything it printed when it exits or after `timeoutMs` (then it is killed).
 */
export function runConsole(command: string, args: string[], input: string, after: string, timeoutMs: number): Promise<{ status: number | null; output: string; timedOut: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    let sent = false;
    let timedOut = false;
    const send = () => {
      if (sent) return;
      sent = true;
      child.stdin.write(input);
    };
    if (!after) send();
    child.stdout.on('data', (d: Buffer) => {
      output += d.toString('latin1');
      if (!sent && output.includes(after)) send();
    });
    child.stderr.on('data', (d: Buffer) => (output += d.toString('latin1')));
    child.stdin.on('error', () => {});
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, output, timedOut });
    });
  });
}

/** The compiled `tsvm` command. */
export const TSVM = fileURLToPath(new URL('../src/cli/tsvm.js', import.meta.url));

/**
 * Runs a VM process until `done(output so far)` holds (polled; e.g. a log file shows a line) or `timeoutMs`
 * passes, then kills it. Resolves with its stdout/stderr and whether it timed out.
 */
export function runUntil(command: string, args: string[], done: (output: string) => boolean, timeoutMs: number): Promise<{ output: string; timedOut: boolean; status: number | null }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => (output += d.toString('latin1')));
    child.stderr.on('data', (d: Buffer) => (output += d.toString('latin1')));
    const check = () => {
      let ok = false;
      try {
        ok = done(output);
      } catch {
        // The log file may not exist yet.
      }
      if (ok) child.kill('SIGKILL');
    };
    const poll = setInterval(check, 100);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('close', (status) => {
      clearInterval(poll);
      clearTimeout(timer);
      resolve({ output, timedOut, status });
    });
  });
}

/** A repeat count from the environment (`fallback` when unset); anything but a whole number from 1 up is an error, not zero runs. */
export function repeatCount(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}=${text}: a whole number from 1 up`);
  return n;
}
