import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isZero, zeroRuns } from '../util.js';
import { rng } from '../test-helpers.js';

/** zeroRuns the slow way: unit by unit. */
function naiveRuns(data: Uint8Array, at: number, unit: number): [number, number, boolean][] {
  const out: [number, number, boolean][] = [];
  for (let p = 0; p < data.length;) {
    const q = Math.min(data.length, (Math.floor((at + p) / unit) + 1) * unit - at);
    const zero = isZero(data.subarray(p, q));
    const last = out[out.length - 1];
    if (last && last[2] === zero) last[1] = q;
    else out.push([p, q, zero]);
    p = q;
  }
  return out;
}

test('zeroRuns: the same runs as checking unit by unit (units of 512 B to 64 KiB, unaligned starts and ends)', () => {
  const r = rng(7);
  for (let round = 0; round < 400; round++) {
    const unit = 512 << r(8);
    const len = 1 + r(6 * unit + 20000);
    const at = r(3) === 0 ? r(1 << 20) : unit * r(16);
    const data = new Uint8Array(len);
    // Zero stretches of all sizes between bytes of data (some zero, some not).
    for (let p = 0; p < len;) {
      const n = 1 + r(r(2) === 0 ? 64 : 3 * unit);
      if (r(3) === 0) for (let i = p; i < Math.min(len, p + n); i++) data[i] = r(3) === 0 ? 1 + r(255) : 0;
      p += n;
    }
    const runs: [number, number, boolean][] = [];
    zeroRuns(data, at, unit, (p, q, zero) => {
      runs.push([p, q, zero]);
      return true;
    });
    assert.deepEqual(runs, naiveRuns(data, at, unit), `round ${round}: unit ${unit}, length ${len}, at ${at}`);
  }
  // Stopping early.
  const calls: number[] = [];
  assert.equal(zeroRuns(new Uint8Array(3 * 4096).fill(1, 4096, 8192), 0, 4096, (p) => (calls.push(p), calls.length < 2)), false);
  assert.deepEqual(calls, [0, 4096]);
});
