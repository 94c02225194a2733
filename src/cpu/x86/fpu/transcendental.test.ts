import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Float80Unit, PE } from './float80.js';
import { Transcendentals } from './transcendental.js';

/** Values whose correctly rounded 80-bit results are known (the x87's own constants among them). */

function unitAndFunctions(rc: number): [Float80Unit, Transcendentals] {
  const unit = new Float80Unit();
  unit.control = 0x37f | (rc << 10);
  return [unit, new Transcendentals(unit)];
}

const ONE = [0x3fff, 0x80000000, 0] as const;

test('FPATAN(1, 1) is pi/4 and FYL2X(1, 10) is log2(10), rounded in each mode, inexact', () => {
  for (const [rc, pi4, l2t] of [[0, 0x2168c235, 0xcd1b8afe], [1, 0x2168c234, 0xcd1b8afe], [2, 0x2168c235, 0xcd1b8aff], [3, 0x2168c234, 0xcd1b8afe]]) {
    const [u, t] = unitAndFunctions(rc!);
    t.arctangent(...ONE, ...ONE);
    assert.deepEqual([u.se, u.hi, u.lo, u.flags], [0x3ffe, 0xc90fdaa2, pi4, PE], `atan rc ${rc}`);
    u.flags = 0;
    t.yLog2X(...ONE, 0x4002, 0xa0000000, 0);
    assert.deepEqual([u.se, u.hi, u.lo, u.flags], [0x4000, 0xd49a784b, l2t, PE], `log2(10) rc ${rc}`);
  }
});

test('exact cases stay exact: log2 of a power of two, F2XM1(-1), sine and cosine of zero', () => {
  const [u, t] = unitAndFunctions(0);
  t.yLog2X(0x4000, 0xc0000000, 0, 0x4002, 0x80000000, 0); // 3 × log2(8) = 9
  assert.deepEqual([u.se, u.hi, u.lo, u.flags], [0x4002, 0x90000000, 0, 0]);
  t.twoToXMinus1(0xbfff, 0x80000000, 0);
  assert.deepEqual([u.se, u.hi, u.lo, u.flags], [0xbffe, 0x80000000, 0, 0]);
  t.cosine(0x8000, 0, 0);
  assert.deepEqual([u.se, u.hi, u.lo, u.flags], [0x3fff, 0x80000000, 0, 0]);
  t.sine(0x8000, 0, 0);
  assert.deepEqual([u.se, u.hi, u.lo], [0x8000, 0, 0]);
});

test('sine near pi follows the 66-bit pi of the argument reduction, as the hardware does', () => {
  // x = pi rounded to 64 bits (0xC90FDAA22168C235 × 2^-62): sin(x) = pi66 - x in the hardware's reduction,
  // (0x3243F6A8885A308D3 - 4 × 0xC90FDAA22168C235) × 2^-64 = -1 × 2^-64, exactly.
  const [u, t] = unitAndFunctions(0);
  t.sine(0x4000, 0xc90fdaa2, 0x2168c235);
  assert.deepEqual([u.se, u.hi, u.lo], [0x8000 | (0x3fff - 64), 0x80000000, 0]);
});
