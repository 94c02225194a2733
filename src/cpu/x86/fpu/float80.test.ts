import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DE, Float80Unit, IE, OE, PE, UE, ZE } from './float80.js';

/**
 * The arithmetic against an exact reference: operands as BigInt significand × 2^exponent, the exact result as a
 * rational, rounded here the slow and obvious way (every rounding mode and precision, denormals by clamping
 * the exponent: the x87 rounds a tiny result at the same significand position; tininess is detected after
 * rounding).
 */

const EMIN = -16382;
type Value = { se: number; hi: number; lo: number };

function sig(v: Value): bigint {
  return (BigInt(v.hi) << 32n) | BigInt(v.lo);
}

/** The value as significand × 2^exponent (integer significand). */
function exact(v: Value): { n: bigint; e: number; neg: boolean } {
  const exp = v.se & 0x7fff;
  return { n: sig(v), e: (exp === 0 ? 1 : exp) - 16383 - 63, neg: (v.se & 0x8000) !== 0 };
}

function bitLength(n: bigint): number {
  return n === 0n ? 0 : n.toString(2).length;
}

let lastInexact = false, lastUp = false;

/** num/den × 2^e in units of 2^t, rounded to an integer as rc says. */
function roundQuotient(neg: boolean, num: bigint, den: bigint, e: number, t: number, rc: number): bigint {
  const s = e - t;
  let numS = num, denS = den;
  if (s >= 0) numS <<= BigInt(s); else denS <<= BigInt(-s);
  const q = numS / denS;
  const r2 = (numS - q * denS) * 2n;
  lastInexact = r2 !== 0n;
  if (rc === 0) lastUp = r2 > denS || (r2 === denS && (q & 1n) === 1n);
  else if (rc === 1) lastUp = lastInexact && neg;
  else if (rc === 2) lastUp = lastInexact && !neg;
  else lastUp = false;
  return lastUp ? q + 1n : q;
}

/** Rounds the positive rational num/den × 2^e to p bits with the x87's extended exponent range. */
function reference(neg: boolean, num: bigint, den: bigint, e: number, p: number, rc: number): { v: Value; flags: number; up: boolean } {
  // k = floor(log2(num/den × 2^e))
  let k = bitLength(num) - bitLength(den) + e;
  const ge = (kk: number) => {
    // num/den × 2^e >= 2^kk ?
    const s = e - kk;
    return s >= 0 ? (num << BigInt(s)) >= den : num >= (den << BigInt(-s));
  };
  if (!ge(k)) k--;
  // Tiny after rounding: the value rounded to p bits with an unbounded exponent is below 2^EMIN.
  const unbounded = roundQuotient(neg, num, den, e, k - (p - 1), rc);
  const tiny = k < EMIN && !(k === EMIN - 1 && unbounded === 1n << BigInt(p));
  let t = Math.max(k, EMIN) - (p - 1);
  let q = roundQuotient(neg, num, den, e, t, rc);
  const inexact = lastInexact, up = lastUp;
  if (q === 1n << BigInt(p)) { q >>= 1n; t++; }
  let flags = inexact ? PE : 0;
  if (tiny && inexact) flags |= UE;
  const significand = q << BigInt(64 - p);
  const normal = q >= 1n << BigInt(p - 1);
  const exp = normal ? t + (p - 1) + 16383 : 0;
  if (exp >= 0x7fff) throw new Error('reference: overflow not covered');
  const v = { se: (neg ? 0x8000 : 0) | exp, hi: Number(significand >> 32n), lo: Number(significand & 0xffffffffn) };
  return { v, flags, up };
}

function isqrt(n: bigint): bigint {
  let x = 1n << BigInt(Math.ceil(bitLength(n) / 2));
  for (;;) {
    const y = (x + n / x) >> 1n;
    if (y >= x) return x;
    x = y;
  }
}

/** A deterministic generator of operands that exercise ties, carries and long runs of ones. */
function* operands(count: number, expRange: [number, number]): Generator<Value> {
  let seed = 0x9e3779b9;
  const next = () => {
    seed ^= seed << 13; seed >>>= 0;
    seed ^= seed >>> 17;
    seed ^= seed << 5; seed >>>= 0;
    return seed;
  };
  for (let i = 0; i < count; i++) {
    const style = next() % 4;
    let hi = (next() | 0x80000000) >>> 0, lo = next();
    if (style === 1) lo = ((lo & 0xfffff800) | 0x400) >>> 0;
    if (style === 2) { hi = 0xffffffff; lo = (0xffffff00 | (next() & 0xff)) >>> 0; }
    if (style === 3) { hi = ((hi & 0xffffff00) | 0x80) >>> 0; lo = 0; }
    const e = expRange[0] + (next() % (expRange[1] - expRange[0] + 1));
    yield { se: (next() & 1 ? 0x8000 : 0) | (e + 16383), hi, lo };
  }
}

const MODES = [0, 1, 2, 3];
const PRECISIONS: [number, number][] = [[24, 0], [53, 2], [64, 3]];

function check(name: string, unit: Float80Unit, want: { v: Value; flags: number; up: boolean }, args: unknown): void {
  const got = { se: unit.se, hi: unit.hi, lo: unit.lo };
  if (got.se !== want.v.se || got.hi !== want.v.hi || got.lo !== want.v.lo || (unit.flags & (PE | UE)) !== want.flags || unit.roundedUp !== want.up) {
    assert.fail(`${name} ${JSON.stringify(args)}: got ${JSON.stringify(got)} flags ${unit.flags} up ${unit.roundedUp}, want ${JSON.stringify(want)}`);
  }
}

function binaryCases(expRange: [number, number], count: number): [Value, Value][] {
  const a = [...operands(count, expRange)], b = [...operands(count + 1, expRange)].slice(1);
  return a.map((x, i) => [x, b[i]!]);
}

test('add, sub, mul, div round exactly in every rounding mode and precision', () => {
  const unit = new Float80Unit();
  const cases = binaryCases([-70, 70], 400);
  for (const [p, pc] of PRECISIONS) for (const rc of MODES) {
    unit.control = 0x7f | (pc << 8) | (rc << 10);
    for (const [a, b] of cases) {
      const x = exact(a), y = exact(b);
      // add and sub: align to the smaller exponent
      for (const negateB of [false, true]) {
        const yneg = y.neg !== negateB;
        const e = Math.min(x.e, y.e);
        const xs = (x.neg ? -x.n : x.n) << BigInt(x.e - e), ys = (yneg ? -y.n : y.n) << BigInt(y.e - e);
        const sum = xs + ys;
        unit.flags = 0;
        if (negateB) unit.sub(a.se, a.hi, a.lo, b.se, b.hi, b.lo); else unit.add(a.se, a.hi, a.lo, b.se, b.hi, b.lo);
        if (sum === 0n) {
          assert.deepEqual([unit.se, unit.hi, unit.lo], [rc === 1 ? 0x8000 : 0, 0, 0]);
          continue;
        }
        check(negateB ? 'sub' : 'add', unit, reference(sum < 0n, sum < 0n ? -sum : sum, 1n, e, p, rc), { a, b, p, rc });
      }
      unit.flags = 0;
      unit.mul(a.se, a.hi, a.lo, b.se, b.hi, b.lo);
      check('mul', unit, reference(x.neg !== y.neg, x.n * y.n, 1n, x.e + y.e, p, rc), { a, b, p, rc });
      unit.flags = 0;
      unit.div(a.se, a.hi, a.lo, b.se, b.hi, b.lo);
      check('div', unit, reference(x.neg !== y.neg, x.n, y.n, x.e - y.e, p, rc), { a, b, p, rc });
    }
  }
});

test('sqrt rounds exactly in every rounding mode and precision', () => {
  const unit = new Float80Unit();
  for (const [p, pc] of PRECISIONS) for (const rc of MODES) {
    unit.control = 0x7f | (pc << 8) | (rc << 10);
    for (const a0 of operands(300, [-40, 40])) {
      const a = { ...a0, se: a0.se & 0x7fff };
      const x = exact(a);
      // sqrt(n × 2^e) with e made even, as the rational isqrt(n × 2^(2s)) + sticky
      const extra = 140 + ((x.e & 1) ? 1 : 0);
      const radicand = x.n << BigInt(extra);
      const root = isqrt(radicand);
      const exactRoot = root * root === radicand;
      // the inexact root is represented as (2·root + 1) / 2: strictly between root and root + 1, same rounding
      const num = exactRoot ? root : 2n * root + 1n, den = exactRoot ? 1n : 2n;
      unit.flags = 0;
      unit.sqrt(a.se, a.hi, a.lo);
      check('sqrt', unit, reference(false, num, den, (x.e - extra) / 2, p, rc), { a, p, rc });
    }
  }
});

test('sqrt of exact squares is exact (no PE), odd and even exponents', () => {
  const unit = new Float80Unit();
  unit.control = 0x37f;
  for (const root of [3n, 0xffffffffn, 0xb504f333n, 12345678n, 1n << 31n, 0x80000001n]) {
    for (const shift of [0n, 1n]) {
      // root² × 4^shift as an 80-bit value, then its square root
      const square = (root * root) << (2n * shift);
      const length = square.toString(2).length;
      const sig = square << BigInt(64 - length);
      unit.flags = 0;
      unit.sqrt(16383 + length - 1, Number(sig >> 32n), Number(sig & 0xffffffffn));
      const want = root << shift;
      const wl = want.toString(2).length, wsig = want << BigInt(64 - wl);
      assert.deepEqual([unit.se, unit.hi, unit.lo, unit.flags], [16383 + wl - 1, Number(wsig >> 32n), Number(wsig & 0xffffffffn), 0], `sqrt(${square})`);
    }
  }
});

test('tiny results become denormals, rounded at the precision control position; UE when inexact', () => {
  const unit = new Float80Unit();
  for (const [p, pc] of PRECISIONS) for (const rc of MODES) {
    unit.control = 0x7f | (pc << 8) | (rc << 10);
    for (const [a, b] of binaryCases([-8200, -8150], 200)) {
      const x = exact(a), y = exact(b);
      unit.flags = 0;
      unit.mul(a.se, a.hi, a.lo, b.se, b.hi, b.lo);
      check('mul (tiny)', unit, reference(x.neg !== y.neg, x.n * y.n, 1n, x.e + y.e, p, rc), { a, b, p, rc });
    }
  }
});

test('overflow: masked gives infinity or the largest finite value by rounding mode; unmasked adjusts the exponent', () => {
  const unit = new Float80Unit();
  const big = { se: 0x7ffe, hi: 0xc0000000, lo: 0 };
  const expectations: [number, number, number, number][] = [
    // rc, result se, hi, lo for +big * +big
    [0, 0x7fff, 0x80000000, 0],
    [1, 0x7ffe, 0xffffffff, 0xffffffff],
    [2, 0x7fff, 0x80000000, 0],
    [3, 0x7ffe, 0xffffffff, 0xffffffff],
  ];
  for (const [rc, se, hi, lo] of expectations) {
    unit.control = 0x37f | (rc << 10);
    unit.flags = 0;
    unit.mul(big.se, big.hi, big.lo, big.se, big.hi, big.lo);
    assert.deepEqual([unit.se, unit.hi, unit.lo, unit.flags], [se, hi, lo, OE | PE], `rc ${rc}`);
  }
  unit.control = 0x27f; // 53-bit precision: the largest finite value has 53 ones
  unit.flags = 0;
  unit.control |= 0xc00;
  unit.mul(big.se, big.hi, big.lo, big.se, big.hi, big.lo);
  assert.deepEqual([unit.se, unit.hi, unit.lo], [0x7ffe, 0xffffffff, 0xfffff800]);
  // Unmasked: 1.5² × 2^32766 = 1.125 × 2^32767, stored with the exponent less 24576, exact.
  unit.control = 0x377;
  unit.flags = 0;
  unit.mul(big.se, big.hi, big.lo, big.se, big.hi, big.lo);
  assert.deepEqual([unit.se, unit.hi, unit.lo, unit.flags], [32767 + 16383 - 24576, 0x90000000, 0, OE]);
});

test('special operands: NaN propagation, invalid operations, division by zero, denormal operands', () => {
  const unit = new Float80Unit();
  const run = (f: () => void) => {
    unit.flags = 0;
    f();
    return [unit.se, unit.hi >>> 0, unit.lo, unit.flags];
  };
  const qnan = (neg: boolean, hi: number) => ({ se: (neg ? 0x8000 : 0) | 0x7fff, hi: (0xc0000000 | hi) >>> 0, lo: 0 });
  const snan = (neg: boolean, hi: number) => ({ se: (neg ? 0x8000 : 0) | 0x7fff, hi: (0x80000000 | hi) >>> 0, lo: 0 });
  const one = { se: 0x3fff, hi: 0x80000000, lo: 0 };
  const inf = { se: 0x7fff, hi: 0x80000000, lo: 0 };
  const zero = { se: 0, hi: 0, lo: 0 };
  const args = (a: Value, b: Value) => [a.se, a.hi, a.lo, b.se, b.hi, b.lo] as const;
  // The larger significand wins between two QNaNs, whatever the order.
  assert.deepEqual(run(() => unit.add(...args(qnan(false, 1), qnan(true, 2)))), [0xffff, 0xc0000002, 0, 0]);
  assert.deepEqual(run(() => unit.add(...args(qnan(true, 2), qnan(false, 1)))), [0xffff, 0xc0000002, 0, 0]);
  // SNaN with a QNaN: the QNaN, even with the smaller significand; IE.
  assert.deepEqual(run(() => unit.mul(...args(snan(false, 5), qnan(true, 1)))), [0xffff, 0xc0000001, 0, IE]);
  // One SNaN: quieted, sign kept; its sign survives subtraction.
  assert.deepEqual(run(() => unit.sub(...args(one, snan(false, 5)))), [0x7fff, 0xc0000005, 0, IE]);
  // Invalid operations give the negative indefinite.
  assert.deepEqual(run(() => unit.sub(...args(inf, inf))), [0xffff, 0xc0000000, 0, IE]);
  assert.deepEqual(run(() => unit.mul(...args(inf, zero))), [0xffff, 0xc0000000, 0, IE]);
  assert.deepEqual(run(() => unit.div(...args(zero, zero))), [0xffff, 0xc0000000, 0, IE]);
  assert.deepEqual(run(() => unit.sqrt(0x8000 | one.se, one.hi, 0)), [0xffff, 0xc0000000, 0, IE]);
  // Unnormals (integer bit clear, nonzero exponent) and pseudo-infinities are invalid operands.
  assert.deepEqual(run(() => unit.add(...args({ se: 0x3fff, hi: 0x40000000, lo: 0 }, one))), [0xffff, 0xc0000000, 0, IE]);
  assert.deepEqual(run(() => unit.add(...args({ se: 0x7fff, hi: 0, lo: 0 }, one))), [0xffff, 0xc0000000, 0, IE]);
  assert.deepEqual(run(() => unit.div(...args(one, { se: 0x8000, hi: 0, lo: 0 }))), [0xffff, 0x80000000, 0, ZE]);
  // A denormal operand raises DE; a pseudo-denormal (integer bit set, exponent 0) is worth the same as exponent 1.
  assert.deepEqual(run(() => unit.add(...args({ se: 0, hi: 0x80000000, lo: 0 }, zero))), [0x0001, 0x80000000, 0, DE]);
  // Unmasked DE: nothing but the flag.
  unit.control = 0x37d;
  unit.se = 0x1234;
  unit.hi = 0x5678;
  assert.deepEqual(run(() => unit.add(...args({ se: 0, hi: 1, lo: 0 }, one))), [0x1234, 0x5678, 0, DE]);
});

test('stores to single and double: rounding, NaN signs and payloads, overflow', () => {
  const unit = new Float80Unit();
  unit.control = 0x37f;
  const f64 = new Float64Array(1), w = new Uint32Array(f64.buffer);
  for (const x of [1, -2.5, 0.1, 1e300, -1e-310, 5e-324, Number.MAX_VALUE]) {
    f64[0] = x;
    unit.flags = 0;
    unit.fromFloat64(w[0]!, w[1]!);
    const se = unit.se, hi = unit.hi, lo = unit.lo;
    assert.ok(unit.toFloat64(se, hi, lo));
    assert.deepEqual([unit.lo, unit.hi], [w[0], w[1]], String(x));
    const bits = unit.toFloat32(se, hi, lo);
    const f32 = new Float32Array([x]);
    assert.equal(bits, new Uint32Array(f32.buffer)[0], `single ${x}`);
  }
  // A negative QNaN with payload keeps its sign and top bits.
  unit.flags = 0;
  assert.equal(unit.toFloat32(0xffff, 0xc1234567, 0x89abcdef), 0xffc12345);
  assert.ok(unit.toFloat64(0xffff, 0xc1234567, 0x89abcdef));
  assert.deepEqual([unit.hi, unit.lo], [0xfff82468, 0xacf13579]);
  assert.equal(unit.flags, 0);
  // An SNaN: IE and quieted.
  unit.flags = 0;
  assert.equal(unit.toFloat32(0x7fff, 0x80000001, 0x100), 0x7fc00000);
  assert.equal(unit.flags, IE);
  // Overflow of the destination: masked → infinity; unmasked → nothing stored.
  unit.flags = 0;
  assert.equal(unit.toFloat32(0x4000 + 200, 0x80000000, 0), 0x7f800000);
  assert.equal(unit.flags, OE | PE);
  unit.control = 0x377;
  assert.equal(unit.toFloat32(0x4000 + 200, 0x80000000, 0), null);
});

test('integer conversions: rounding, range, indefinite', () => {
  const unit = new Float80Unit();
  unit.control = 0x37f;
  const toInt = (x: number, bits: number) => {
    const f64 = new Float64Array([x]), w = new Uint32Array(f64.buffer);
    unit.fromFloat64(w[0]!, w[1]!);
    unit.flags = 0;
    const ok = unit.toInteger(unit.se, unit.hi, unit.lo, bits);
    return [ok, bits === 64 ? (BigInt(unit.hi) << 32n) | BigInt(unit.lo) : unit.lo >>> 0, unit.flags];
  };
  assert.deepEqual(toInt(2.5, 32), [true, 2, PE]);
  assert.deepEqual(toInt(3.5, 32), [true, 4, PE]);
  assert.deepEqual(toInt(-3.5, 16), [true, 0xfffffffc, PE]);
  assert.deepEqual(toInt(-32768, 16), [true, 0xffff8000, 0]);
  assert.deepEqual(toInt(32768, 16), [false, 0x8000, IE]);
  assert.deepEqual(toInt(2 ** 31, 32), [false, 0x80000000, IE]);
  assert.deepEqual(toInt(-(2 ** 63), 64), [true, 0x8000000000000000n, 0]);
  assert.deepEqual(toInt(2 ** 63, 64), [false, 0x8000000000000000n, IE]);
  assert.deepEqual(toInt(-1, 64), [true, 0xffffffffffffffffn, 0]);
  unit.control = 0x77f; // round down
  assert.deepEqual(toInt(-0.5, 32), [true, 0xffffffff, PE]);
});
