import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HAVE_BINUTILS } from '../../src/cpu/x86/testing/assemble.js';
import { ORACLE } from './user-program.js';
import { describe, findMismatches, generateBatch, shrink } from './fuzz/differential.js';

/**
 * The randomized differential tester (test/cpu/fuzz) with fixed seeds: random instruction sequences run on the
 * oracle (the host CPU or qemu-i386), on the interpreter and with every block compiled, and every unit's
 * registers, EFLAGS (undefined flags masked) and the data buffer must match. A mismatch fails with the
 * sequence shrunk to a minimal one. x87 units stay off (see `npm run fuzz:cpu -- --x87`). Longer runs:
 * `npm run fuzz:cpu -- --seconds N [--seed S]`.
 */
const skip = !HAVE_BINUTILS ? 'GNU binutils (as, ld, objcopy) are not installed'
  : !ORACLE ? 'no oracle: this host cannot run 32-bit programs and qemu-i386 (qemu-user) is not installed' : false;

// A dump after every unit, and after every 8th (compiled blocks then span several units).
for (const [seed, dumpEvery] of [[1, 1], [2, 8]] as const) {
  test(`random instruction sequences, seed ${seed}, dump every ${dumpEvery} units: oracle, interpreter and compiled blocks agree`, { skip }, () => {
    const batch = generateBatch(seed, 30, { unitsPerSequence: 48, statesPerSequence: 6, dumpEvery, x87: false });
    const reports = findMismatches(batch).map((m) => {
      const shrunk = shrink(batch[m.sequence]!, m);
      return describe(shrunk.sequence, shrunk.mismatch);
    });
    assert.deepEqual(reports, [], reports.join('\n\n'));
  });
}
