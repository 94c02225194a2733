#!/usr/bin/env -S node --v8-pool-size=1
// One V8 helper thread (the optimizing compiler, GC tasks) beside the vCPU thread: with V8's default of four, on
// a 2-core host compiler threads preempt the vCPU (measured: ~10 s of a 50 s boot lost to waiting for a core).
import { writeFileSync, unlinkSync } from 'node:fs';
import { TsvmError } from '../base/errors.js';
import { Machine } from '../api/machine.js';
import { ensureDefaultGuest } from '../guest/default-guest.js';
import { runMain } from './main-guard.js';
import { parseTsvmArgs, tsvmUsage } from './tsvm-options.js';
import { TSVM_VERSION } from '../api/version.js';

async function main(): Promise<number> {
  const invocation = parseTsvmArgs(process.argv.slice(2));
  if (invocation.action === 'help') {
    process.stdout.write(tsvmUsage());
    return 0;
  }
  if (invocation.action === 'version') {
    process.stdout.write(`tsvm version ${TSVM_VERSION} (an x86 PC emulator compatible with QEMU's pc machine)\n`);
    return 0;
  }
  const config = invocation.config;
  if (invocation.useDefaultGuest) {
    const guest = await ensureDefaultGuest({ onProgress: (line) => process.stderr.write(`tsvm-guest: ${line}\n`) });
    config.kernel = guest.kernel;
    config.initrd = guest.initrd;
    config.append = guest.cmdline;
  }
  if (config.pidfile) {
    try {
      writeFileSync(config.pidfile, `${process.pid}\n`);
    } catch (e) {
      throw new TsvmError(`cannot create PID file: ${(e as Error).message}`);
    }
  }
  const machine = await Machine.create(config);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => void machine.quit());
  }
  if (!config.startPaused) machine.start();
  const exit = await machine.exited;
  if (config.pidfile) {
    try {
      unlinkSync(config.pidfile);
    } catch {
      // Already removed by someone else.
    }
  }
  if (exit.reason === 'error') throw new TsvmError(exit.message ?? 'the machine stopped with an error');
  return exit.reason === 'debug-exit' ? exit.status! & 0xff : 0;
}

runMain('tsvm', main);
