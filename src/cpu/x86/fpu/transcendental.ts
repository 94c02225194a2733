import { type Float80Unit, Kind, classify } from './float80.js';

/**
 * The x87 transcendental instructions: FSIN, FCOS, FSINCOS, FPTAN, FPATAN, F2XM1, FYL2X, FYL2XP1. Values are
 * computed in BigInt floating point with ~200 significant bits and rounded once to 64 bits (these instructions
 * ignore precision control), so results are the correctly rounded ones except in vanishingly rare near-ties.
 * Like the hardware, FSIN/FCOS/FSINCOS/FPTAN reduce their argument by a 66-bit approximation of pi (SDM 8.3.10):
 * for large arguments the result follows that reduction, not the true function. Slow next to the arithmetic,
 * as on the hardware (tens to hundreds of cycles there).
 */

const PRECISION = 200;
const BIAS = 16383;

/** m × 2^e: a BigInt floating-point value; m carries the sign. */
interface Big {
  m: bigint;
  e: number;
}

function bitLength(m: bigint): number {
  return m === 0n ? 0 : (m < 0n ? -m : m).toString(2).length;
}

function trim(x: Big): Big {
  const excess = bitLength(x.m) - PRECISION;
  return excess > 0 ? { m: x.m >> BigInt(excess), e: x.e + excess } : x;
}

function mul(a: Big, b: Big): Big {
  return trim({ m: a.m * b.m, e: a.e + b.e });
}

function div(a: Big, b: Big): Big {
  const shift = PRECISION + bitLength(b.m) - bitLength(a.m) + 2;
  return trim({ m: (a.m << BigInt(shift)) / b.m, e: a.e - b.e - shift });
}

function add(a: Big, b: Big): Big {
  if (a.m === 0n) return b;
  if (b.m === 0n) return a;
  // An operand below the other's precision only perturbs bits that are dropped anyway.
  const gap = a.e + bitLength(a.m) - (b.e + bitLength(b.m));
  if (gap > PRECISION + 4) return a;
  if (gap < -PRECISION - 4) return b;
  const e = Math.min(a.e, b.e);
  return trim({ m: (a.m << BigInt(a.e - e)) + (b.m << BigInt(b.e - e)), e });
}

function neg(a: Big): Big {
  return { m: -a.m, e: a.e };
}

function int(n: number | bigint): Big {
  return { m: BigInt(n), e: 0 };
}

function sqrtBig(a: Big): Big {
  // sqrt(m × 2^e) with m widened to 2·PRECISION bits and e made even.
  let shift = 2 * PRECISION - bitLength(a.m);
  if ((a.e - shift) % 2 !== 0) shift++;
  const n = a.m << BigInt(shift);
  let x = 1n << BigInt(Math.ceil(bitLength(n) / 2));
  for (;;) {
    const y = (x + n / x) >> 1n;
    if (y >= x) break;
    x = y;
  }
  return trim({ m: x, e: (a.e - shift) / 2 });
}

/** Below 2^-PRECISION of the sum: the series has converged. */
function negligible(term: Big, sum: Big): boolean {
  return term.m === 0n || term.e + bitLength(term.m) < sum.e + bitLength(sum.m) - PRECISION - 2;
}

/** atan(1/n) × 2^bits as an integer (Machin-style series), for the constants. */
function arctanInverse(n: bigint, bits: bigint): bigint {
  let power = (1n << bits) / n, sum = power, k = 1n;
  const n2 = n * n;
  while (power !== 0n) {
    power /= n2;
    const term = power / (2n * k + 1n);
    sum += k % 2n === 1n ? -term : term;
    k++;
  }
  return sum;
}

const GUARD = 20;
const PI: Big = { m: 16n * arctanInverse(5n, BigInt(PRECISION + GUARD)) - 4n * arctanInverse(239n, BigInt(PRECISION + GUARD)), e: -(PRECISION + GUARD) };
/** ln 2 = 2 atanh(1/3). */
const LN2: Big = (() => {
  const bits = BigInt(PRECISION + GUARD);
  let power = (1n << bits) / 3n, sum = power, k = 1n;
  while (power !== 0n) {
    power /= 9n;
    sum += power / (2n * k + 1n);
    k++;
  }
  return { m: 2n * sum, e: -(PRECISION + GUARD) };
})();
/** The hardware's 66-bit pi/2 for argument reduction: 0x3243F6A8885A308D3 × 2^-65. */
const PI66_HALF = 0x3243f6a8885a308d3n;

function fromRegister(se: number, hi: number, lo: number): Big {
  const exp = se & 0x7fff;
  const m = (BigInt(hi) << 32n) | BigInt(lo);
  return { m: se & 0x8000 ? -m : m, e: (exp === 0 ? 1 : exp) - BIAS - 63 };
}

/** sin(r) and cos(r) by their Taylor series (|r| <= pi/4 after reduction). */
function sinCos(r: Big): [Big, Big] {
  const r2 = mul(r, r);
  let term = r, sin = r;
  for (let k = 1; !negligible(term, sin); k++) {
    term = neg(div(mul(term, r2), int((2 * k) * (2 * k + 1))));
    sin = add(sin, term);
  }
  let cterm = int(1), cos = int(1);
  for (let k = 1; ; k++) {
    cterm = neg(div(mul(cterm, r2), int((2 * k - 1) * (2 * k))));
    if (negligible(cterm, cos)) break;
    cos = add(cos, cterm);
  }
  return [sin, cos];
}

/** atan(t) for 0 <= t <= 1: three argument halvings (t / (1 + sqrt(1 + t²))), then the series. */
function arctan(t: Big): Big {
  let halvings = 0;
  while (halvings < 3 && t.m !== 0n && t.e + bitLength(t.m) > -8) {
    t = div(t, add(int(1), sqrtBig(add(int(1), mul(t, t)))));
    halvings++;
  }
  const t2 = mul(t, t);
  let power = t, sum = t;
  for (let k = 1; ; k++) {
    power = neg(mul(power, t2));
    const term = div(power, int(2 * k + 1));
    if (negligible(term, sum)) break;
    sum = add(sum, term);
  }
  return { m: sum.m, e: sum.e + halvings };
}

/** ln(1 + x) as 2 atanh(x / (2 + x)), for x > -1. */
function log1p(x: Big): Big {
  const s = div(x, add(int(2), x));
  const s2 = mul(s, s);
  let power = s, sum = s;
  for (let k = 1; ; k++) {
    power = mul(power, s2);
    const term = div(power, int(2 * k + 1));
    if (negligible(term, sum)) break;
    sum = add(sum, term);
  }
  return { m: sum.m, e: sum.e + 1 };
}

/** e^z - 1 by its series (|z| small). */
function expm1(z: Big): Big {
  let term = z, sum = z;
  for (let k = 2; ; k++) {
    term = div(mul(term, z), int(k));
    if (negligible(term, sum)) break;
    sum = add(sum, term);
  }
  return sum;
}

export class Transcendentals {
  /** FSINCOS's sine (the unit's result holds the cosine). */
  sineSe = 0;
  sineHi = 0;
  sineLo = 0;

  constructor(private readonly unit: Float80Unit) {}

  private deliver(x: Big, exact = false): void {
    if (x.m === 0n) return this.unit.result(0, 0, 0);
    this.unit.roundApproximation(x.m < 0n, x.m < 0n ? -x.m : x.m, x.e, exact);
  }

  /**
   * NaN operands of FPATAN, FYL2X, FYL2XP1 (x = ST(0), y = ST(1)): an SNaN in ST(0), then in ST(1), wins (quieted,
   * IE); then an unsupported operand (indefinite); then a QNaN in ST(0), then in ST(1). Unlike the arithmetic,
   * no comparison of significands (as QEMU, whose x87 transcendentals follow the hardware, does it).
   */
  private nanResult(kx: Kind, xse: number, xhi: number, xlo: number, ky: Kind, yse: number, yhi: number, ylo: number): void {
    const u = this.unit;
    if (kx === Kind.SNaN) return u.quietNaN(xse, xhi, xlo);
    if (ky === Kind.SNaN) return u.quietNaN(yse, yhi, ylo);
    if (kx === Kind.Unsupported || ky === Kind.Unsupported) return u.invalid();
    if (kx === Kind.QNaN) return u.result(xse, xhi, xlo);
    u.result(yse, yhi, ylo);
  }

  /** A finite |x| >= 2^63: FSIN, FCOS, FSINCOS, FPTAN leave it and set C2. */
  outOfRange(se: number, hi: number, lo: number): boolean {
    const k = classify(se, hi, lo);
    return (k === Kind.Normal || k === Kind.Unsupported) && (se & 0x7fff) >= BIAS + 63 && (se & 0x7fff) !== 0x7fff;
  }

  /**
   * A one-operand function's special cases; returns false when handled (NaN, infinity, unsupported, an
   * unmasked denormal), else true with DE raised for a denormal.
   */
  private finiteOperand(se: number, hi: number, lo: number): boolean {
    const k = classify(se, hi, lo);
    if (k === Kind.QNaN || k === Kind.SNaN) { this.unit.quietNaN(se, hi, lo); return false; }
    if (k === Kind.Infinity || k === Kind.Unsupported) { this.unit.invalid(); return false; }
    if (k === Kind.Denormal && !this.unit.denormalOperand()) return false;
    return true;
  }

  /** x reduced by multiples of the 66-bit pi/2: the quadrant (0-3) and the remainder. */
  private reduce(se: number, hi: number, lo: number): [number, Big] {
    const x = fromRegister(se, hi, lo);
    if (x.e + 64 < 0) return [0, x]; // |x| < 1/2
    const scaled = x.m << BigInt(x.e + 65); // x × 2^65, exact
    let n = scaled / PI66_HALF;
    let rem = scaled - n * PI66_HALF;
    // To nearest: |remainder| <= pi/4.
    if (2n * (rem < 0n ? -rem : rem) > PI66_HALF) {
      const step = rem < 0n ? -1n : 1n;
      n += step;
      rem -= step * PI66_HALF;
    }
    return [Number(((n % 4n) + 4n) % 4n), trim({ m: rem, e: -65 })];
  }

  private sineOrCosine(se: number, hi: number, lo: number, cosine: boolean): void {
    if (!this.finiteOperand(se, hi, lo)) return;
    const k = classify(se, hi, lo);
    if (k === Kind.Zero) return cosine ? this.unit.result(0x3fff, 0x80000000, 0) : this.unit.result(se, 0, 0);
    const [quadrant, r] = this.reduce(se, hi, lo);
    const [s, c] = sinCos(r);
    const q = cosine ? (quadrant + 1) & 3 : quadrant;
    this.deliver(q === 0 ? s : q === 1 ? c : q === 2 ? neg(s) : neg(c));
  }

  sine(se: number, hi: number, lo: number): void {
    this.sineOrCosine(se, hi, lo, false);
  }

  cosine(se: number, hi: number, lo: number): void {
    this.sineOrCosine(se, hi, lo, true);
  }

  /** FSINCOS: the sine into sine*, the cosine as the unit's result. */
  sineCosine(se: number, hi: number, lo: number): void {
    const u = this.unit;
    this.sine(se, hi, lo);
    this.sineSe = u.se; this.sineHi = u.hi; this.sineLo = u.lo;
    const flags = u.flags, up = u.roundedUp;
    this.cosine(se, hi, lo);
    u.flags |= flags;
    u.roundedUp ||= up;
  }

  tangent(se: number, hi: number, lo: number): void {
    if (!this.finiteOperand(se, hi, lo)) return;
    if (classify(se, hi, lo) === Kind.Zero) return this.unit.result(se, 0, 0);
    const [quadrant, r] = this.reduce(se, hi, lo);
    const [s, c] = sinCos(r);
    this.deliver(quadrant & 1 ? neg(div(c, s)) : div(s, c));
  }

  /** FPATAN: atan(y / x) in the quadrant of (x, y), with the C library's atan2 special cases. */
  arctangent(yse: number, yhi: number, ylo: number, xse: number, xhi: number, xlo: number): void {
    const u = this.unit;
    const ky = classify(yse, yhi, ylo), kx = classify(xse, xhi, xlo);
    if (ky >= Kind.QNaN || kx >= Kind.QNaN) return this.nanResult(kx, xse, xhi, xlo, ky, yse, yhi, ylo);
    if ((ky === Kind.Denormal || kx === Kind.Denormal) && !u.denormalOperand()) return;
    const yNeg = (yse & 0x8000) !== 0, xNeg = (xse & 0x8000) !== 0;
    const signed = (v: Big) => (yNeg ? neg(v) : v);
    const half = (v: Big) => ({ m: v.m, e: v.e - 1 });
    if (ky === Kind.Zero) return xNeg ? this.deliver(signed(PI)) : u.result(yse, 0, 0);
    if (ky === Kind.Infinity) {
      if (kx === Kind.Infinity) return this.deliver(signed(xNeg ? mul(PI, { m: 3n, e: -2 }) : { m: PI.m, e: PI.e - 2 }));
      return this.deliver(signed(half(PI)));
    }
    if (kx === Kind.Zero) return this.deliver(signed(half(PI)));
    if (kx === Kind.Infinity) return xNeg ? this.deliver(signed(PI)) : u.result(yse & 0x8000, 0, 0);
    const y = fromRegister(yse & 0x7fff, yhi, ylo), x = fromRegister(xse & 0x7fff, xhi, xlo);
    const ratio = div(y, x);
    // |y| >= |x|: atan(y/x) = pi/2 - atan(x/y), keeping the series argument at most 1.
    let a = ratio.e + bitLength(ratio.m) >= 1 ? add(half(PI), neg(arctan(div(x, y)))) : arctan(ratio);
    if (xNeg) a = add(PI, neg(a));
    this.deliver(signed(a));
  }

  /** F2XM1: 2^x - 1, defined for -1 <= x <= 1. */
  twoToXMinus1(se: number, hi: number, lo: number): void {
    const u = this.unit;
    const k = classify(se, hi, lo);
    if (k === Kind.QNaN || k === Kind.SNaN) return u.quietNaN(se, hi, lo);
    if (k === Kind.Unsupported) return u.invalid();
    if (k === Kind.Infinity) return se & 0x8000 ? u.result(0xbfff, 0x80000000, 0) : u.result(se, hi, lo);
    if (k === Kind.Denormal && !u.denormalOperand()) return;
    if (k === Kind.Zero) return u.result(se, 0, 0);
    const x = fromRegister(se, hi, lo);
    if ((se & 0x7fff) === BIAS && hi === 0x80000000 && lo === 0) {
      return se & 0x8000 ? u.result(0xbffe, 0x80000000, 0) : u.result(0x3fff, 0x80000000, 0); // 2^±1 - 1, exact
    }
    // Beyond [-1, 1] the instruction is undefined; 2^x is computed as 2^floor(x) × 2^(x - floor(x)).
    const whole = bitLength(x.m) + x.e > 1 ? Number(x.m >> BigInt(-x.e)) : 0;
    if (Math.abs(whole) > 20000) return whole > 0 ? this.deliver({ m: 1n, e: 20000 }) : u.result(0xbfff, 0x80000000, 0);
    let result = expm1(mul(add(x, int(-whole)), LN2));
    if (whole !== 0) {
      const power = add(result, int(1));
      result = add({ m: power.m, e: power.e + whole }, int(-1));
    }
    this.deliver(result);
  }

  /** FYL2X: y × log2(x). */
  yLog2X(yse: number, yhi: number, ylo: number, xse: number, xhi: number, xlo: number): void {
    this.yLog(yse, yhi, ylo, xse, xhi, xlo, false);
  }

  /** FYL2XP1: y × log2(x + 1), for |x| < 1 - sqrt(2)/2. */
  yLog2XPlus1(yse: number, yhi: number, ylo: number, xse: number, xhi: number, xlo: number): void {
    this.yLog(yse, yhi, ylo, xse, xhi, xlo, true);
  }

  private yLog(yse: number, yhi: number, ylo: number, xse: number, xhi: number, xlo: number, plusOne: boolean): void {
    const u = this.unit;
    const ky = classify(yse, yhi, ylo), kx = classify(xse, xhi, xlo);
    if (ky >= Kind.QNaN || kx >= Kind.QNaN) return this.nanResult(kx, xse, xhi, xlo, ky, yse, yhi, ylo);
    const xNeg = (xse & 0x8000) !== 0 && kx !== Kind.Zero, yNeg = (yse & 0x8000) !== 0;
    const infinity = (negative: boolean) => u.result((negative ? 0x8000 : 0) | 0x7fff, 0x80000000, 0);
    const zero = (negative: boolean) => u.result(negative ? 0x8000 : 0, 0, 0);
    if (!plusOne) {
      if (xNeg || (kx === Kind.Zero && ky === Kind.Zero)) return u.invalid();
      if ((ky === Kind.Denormal || kx === Kind.Denormal) && !u.denormalOperand()) return;
      if (kx === Kind.Zero) {
        if (ky === Kind.Infinity) return infinity(!yNeg);
        u.flags |= 0x4; // ZE: log2(0) = -inf
        return infinity(!yNeg);
      }
      if (kx === Kind.Infinity) return ky === Kind.Zero ? u.invalid() : infinity(yNeg);
      const x = fromRegister(xse, xhi, xlo);
      const one = x.m === 1n << 63n && x.e === -63;
      if (ky === Kind.Infinity) return one ? u.invalid() : infinity(yNeg !== (x.e + 64 <= 0));
      if (ky === Kind.Zero) return zero(yNeg !== (x.e + 64 <= 0 && !one));
      // log2(x) = k + log2(m), m in [sqrt(1/2), sqrt(2)), so that the logarithm of m loses nothing near 1.
      const length = bitLength(x.m);
      let k = x.e + length - 1;
      let m: Big = { m: x.m, e: 1 - length };
      if (m.m * m.m > 2n << BigInt(2 * (length - 1))) { m = { m: m.m, e: m.e - 1 }; k++; }
      // A power of two has an exact logarithm, and then so is the product (before its rounding).
      const powerOfTwo = (x.m & (x.m - 1n)) === 0n;
      const log2 = powerOfTwo ? int(k) : add(int(k), div(log1p(add(m, int(-1))), LN2));
      if (log2.m === 0n) return zero(yNeg);
      return this.deliver(mul(fromRegister(yse, yhi, ylo), log2), powerOfTwo);
    }
    if (kx === Kind.Infinity) return xNeg || ky === Kind.Zero ? u.invalid() : infinity(yNeg);
    if ((ky === Kind.Denormal || kx === Kind.Denormal) && !u.denormalOperand()) return;
    const x = fromRegister(xse, xhi, xlo);
    if (kx !== Kind.Zero && x.m < 0n && add(x, int(1)).m <= 0n) return u.invalid();
    if (kx === Kind.Zero) {
      if (ky === Kind.Infinity) return u.invalid();
      return zero(((xse ^ yse) & 0x8000) !== 0);
    }
    if (ky === Kind.Infinity) return infinity(yNeg !== xNeg);
    if (ky === Kind.Zero) return zero(yNeg !== xNeg);
    this.deliver(mul(fromRegister(yse, yhi, ylo), div(log1p(x), LN2)));
  }
}
