import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HAVE_BINUTILS } from '../../src/cpu/x86/testing/assemble.js';
import { ORACLE } from './user-program.js';
import { describe, findMismatches, generateBatch, shrink } from './fuzz/differential.js';

/**
 * The randomized differential tester (test/cpu/fuzz) with fixed seeds: random instruction sequences run on the
 * oracle (the host CPU or qemu-i386), on the interpreter and with every block compiled, and every unit's
 * registers, EFLAGS (undefined flags masked) and the data buffer must match. A mismatch fails with the
 * sequence shrunk to a minimal one. The x87 run compares what qemu-i386 7.2 gets right (test/cpu/fuzz/x87-generator.ts
 * masks its deviations from the SDM). Longer runs: `npm run fuzz:cpu -- --seconds N [--seed S] [--x87]`.
 */
const skip = !HAVE_BINUTILS ? 'GNU binutils (as, ld, objcopy) are not installed'
  : !ORACLE ? 'no oracle: this host cannot run 32-bit programs and qemu-i386 (qemu-user) is not installed' : false;

// A dump after every unit, and after every 8th (compiled blocks then span several units); with x87 units.
for (const [seed, dumpEvery, x87] of [[1, 1, false], [2, 8, false], [3, 1, true]] as const) {
  test(`random instruction sequences${x87 ? ' with x87 units' : ''}, seed ${seed}, dump every ${dumpEvery} units: oracle, interpreter and compiled blocks agree`, { skip }, () => {
    const batch = generateBatch(seed, 30, { unitsPerSequence: 48, statesPerSequence: 6, dumpEvery, x87 });
    const reports = findMismatches(batch).map((m) => {
      const shrunk = shrink(batch[m.sequence]!, m);
      return describe(shrunk.sequence, shrunk.mismatch);
    });
    assert.deepEqual(reports, [], reports.join('\n\n'));
  });
}
