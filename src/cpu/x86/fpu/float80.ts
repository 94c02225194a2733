/**
 * 80-bit extended-precision arithmetic as the x87 does it: sign, 15-bit biased exponent and a 64-bit significand
 * with an explicit integer bit, held as three numbers (`se` = sign << 15 | exponent, `hi` and `lo` the upper and
 * lower 32 bits of the significand, both unsigned). Every operation rounds as the control word says (precision
 * 24/53/64 bits, nearest-even/down/up/toward zero), raises the x87 exception flags, and applies the masked or
 * unmasked response of the Intel SDM. No BigInt: the significand is worked on as 32-bit words in doubles.
 */

/** Exception flags, at their status-word bits. */
export const IE = 0x01, DE = 0x02, ZE = 0x04, OE = 0x08, UE = 0x10, PE = 0x20;

/** What an 80-bit pattern encodes; everything from Infinity up is "special" in the tag word. */
export const enum Kind {
  Zero = 0,
  Normal = 1,
  /** Exponent 0 and a nonzero significand, including pseudo-denormals (integer bit set). */
  Denormal = 2,
  Infinity = 3,
  QNaN = 4,
  SNaN = 5,
  /** Unnormals, pseudo-NaNs and pseudo-infinities: invalid operands since the 80387. */
  Unsupported = 6,
}

/** The real indefinite: the QNaN the x87 produces for invalid operations (negative, significand 0xC000...). */
export const INDEFINITE_SE = 0xffff, INDEFINITE_HI = 0xc0000000;

const TWO32 = 4294967296;
const BIAS = 16383;
/** The exponent adjustment of unmasked overflow/underflow on register results (SDM 8.5.4, 8.5.5). */
const UNMASKED_BIAS = 24576;

export function classify(se: number, hi: number, lo: number): Kind {
  const exp = se & 0x7fff;
  if (exp === 0) return hi === 0 && lo === 0 ? Kind.Zero : Kind.Denormal;
  if ((hi & 0x80000000) === 0) return Kind.Unsupported;
  if (exp !== 0x7fff) return Kind.Normal;
  if ((hi & 0x7fffffff) === 0 && lo === 0) return Kind.Infinity;
  return hi & 0x40000000 ? Kind.QNaN : Kind.SNaN;
}

/** The precision control field (control word bits 8-9) as significand bits; the reserved value 1 acts as 64. */
function precisionBits(control: number): number {
  const pc = (control >> 8) & 3;
  return pc === 0 ? 24 : pc === 2 ? 53 : 64;
}

/**
 * The arithmetic unit: the control word in, the result (`se`, `hi`, `lo`), exception flags and the C1 "rounded up"
 * bit out. Operations never throw; an invalid operation yields the real indefinite and IE. When an exception is
 * unmasked the caller decides from `flags` whether the result is stored (SDM: not for IE, DE, ZE).
 */
export class Float80Unit {
  control = 0x37f;
  /** Exceptions raised since the caller last cleared them. */
  flags = 0;
  /** The last rounding increased the magnitude (the x87 reports it in C1). */
  roundedUp = false;
  se = 0;
  hi = 0;
  lo = 0;
  /** FXTRACT's second result. */
  significandSe = 0;
  significandHi = 0;
  significandLo = 0;

  // The working significand: 96 bits, w2:w1 the 64 result bits and w0 the bits below (with the sticky bit).
  private w2 = 0;
  private w1 = 0;
  private w0 = 0;
  private inexact = false;
  /** The biased exponent `round` leaves. */
  private exponent = 0;

  result(se: number, hi: number, lo: number): void {
    this.se = se;
    this.hi = hi;
    this.lo = lo;
  }

  /** IE and the real indefinite. */
  invalid(): void {
    this.flags |= IE;
    this.result(INDEFINITE_SE, INDEFINITE_HI, 0);
  }

  /** Stores a NaN operand quieted as the result, raising IE for a signaling one. */
  quietNaN(se: number, hi: number, lo: number): void {
    if ((hi & 0x40000000) === 0) this.flags |= IE;
    this.result(se, (hi | 0x40000000) >>> 0, lo);
  }

  /**
   * The result of an operation with a NaN or unsupported operand (x87 rules, SDM table 4-7): unsupported →
   * indefinite; an SNaN with a QNaN → the QNaN; two of a kind → the larger significand (the positive one on a
   * tie); one NaN → it; the result quieted, IE for any SNaN.
   */
  nanResult(ka: Kind, ase: number, ahi: number, alo: number, kb: Kind, bse: number, bhi: number, blo: number): void {
    if (ka === Kind.Unsupported || kb === Kind.Unsupported) return this.invalid();
    const aNaN = ka === Kind.QNaN || ka === Kind.SNaN, bNaN = kb === Kind.QNaN || kb === Kind.SNaN;
    if (ka === Kind.SNaN || kb === Kind.SNaN) this.flags |= IE;
    let pickA: boolean;
    if (!bNaN) pickA = true;
    else if (!aNaN) pickA = false;
    else if (ka !== kb) pickA = ka === Kind.QNaN;
    else {
      const ah = ahi & 0x3fffffff, bh = bhi & 0x3fffffff;
      pickA = ah !== bh ? ah > bh : alo !== blo ? alo > blo : (ase & 0x8000) <= (bse & 0x8000);
    }
    if (pickA) this.result(ase, (ahi | 0x40000000) >>> 0, alo);
    else this.result(bse, (bhi | 0x40000000) >>> 0, blo);
  }

  /** Raises DE for a denormal operand; false when DE is unmasked (the instruction then does nothing else). */
  denormalOperand(): boolean {
    this.flags |= DE;
    return (this.control & DE) !== 0;
  }

  // --- the working significand

  private load(hi: number, lo: number): void {
    this.w2 = hi;
    this.w1 = lo;
    this.w0 = 0;
  }

  /** Shifts the working significand right by n, ORing the lost bits into the lowest bit. */
  private shiftRightJam(n: number): void {
    if (n <= 0) return;
    let w2 = this.w2, w1 = this.w1, w0 = this.w0, sticky = 0;
    if (n >= 96) {
      sticky = w2 | w1 | w0;
      w2 = w1 = w0 = 0;
    } else {
      if (n >= 64) {
        sticky = w1 | w0;
        w0 = w2; w1 = 0; w2 = 0; n -= 64;
      } else if (n >= 32) {
        sticky = w0;
        w0 = w1; w1 = w2; w2 = 0; n -= 32;
      }
      if (n > 0) {
        sticky |= w0 << (32 - n);
        w0 = ((w0 >>> n) | (w1 << (32 - n))) >>> 0;
        w1 = ((w1 >>> n) | (w2 << (32 - n))) >>> 0;
        w2 >>>= n;
      }
    }
    this.w2 = w2;
    this.w1 = w1;
    this.w0 = (w0 | (sticky !== 0 ? 1 : 0)) >>> 0;
  }

  /** Shifts the working significand left until its top bit is set; returns the shift (0 for zero). */
  private normalize(): number {
    let w2 = this.w2, w1 = this.w1, w0 = this.w0, shift = 0;
    if (w2 === 0) {
      if (w1 === 0 && w0 === 0) return 0;
      if (w1 === 0) { w2 = w0; w0 = 0; shift = 64; } else { w2 = w1; w1 = w0; w0 = 0; shift = 32; }
    }
    const z = Math.clz32(w2);
    if (z !== 0) {
      w2 = ((w2 << z) | (w1 >>> (32 - z))) >>> 0;
      w1 = ((w1 << z) | (w0 >>> (32 - z))) >>> 0;
      w0 = (w0 << z) >>> 0;
    }
    this.w2 = w2;
    this.w1 = w1;
    this.w0 = w0;
    return shift + z;
  }

  /**
   * Rounds w2:w1 (with w0 below) to its top `p` bits as the rounding control says. Sets `inexact` and
   * `roundedUp`; returns true when the significand carried out (it is then 2^64, left as 0x8000... for the
   * caller to add 1 to the exponent).
   */
  private roundSignificand(negative: boolean, p: number): boolean {
    let w2 = this.w2, w1 = this.w1;
    const w0 = this.w0;
    let half: boolean, sticky: boolean, odd: boolean, ulp: number;
    if (p === 64) {
      half = w0 >= 0x80000000; sticky = (w0 & 0x7fffffff) !== 0; odd = (w1 & 1) !== 0; ulp = 1;
    } else if (p === 53) {
      half = (w1 & 0x400) !== 0; sticky = ((w1 & 0x3ff) | w0) !== 0; odd = (w1 & 0x800) !== 0; ulp = 0x800;
      w1 = (w1 & 0xfffff800) >>> 0;
    } else {
      half = (w2 & 0x80) !== 0; sticky = ((w2 & 0x7f) | w1 | w0) !== 0; odd = (w2 & 0x100) !== 0; ulp = 0;
      w2 = (w2 & 0xffffff00) >>> 0;
      w1 = 0;
    }
    this.inexact = half || sticky;
    let up: boolean;
    switch ((this.control >> 10) & 3) {
      case 0: up = half && (sticky || odd); break;
      case 1: up = this.inexact && negative; break;
      case 2: up = this.inexact && !negative; break;
      default: up = false;
    }
    this.roundedUp = up;
    let carry = false;
    if (up) {
      if (ulp !== 0) {
        w1 += ulp;
        if (w1 >= TWO32) { w1 -= TWO32; w2 += 1; }
      } else {
        w2 += 0x100;
      }
      if (w2 >= TWO32) { w2 = 0x80000000; carry = true; }
    }
    this.w2 = w2;
    this.w1 = w1;
    this.w0 = 0;
    return carry;
  }

  /**
   * Rounds the working significand (normalized, or zero) times 2^(e - bias) to a format with p significand bits
   * and biased exponents up to emax, and leaves the biased exponent in `exponent` (w2:w1 the significand, with
   * the integer bit clear for denormals). `adjust` is the exponent bias adjustment of unmasked overflow and
   * underflow (0 for stores to memory, which then store nothing).
   */
  private round(negative: boolean, e: number, p: number, emax: number, adjust: number): void {
    this.roundedUp = false;
    this.inexact = false;
    if (this.w2 === 0) {
      this.exponent = 0; // exact zero (the significand is normalized otherwise)
      return;
    }
    // Tiny: below the smallest normal after rounding to p bits with an unbounded exponent (SDM 4.9.1.5).
    if (e < 0 || (e === 0 && !this.roundsToNormal(negative, p))) {
      if (adjust !== 0 && (this.control & UE) === 0) {
        this.flags |= UE;
        e += adjust;
      } else {
        this.shiftRightJam(1 - e);
        this.roundSignificand(negative, p);
        this.exponent = this.w2 >= 0x80000000 ? 1 : 0;
        if (this.inexact) this.flags |= UE | PE;
        else if ((this.control & UE) === 0) this.flags |= UE;
        return;
      }
    }
    if (e > emax) return this.overflow(negative, e, p, emax, adjust);
    if (this.roundSignificand(negative, p)) {
      e++;
      if (e > emax) return this.overflow(negative, e, p, emax, adjust);
    }
    if (this.inexact) this.flags |= PE;
    this.exponent = e;
  }

  /** Whether rounding the working significand to p bits carries out (into the next binade); changes nothing. */
  private roundsToNormal(negative: boolean, p: number): boolean {
    const w2 = this.w2, w1 = this.w1, w0 = this.w0;
    const carry = this.roundSignificand(negative, p);
    this.w2 = w2; this.w1 = w1; this.w0 = w0;
    return carry;
  }

  private overflow(negative: boolean, e: number, p: number, emax: number, adjust: number): void {
    this.flags |= OE;
    if ((this.control & OE) === 0) {
      if (adjust !== 0) {
        // The significand is rounded (again, harmlessly: its extra bits are zero after a carry) at e - 24576.
        if (this.roundSignificand(negative, p)) e++;
        if (this.inexact) this.flags |= PE;
        this.exponent = e - adjust;
      }
      return;
    }
    this.flags |= PE;
    const rc = (this.control >> 10) & 3;
    const toInfinity = rc === 0 || (rc === 1 && negative) || (rc === 2 && !negative);
    this.roundedUp = toInfinity;
    if (toInfinity) {
      this.exponent = emax + 1;
      this.w2 = 0x80000000;
      this.w1 = 0;
    } else {
      this.exponent = emax;
      this.w2 = p === 24 ? 0xffffff00 : 0xffffffff;
      this.w1 = p === 64 ? 0xffffffff : p === 53 ? 0xfffff800 : 0;
    }
  }

  /** Rounds the working significand as a register result (precision control, extended range) into se/hi/lo. */
  private roundToRegister(negative: boolean, e: number): void {
    this.round(negative, e, precisionBits(this.control), 0x7ffe, UNMASKED_BIAS);
    this.result((negative ? 0x8000 : 0) | (this.exponent & 0x7fff), this.w2, this.w1);
  }

  /** Loads a finite nonzero operand normalized into the working significand; returns its biased exponent. */
  private unpack(se: number, hi: number, lo: number): number {
    this.load(hi, lo);
    const exp = se & 0x7fff;
    return (exp === 0 ? 1 : exp) - this.normalize();
  }

  // --- arithmetic

  add(ase: number, ahi: number, alo: number, bse: number, bhi: number, blo: number): void {
    this.addSigned(ase, ahi, alo, bse, bhi, blo, 0);
  }

  sub(ase: number, ahi: number, alo: number, bse: number, bhi: number, blo: number): void {
    this.addSigned(ase, ahi, alo, bse, bhi, blo, 0x8000);
  }

  /** a + b, with b's sign flipped by `negateB` (0x8000 for subtraction; NaNs keep their own sign). */
  private addSigned(ase: number, ahi: number, alo: number, bseIn: number, bhi: number, blo: number, negateB: number): void {
    const ka = classify(ase, ahi, alo), kb = classify(bseIn, bhi, blo);
    if (ka >= Kind.QNaN || kb >= Kind.QNaN) return this.nanResult(ka, ase, ahi, alo, kb, bseIn, bhi, blo);
    const bse = bseIn ^ negateB;
    if (ka === Kind.Infinity || kb === Kind.Infinity) {
      if (ka === Kind.Infinity && kb === Kind.Infinity && ((ase ^ bse) & 0x8000) !== 0) return this.invalid();
      if ((ka === Kind.Denormal || kb === Kind.Denormal) && !this.denormalOperand()) return;
      return ka === Kind.Infinity ? this.result(ase, ahi, alo) : this.result(bse, bhi, blo);
    }
    if ((ka === Kind.Denormal || kb === Kind.Denormal) && !this.denormalOperand()) return;
    const aNeg = (ase & 0x8000) !== 0, bNeg = (bse & 0x8000) !== 0;
    if (ka === Kind.Zero && kb === Kind.Zero) {
      const negative = aNeg === bNeg ? aNeg : ((this.control >> 10) & 3) === 1;
      return this.result(negative ? 0x8000 : 0, 0, 0);
    }
    if (kb === Kind.Zero) return this.roundOperand(aNeg, ase, ahi, alo);
    if (ka === Kind.Zero) return this.roundOperand(bNeg, bse, bhi, blo);
    let ea = (ase & 0x7fff) || 1, eb = (bse & 0x7fff) || 1;
    // Make a the operand of larger exponent; b is shifted to align with it.
    let negative = aNeg;
    let xhi = ahi, xlo = alo, yhi = bhi, ylo = blo;
    if (eb > ea || (eb === ea && (bhi > ahi || (bhi === ahi && blo > alo)))) {
      xhi = bhi; xlo = blo; yhi = ahi; ylo = alo;
      const t = ea; ea = eb; eb = t;
      negative = bNeg;
    }
    this.load(yhi, ylo);
    this.shiftRightJam(ea - eb);
    let e = ea;
    if (aNeg === bNeg) {
      let lo = xlo + this.w1, hi = xhi + this.w2;
      if (lo >= TWO32) { lo -= TWO32; hi += 1; }
      this.w1 = lo;
      this.w2 = hi;
      if (hi >= TWO32) {
        this.w2 = hi - TWO32;
        this.shiftRightJam(1);
        this.w2 = (this.w2 | 0x80000000) >>> 0;
        e++;
      }
    } else {
      // x - y with x >= y in magnitude: the result is nonnegative.
      let w0 = -this.w0, lo = xlo - this.w1, hi = xhi - this.w2;
      if (w0 < 0) { w0 += TWO32; lo -= 1; }
      if (lo < 0) { lo += TWO32; hi -= 1; }
      this.w2 = hi; this.w1 = lo; this.w0 = w0;
      if (hi === 0 && lo === 0 && w0 === 0) return this.result(((this.control >> 10) & 3) === 1 ? 0x8000 : 0, 0, 0);
    }
    e -= this.normalize();
    this.roundToRegister(negative, e);
  }

  /** A finite operand as the result (x + 0), rounded to the precision control (and normalized if denormal). */
  private roundOperand(negative: boolean, se: number, hi: number, lo: number): void {
    const e = this.unpack(se, hi, lo);
    this.roundToRegister(negative, e);
  }

  mul(ase: number, ahi: number, alo: number, bse: number, bhi: number, blo: number): void {
    const ka = classify(ase, ahi, alo), kb = classify(bse, bhi, blo);
    const sign = (ase ^ bse) & 0x8000;
    if (ka >= Kind.Infinity || kb >= Kind.Infinity) {
      if (ka >= Kind.QNaN || kb >= Kind.QNaN) return this.nanResult(ka, ase, ahi, alo, kb, bse, bhi, blo);
      if (ka === Kind.Zero || kb === Kind.Zero) return this.invalid();
      if ((ka === Kind.Denormal || kb === Kind.Denormal) && !this.denormalOperand()) return;
      return this.result(sign | 0x7fff, 0x80000000, 0);
    }
    if ((ka === Kind.Denormal || kb === Kind.Denormal) && !this.denormalOperand()) return;
    if (ka === Kind.Zero || kb === Kind.Zero) return this.result(sign, 0, 0);
    const ea = this.unpack(ase, ahi, alo);
    const ah = this.w2, al = this.w1;
    const eb = this.unpack(bse, bhi, blo);
    this.multiplySignificands(ah, al, this.w2, this.w1);
    let e = ea + eb - BIAS + 1;
    e -= this.normalize();
    this.roundToRegister(sign !== 0, e);
  }

  /** The 128-bit product of two 64-bit significands into the working significand (low 32 bits jammed). */
  private multiplySignificands(ahi: number, alo: number, bhi: number, blo: number): void {
    const a0 = alo & 0xffff, a1 = alo >>> 16, a2 = ahi & 0xffff, a3 = ahi >>> 16;
    const b0 = blo & 0xffff, b1 = blo >>> 16, b2 = bhi & 0xffff, b3 = bhi >>> 16;
    // Columns of 16-bit digit products (each < 2^32, at most four per column): exact in doubles.
    let c = a0 * b0;
    const r0 = c & 0xffff;
    c = (c - r0) / 65536 + a0 * b1 + a1 * b0;
    const r1 = c & 0xffff;
    c = (c - r1) / 65536 + a0 * b2 + a1 * b1 + a2 * b0;
    const r2 = c & 0xffff;
    c = (c - r2) / 65536 + a0 * b3 + a1 * b2 + a2 * b1 + a3 * b0;
    const r3 = c & 0xffff;
    c = (c - r3) / 65536 + a1 * b3 + a2 * b2 + a3 * b1;
    const r4 = c & 0xffff;
    c = (c - r4) / 65536 + a2 * b3 + a3 * b2;
    const r5 = c & 0xffff;
    c = (c - r5) / 65536 + a3 * b3;
    const r6 = c & 0xffff;
    const r7 = (c - r6) / 65536;
    this.w2 = r7 * 65536 + r6;
    this.w1 = r5 * 65536 + r4;
    this.w0 = ((r3 * 65536 + r2) | (r1 !== 0 || r0 !== 0 ? 1 : 0)) >>> 0;
  }

  div(ase: number, ahi: number, alo: number, bse: number, bhi: number, blo: number): void {
    const ka = classify(ase, ahi, alo), kb = classify(bse, bhi, blo);
    const sign = (ase ^ bse) & 0x8000;
    if (ka >= Kind.Infinity || kb >= Kind.Infinity) {
      if (ka >= Kind.QNaN || kb >= Kind.QNaN) return this.nanResult(ka, ase, ahi, alo, kb, bse, bhi, blo);
      if (ka === Kind.Infinity && kb === Kind.Infinity) return this.invalid();
      if ((ka === Kind.Denormal || kb === Kind.Denormal) && !this.denormalOperand()) return;
      return ka === Kind.Infinity ? this.result(sign | 0x7fff, 0x80000000, 0) : this.result(sign, 0, 0);
    }
    if (kb === Kind.Zero) {
      if (ka === Kind.Zero) return this.invalid();
      if (ka === Kind.Denormal && !this.denormalOperand()) return;
      this.flags |= ZE;
      return this.result(sign | 0x7fff, 0x80000000, 0);
    }
    if ((ka === Kind.Denormal || kb === Kind.Denormal) && !this.denormalOperand()) return;
    if (ka === Kind.Zero) return this.result(sign, 0, 0);
    const eb = this.unpack(bse, bhi, blo);
    const dh = this.w2, dl = this.w1;
    let e = this.unpack(ase, ahi, alo) - eb + BIAS;
    // Long division in 16-bit digits: A / D in [1/2, 2) is made [1, 2) (integer digit 1), then four digits
    // estimated in double precision (off by at most one, corrected) give 64 fraction bits: the 63 below the
    // integer bit and a guard bit; the remainder is the sticky bit.
    let rh = this.w2, rl = this.w1;
    if (rh < dh || (rh === dh && rl < dl)) {
      rl *= 2; rh *= 2;
      if (rl >= TWO32) { rl -= TWO32; rh += 1; }
      e--;
    }
    rl -= dl; rh -= dh;
    if (rl < 0) { rl += TWO32; rh -= 1; }
    const divisor = dh * TWO32 + dl;
    let d1 = 0, d2 = 0, d3 = 0, d4 = 0;
    for (let i = 1; i <= 4; i++) {
      const low = rl & 0xffff;
      rh = rh * 65536 + (rl - low) / 65536;
      rl = low * 65536;
      let q = Math.floor((rh * TWO32 + rl) / divisor);
      if (q > 65535) q = 65535;
      rl -= q * dl; rh -= q * dh;
      const borrow = Math.floor(rl / TWO32);
      rl -= borrow * TWO32; rh += borrow;
      while (rh < 0) {
        rl += dl; rh += dh; q--;
        if (rl >= TWO32) { rl -= TWO32; rh += 1; }
      }
      while (rh > dh || (rh === dh && rl >= dl)) {
        rl -= dl; rh -= dh; q++;
        if (rl < 0) { rl += TWO32; rh -= 1; }
      }
      if (i === 1) d1 = q; else if (i === 2) d2 = q; else if (i === 3) d3 = q; else d4 = q;
    }
    this.w2 = 0x80000000 + d1 * 32768 + (d2 >>> 1);
    this.w1 = (d2 & 1) * 0x80000000 + d3 * 32768 + (d4 >>> 1);
    this.w0 = ((d4 & 1) !== 0 ? 0x80000000 : 0) + (rh !== 0 || rl !== 0 ? 1 : 0);
    this.roundToRegister(sign !== 0, e);
  }

  sqrt(se: number, hi: number, lo: number): void {
    const k = classify(se, hi, lo);
    const negative = (se & 0x8000) !== 0;
    if (k >= Kind.QNaN) return k === Kind.Unsupported ? this.invalid() : this.quietNaN(se, hi, lo);
    if (k === Kind.Zero) return this.result(se, 0, 0);
    if (negative) return this.invalid();
    if (k === Kind.Infinity) return this.result(se, hi, lo);
    if (k === Kind.Denormal && !this.denormalOperand()) return;
    let e = this.unpack(se, hi, lo) - BIAS;
    // The radicand m = significand (or twice it, making the exponent even) followed by zeros; its integer root
    // has 66 bits: the 64-bit result, a guard bit, and one more whose remainder supplies the sticky bit.
    const odd = (e & 1) !== 0;
    if (odd) e -= 1;
    const mh = this.w2, ml = this.w1;
    // The radicand is 132 bits: [0 if the exponent is even][64 significand bits][zeros]. Its top 52 bits are
    // exact in a double, and so is their integer root (26 bits): that replaces the first 26 steps of the
    // digit-by-digit root, which then brings down two radicand bits a step (remainder r, root q).
    const top = odd ? mh * 1048576 + (ml >>> 12) : mh * 524288 + (ml >>> 13);
    let q = Math.floor(Math.sqrt(top));
    if (q * q > top) q--;
    let r = top - q * q;
    // The radicand's remaining significand bits (12 or 13), as a 14-bit field; zeros follow.
    const tail = odd ? (ml & 0xfff) << 2 : (ml & 0x1fff) << 1;
    // Steps 26 to 50: remainder <= 2 × root, and the trial 4 × root + 1, stay below 2^53: one double each.
    for (let k = 0; k < 25; k++) {
      r = r * 4 + (k < 7 ? (tail >>> (12 - 2 * k)) & 3 : 0);
      const trial = q * 4 + 1;
      q *= 2;
      if (r >= trial) { r -= trial; q += 1; }
    }
    // Steps 51 to 65 (the radicand bits are zeros now) in two words.
    let rh = Math.floor(r / TWO32), rl = r - rh * TWO32, qh = Math.floor(q / TWO32), ql = q - qh * TWO32;
    for (let i = 51; i < 66; i++) {
      rl *= 4; rh *= 4;
      if (rl >= TWO32) { const c = Math.floor(rl / TWO32); rl -= c * TWO32; rh += c; }
      let tl = ql * 4 + 1, th = qh * 4;
      if (tl >= TWO32) { const c = Math.floor(tl / TWO32); tl -= c * TWO32; th += c; }
      qh *= 2; ql *= 2;
      if (ql >= TWO32) { ql -= TWO32; qh += 1; }
      if (rh > th || (rh === th && rl >= tl)) {
        rl -= tl; rh -= th;
        if (rl < 0) { rl += TWO32; rh -= 1; }
        ql += 1;
      }
    }
    // q has 66 bits: two below the significand.
    const low2 = ql & 3;
    this.w0 = low2 * 0x40000000 + (rh !== 0 || rl !== 0 ? 1 : 0);
    this.w1 = ((ql - low2) / 4 + (qh & 3) * 0x40000000) >>> 0;
    this.w2 = Math.floor(qh / 4) >>> 0;
    this.roundToRegister(false, e / 2 + BIAS);
  }

  /**
   * Rounds m × 2^e (m > 0, a BigInt of any length; `exact` false when m is an approximation, whose lost bits
   * then count as nonzero) to 64 bits into se/hi/lo: the transcendental instructions ignore precision control.
   */
  roundApproximation(negative: boolean, m: bigint, e: number, exact: boolean): void {
    const length = m.toString(2).length;
    let top: bigint;
    let sticky = !exact;
    if (length > 96) {
      top = m >> BigInt(length - 96);
      if (!sticky) sticky = (top << BigInt(length - 96)) !== m;
    } else {
      top = m << BigInt(96 - length);
    }
    this.w2 = Number(top >> 64n);
    this.w1 = Number((top >> 32n) & 0xffffffffn);
    this.w0 = (Number(top & 0xffffffffn) | (sticky ? 1 : 0)) >>> 0;
    const saved = this.control;
    this.control |= 0x300;
    this.roundToRegister(negative, e + length - 1 + BIAS);
    this.control = saved;
  }

  /** FRNDINT: rounds to an integer as the rounding control says (no precision control). */
  roundToInteger(se: number, hi: number, lo: number): void {
    const k = classify(se, hi, lo);
    if (k >= Kind.Infinity) {
      if (k === Kind.Infinity) return this.result(se, hi, lo);
      return k === Kind.Unsupported ? this.invalid() : this.quietNaN(se, hi, lo);
    }
    if (k === Kind.Zero) return this.result(se, 0, 0);
    if (k === Kind.Denormal && !this.denormalOperand()) return;
    const negative = (se & 0x8000) !== 0;
    if (!this.integerPart(se, hi, lo)) return this.result(se, hi, lo);
    if (this.inexact) this.flags |= PE;
    const e = BIAS + 63 - this.normalize();
    if (this.w2 === 0) return this.result(negative ? 0x8000 : 0, 0, 0);
    this.result((negative ? 0x8000 : 0) | e, this.w2, this.w1);
  }

  /**
   * Rounds a finite nonzero value to an integer in w2:w1 (rounding control; `inexact`, `roundedUp` set).
   * Returns false when the value is at least 2^63, already an integer (w2:w1 then untouched).
   */
  private integerPart(se: number, hi: number, lo: number): boolean {
    const e = this.unpack(se, hi, lo) - BIAS;
    this.inexact = false;
    this.roundedUp = false;
    if (e >= 63) return false;
    this.shiftRightJam(63 - e);
    this.roundSignificand((se & 0x8000) !== 0, 64);
    return true;
  }

  /**
   * The value as a signed integer of `bits` (16, 32, 64) for FIST: into `hi`/`lo` (two's complement, lo the
   * low word); returns false with IE raised (and the integer indefinite 0x8000... in hi/lo) when it does not fit.
   */
  toInteger(se: number, hi: number, lo: number, bits: number): boolean {
    const k = classify(se, hi, lo);
    this.roundedUp = false;
    if (k === Kind.Zero) { this.hi = this.lo = 0; return true; }
    if (k >= Kind.Infinity) return this.integerIndefinite(bits); // and no DE for FIST (SDM: #IA, #P only)
    const negative = (se & 0x8000) !== 0;
    if (!this.integerPart(se, hi, lo)) {
      // 2^63 and above: only -2^63 fits, in 64 bits.
      if (!(bits === 64 && negative && (se & 0x7fff) === BIAS + 63 && hi === 0x80000000 && lo === 0)) return this.integerIndefinite(bits);
      this.hi = 0x80000000; this.lo = 0;
      return true;
    }
    let mh = this.w2, ml = this.w1;
    const limitHigh = bits === 64 ? 0x80000000 : 0, limitLow = bits === 64 ? 0 : 2 ** (bits - 1);
    // |value| must be below 2^(bits-1), or equal to it when negative.
    const over = mh > limitHigh || (mh === limitHigh && ml > limitLow) || (mh === limitHigh && ml === limitLow && !negative);
    if (over) return this.integerIndefinite(bits);
    if (this.inexact) this.flags |= PE;
    if (negative && (mh !== 0 || ml !== 0)) {
      ml = TWO32 - ml;
      mh = ml === TWO32 ? TWO32 - mh : TWO32 - 1 - mh;
      if (ml === TWO32) ml = 0;
      mh >>>= 0;
    }
    this.hi = mh;
    this.lo = ml;
    return true;
  }

  private integerIndefinite(bits: number): false {
    this.flags |= IE;
    this.roundedUp = false;
    this.hi = bits === 64 ? 0x80000000 : 0;
    this.lo = bits === 64 ? 0 : 2 ** (bits - 1);
    return false;
  }

  /** An integer (magnitude hi:lo, sign separate) as an 80-bit value: always exact. */
  fromInteger(negative: boolean, hi: number, lo: number): void {
    this.load(hi, lo);
    if (hi === 0 && lo === 0) return this.result(negative ? 0x8000 : 0, 0, 0);
    const e = BIAS + 63 - this.normalize();
    this.result((negative ? 0x8000 : 0) | e, this.w2, this.w1);
  }

  // --- memory formats

  /** An IEEE single (bits) as an 80-bit value: exact; SNaN → IE and quieted, denormal → DE. */
  fromFloat32(bits: number): void {
    const sign = (bits >>> 16) & 0x8000, exp = (bits >>> 23) & 0xff, frac = bits & 0x7fffff;
    if (exp === 0xff) {
      if (frac === 0) return this.result(sign | 0x7fff, 0x80000000, 0);
      return this.quietNaN(sign | 0x7fff, (0x80000000 | (frac << 8)) >>> 0, 0);
    }
    if (exp === 0) {
      if (frac === 0) return this.result(sign, 0, 0);
      this.flags |= DE;
      this.load(frac, 0);
      const e = BIAS - 118 - this.normalize();
      return this.result(sign | e, this.w2, 0);
    }
    this.result(sign | (exp - 127 + BIAS), (0x80000000 | (frac << 8)) >>> 0, 0);
  }

  /** An IEEE double (low and high words) as an 80-bit value. */
  fromFloat64(low: number, high: number): void {
    const sign = (high >>> 16) & 0x8000, exp = (high >>> 20) & 0x7ff;
    const fh = high & 0xfffff, fl = low >>> 0;
    const sigHi = ((fh << 11) | (fl >>> 21)) >>> 0, sigLo = (fl << 11) >>> 0;
    if (exp === 0x7ff) {
      if (fh === 0 && fl === 0) return this.result(sign | 0x7fff, 0x80000000, 0);
      return this.quietNaN(sign | 0x7fff, (0x80000000 | sigHi) >>> 0, sigLo);
    }
    if (exp === 0) {
      if (fh === 0 && fl === 0) return this.result(sign, 0, 0);
      this.flags |= DE;
      this.load(sigHi, sigLo);
      const e = BIAS - 1022 - this.normalize();
      return this.result(sign | e, this.w2, this.w1);
    }
    this.result(sign | (exp - 1023 + BIAS), (0x80000000 | sigHi) >>> 0, sigLo);
  }

  /**
   * Converts to a narrower IEEE format for FST m32/m64: rounding control applies, not precision control; NaNs
   * keep their sign and top significand bits. Leaves the sign, biased exponent and significand in `se`
   * (sign << 15 | exponent), `hi`, `lo`. Returns false when an unmasked exception forbids the store.
   */
  private toNarrow(se: number, hi: number, lo: number, p: number, emax: number, bias: number, max: number): boolean {
    const k = classify(se, hi, lo);
    const sign = se & 0x8000;
    this.roundedUp = false;
    switch (k) {
      case Kind.Zero: this.result(sign, 0, 0); return true;
      case Kind.Infinity: this.result(sign | max, 0x80000000, 0); return true;
      case Kind.QNaN: case Kind.SNaN:
        this.quietNaN(sign | max, hi, lo);
        return (this.flags & ~this.control & IE) === 0;
      case Kind.Unsupported:
        this.flags |= IE;
        this.result(0x8000 | max, INDEFINITE_HI, 0);
        return (this.control & IE) !== 0;
    }
    const e = this.unpack(se, hi, lo) - BIAS + bias; // FST raises no DE (SDM: #IA, #U, #O, #P only)
    this.round(sign !== 0, e, p, emax, 0);
    this.result(sign | this.exponent, this.w2, this.w1);
    return (this.flags & ~this.control & (OE | UE)) === 0;
  }

  /** FST m32: the single's bits, or null when an unmasked exception forbids the store. */
  toFloat32(se: number, hi: number, lo: number): number | null {
    if (!this.toNarrow(se, hi, lo, 24, 0xfe, 127, 0xff)) return null;
    return ((this.se & 0x8000) << 16 | (this.se & 0xff) << 23 | ((this.hi >>> 8) & 0x7fffff)) >>> 0;
  }

  /** FST m64: the double's words into `lo` (low) and `hi` (high); false when nothing is stored. */
  toFloat64(se: number, hi: number, lo: number): boolean {
    if (!this.toNarrow(se, hi, lo, 53, 0x7fe, 1023, 0x7ff)) return false;
    const sh = this.hi, sl = this.lo;
    this.hi = ((this.se & 0x8000) << 16 | (this.se & 0x7ff) << 20 | ((sh >>> 11) & 0xfffff)) >>> 0;
    this.lo = ((sh << 21) | (sl >>> 11)) >>> 0;
    return true;
  }

  // --- compares

  /**
   * Compares a with b: 0 less, 1 equal, 2 greater, 3 unordered. FCOM raises IE for any NaN, FUCOM (quiet) only
   * for SNaNs; unsupported operands always raise IE.
   */
  compare(ase: number, ahi: number, alo: number, bse: number, bhi: number, blo: number, quiet: boolean): number {
    const ka = classify(ase, ahi, alo), kb = classify(bse, bhi, blo);
    if (ka >= Kind.QNaN || kb >= Kind.QNaN) {
      if (!quiet || ka === Kind.SNaN || kb === Kind.SNaN || ka === Kind.Unsupported || kb === Kind.Unsupported) this.flags |= IE;
      return 3;
    }
    if (ka === Kind.Denormal || kb === Kind.Denormal) this.flags |= DE;
    const aNeg = (ase & 0x8000) !== 0 && ka !== Kind.Zero, bNeg = (bse & 0x8000) !== 0 && kb !== Kind.Zero;
    if (ka === Kind.Zero && kb === Kind.Zero) return 1;
    if (aNeg !== bNeg) return aNeg ? 0 : 2;
    const m = this.compareMagnitude(ka, ase, ahi, alo, kb, bse, bhi, blo);
    return m === 0 ? 1 : (m > 0) !== aNeg ? 2 : 0;
  }

  private compareMagnitude(ka: Kind, ase: number, ahi: number, alo: number, kb: Kind, bse: number, bhi: number, blo: number): number {
    if (ka === Kind.Zero) return -1;
    if (kb === Kind.Zero) return 1;
    const ea = this.unpack(ase, ahi, alo);
    const xh = this.w2, xl = this.w1;
    const eb = this.unpack(bse, bhi, blo);
    if (ea !== eb) return ea > eb ? 1 : -1;
    if (xh !== this.w2) return xh > this.w2 ? 1 : -1;
    return xl === this.w1 ? 0 : xl > this.w1 ? 1 : -1;
  }

  // --- exponent and remainder

  /** FSCALE: a times 2^trunc(b). A NaN scale is the result (quieted) even when a is a NaN with a larger significand. */
  scale(ase: number, ahi: number, alo: number, bse: number, bhi: number, blo: number): void {
    const ka = classify(ase, ahi, alo), kb = classify(bse, bhi, blo);
    if (kb === Kind.QNaN || kb === Kind.SNaN) {
      if (ka === Kind.Unsupported) return this.invalid();
      if (ka === Kind.SNaN) this.flags |= IE;
      return this.quietNaN(bse, bhi, blo);
    }
    if (ka >= Kind.QNaN || kb >= Kind.QNaN) return this.nanResult(ka, ase, ahi, alo, kb, bse, bhi, blo);
    const bNeg = (bse & 0x8000) !== 0;
    if (kb === Kind.Infinity) {
      if (ka === Kind.Zero ? !bNeg : ka === Kind.Infinity && bNeg) return this.invalid();
      if ((ka === Kind.Denormal) && !this.denormalOperand()) return;
      if (ka === Kind.Infinity || ka === Kind.Zero) return this.result(ase, ahi, alo);
      return bNeg ? this.result(ase & 0x8000, 0, 0) : this.result((ase & 0x8000) | 0x7fff, 0x80000000, 0);
    }
    if ((ka === Kind.Denormal || kb === Kind.Denormal) && !this.denormalOperand()) return;
    if (ka === Kind.Zero || ka === Kind.Infinity) return this.result(ase, ahi, alo);
    let n = 0;
    if (kb !== Kind.Zero) {
      const eb = this.unpack(bse, bhi, blo) - BIAS;
      // Beyond 2^16 every finite operand overflows or underflows; clamp to keep the arithmetic small.
      n = eb < 0 ? 0 : eb > 16 ? 0x20000 : Math.floor(this.w2 / 2 ** (31 - eb));
      if (bNeg) n = -n;
    }
    const e = this.unpack(ase, ahi, alo) + n;
    this.roundToRegisterExtended((ase & 0x8000) !== 0, e);
  }

  /**
   * FXTRACT: the exponent (as a value, into se/hi/lo) and the significand with exponent 0 (into
   * `significand*`). Zero: ZE, exponent -inf, significand the zero.
   */
  extract(se: number, hi: number, lo: number): void {
    const k = classify(se, hi, lo);
    if (k >= Kind.QNaN) {
      if (k === Kind.Unsupported) this.invalid();
      else this.quietNaN(se, hi, lo);
      this.significandSe = this.se; this.significandHi = this.hi; this.significandLo = this.lo;
      return;
    }
    if (k === Kind.Infinity) {
      this.significandSe = se; this.significandHi = hi; this.significandLo = lo;
      return this.result(0x7fff, 0x80000000, 0);
    }
    if (k === Kind.Zero) {
      this.flags |= ZE;
      this.significandSe = se; this.significandHi = 0; this.significandLo = 0;
      return this.result(0xffff, 0x80000000, 0);
    }
    if (k === Kind.Denormal && !this.denormalOperand()) return;
    const e = this.unpack(se, hi, lo) - BIAS;
    this.significandSe = (se & 0x8000) | BIAS; this.significandHi = this.w2; this.significandLo = this.w1;
    this.fromInteger(e < 0, 0, Math.abs(e));
  }

  /**
   * FPREM (truncating quotient) / FPREM1 (IEEE, nearest): the partial remainder of a by b into se/hi/lo.
   * Returns the status bits C0, C1, C2, C3 (at their status-word positions): C2 set when the reduction is
   * incomplete, else the quotient's low three bits in C0 (q2), C3 (q1), C1 (q0).
   */
  remainder(ase: number, ahi: number, alo: number, bse: number, bhi: number, blo: number, nearest: boolean): number {
    const ka = classify(ase, ahi, alo), kb = classify(bse, bhi, blo);
    if (ka >= Kind.QNaN || kb >= Kind.QNaN) { this.nanResult(ka, ase, ahi, alo, kb, bse, bhi, blo); return 0; }
    if (ka === Kind.Infinity || kb === Kind.Zero) { this.invalid(); return 0; }
    if ((ka === Kind.Denormal || kb === Kind.Denormal) && !this.denormalOperand()) return 0;
    if (ka === Kind.Zero || kb === Kind.Infinity) { this.result(ase, ahi, alo); return 0; }
    const eb = this.unpack(bse, bhi, blo);
    const dh = this.w2, dl = this.w1;
    const ea = this.unpack(ase, ahi, alo);
    let diff = ea - eb;
    const negative = (ase & 0x8000) !== 0;
    if (diff < 0) {
      // |a| < |b|: the quotient is 0 (FPREM1 may still round it to 1 when |a| > |b|/2).
      if (nearest && diff === -1 && (this.w2 > dh || (this.w2 === dh && this.w1 > dl))) {
        this.remainderResult(negative, eb, dh, dl);
        return 0x200;
      }
      this.result(ase, ahi, alo);
      return 0;
    }
    let partial = false;
    if (diff >= 64) {
      // A partial remainder: reduce by 32 to 63 bits at a time (the count AMD documents and Intel follows), so
      // the last step of a loop yields the correct low quotient bits; the partial step truncates.
      partial = true;
      diff = 32 + (diff % 32);
    }
    // r = a's significand, then diff steps of r = 2r, subtracting d when it fits; q collects the low bits.
    let rh = this.w2, rl = this.w1, q = 0;
    for (let i = 0; ; i++) {
      q = (q * 2) & 7;
      if (rh > dh || (rh === dh && rl >= dl)) {
        rl -= dl; rh -= dh;
        if (rl < 0) { rl += TWO32; rh -= 1; }
        q |= 1;
      }
      if (i === diff) break;
      rl *= 2; rh *= 2;
      if (rl >= TWO32) { rl -= TWO32; rh += 1; }
    }
    let resultNegative = negative;
    if (nearest && !partial) {
      // Round the quotient to nearest: take b - r when 2r > b, or 2r = b with q odd.
      const th = rh * 2 + (rl >= 0x80000000 ? 1 : 0), tl = rl >= 0x80000000 ? rl * 2 - TWO32 : rl * 2;
      if (th > dh || (th === dh && (tl > dl || (tl === dl && (q & 1) !== 0)))) {
        rl = dl - rl; rh = dh - rh;
        if (rl < 0) { rl += TWO32; rh -= 1; }
        q = (q + 1) & 7;
        resultNegative = !negative;
      }
    }
    // The remainder is r * 2^(eb - 63 - ...) scaled like b's significand.
    const shiftedExponent = ea - diff;
    this.load(rh >>> 0, rl >>> 0);
    if (rh === 0 && rl === 0) {
      this.result(negative ? 0x8000 : 0, 0, 0);
    } else {
      const e = shiftedExponent - this.normalize();
      this.roundToRegisterExtended(resultNegative, e);
    }
    if (partial) return 0x400;
    return (q & 4 ? 0x100 : 0) | (q & 2 ? 0x4000 : 0) | (q & 1 ? 0x200 : 0);
  }

  /** b - a for FPREM1 when |b|/2 < |a| < |b|: the remainder a - b, of the opposite sign. */
  private remainderResult(negative: boolean, eb: number, dh: number, dl: number): void {
    // a has exponent eb - 1: align a to b's scale (a/2) and compute b - a exactly, then normalize.
    const ah = this.w2, al = this.w1;
    this.load(dh, dl);
    let w0 = 0, lo = dl - (((al >>> 1) | ((ah & 1) << 31)) >>> 0), hi = dh - (ah >>> 1);
    if ((al & 1) !== 0) { w0 = 0x80000000; lo -= 1; }
    if (lo < 0) { lo += TWO32; hi -= 1; }
    this.w2 = hi; this.w1 = lo; this.w0 = w0;
    const e = eb - this.normalize();
    this.roundToRegisterExtended(!negative, e);
  }

  /** A result precision control does not apply to (FSCALE, remainders): rounded to 64 bits, denormalized if tiny. */
  private roundToRegisterExtended(negative: boolean, e: number): void {
    const saved = this.control;
    this.control |= 0x300;
    this.roundToRegister(negative, e);
    this.control = saved;
  }
}
