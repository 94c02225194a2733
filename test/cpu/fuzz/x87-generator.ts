import { AF, CF, OF, PF, SF, STATUS, ZF, effect } from './flags.js';
import type { UnitBuilder } from './generator.js';
import type { Random } from './random.js';

/**
 * x87 units: FNINIT, a control word (every precision and rounding control, exceptions masked), one or two
 * operands (80-bit patterns including NaNs, infinities, denormals and unnormals; doubles, floats, integers,
 * constants), one operation, then the status word after it (condition codes the SDM leaves undefined for
 * that operation masked) in EDX, every stack register stored as 80 bits into buf[0..39], and the status word
 * after the stores in EAX. Operands are staged in buf[64..], the control word at buf[120].
 */

const C0 = 0x100, C1 = 0x200, C2 = 0x400, C3 = 0x4000;
/**
 * Exception flags and TOP: defined after every instruction. DE (0x2) and the stack fault (SF, 0x40) are left
 * out: qemu-i386 7.2, the oracle here, never reports either (tsvm does, as the SDM says; test/cpu/x87.test.ts
 * checks them against the SDM).
 */
const ALWAYS = 0x3d | 0x3800;
const CONDITION_DEFINED = ALWAYS | C0 | C1 | C2 | C3;
/** After a rounding operation C1 says "rounded up" (SDM 8.1.3.3); qemu-i386 7.2 never sets it there. */
const ROUNDED = ALWAYS;

const hex = (v: number | bigint) => '0x' + v.toString(16);
const SIGNIFICAND_TOP = 1n << 63n;

/** An 80-bit extended value as sign, biased exponent and 64-bit significand (explicit integer bit). */
function extended(rng: Random): [number, number, bigint] {
  const sign = rng.below(2);
  const random64 = () => (BigInt(rng.u32()) << 32n) | BigInt(rng.u32());
  switch (rng.below(12)) {
    case 0: return [sign, 0, 0n]; // zero
    case 1: return [sign, 0x7fff, SIGNIFICAND_TOP]; // infinity
    case 2: return [sign, 0x7fff, SIGNIFICAND_TOP | (1n << 62n) | (rng.chance(0.5) ? 0n : random64() >> 2n)]; // quiet NaN
    case 3: return [sign, 0x7fff, SIGNIFICAND_TOP | (random64() >> 2n) | 1n]; // signalling NaN
    case 4: return [sign, 0, random64() >> 1n]; // denormal
    case 5: return [sign, rng.pick([1, 0x7ffe]), SIGNIFICAND_TOP | (rng.chance(0.5) ? 0n : random64() >> 1n)]; // extremes
    case 6: return [sign, 0x3fff + rng.between(-2, 2), SIGNIFICAND_TOP]; // powers of two near 1
    case 7: return [sign, rng.chance(0.2) ? rng.between(1, 0x7ffe) : 0x3fff + rng.between(-80, 80), random64() >> 1n]; // unnormal (invalid)
    case 8: return [sign, 0x3fff + rng.between(-3, 66), SIGNIFICAND_TOP | (random64() >> BigInt(rng.between(1, 63)))]; // integral-ish
    default: return [sign, 0x3fff + rng.between(-70, 70), SIGNIFICAND_TOP | (random64() >> 1n)];
  }
}

/** A 64-bit double pattern: specials and denormals, or a random value. */
function double(rng: Random): bigint {
  const sign = BigInt(rng.below(2)) << 63n;
  const fraction = (BigInt(rng.u32() & 0xfffff) << 32n) | BigInt(rng.u32());
  switch (rng.below(6)) {
    case 0: return sign | (0x7ffn << 52n) | (rng.chance(0.5) ? 0n : fraction); // infinity or NaN
    case 1: return sign | (rng.chance(0.5) ? fraction : 1n); // denormal
    case 2: return sign | (BigInt(1023 + rng.between(-5, 60)) << 52n) | (fraction >> BigInt(rng.below(52)));
    default: return sign | (BigInt(rng.between(1, 0x7fe)) << 52n) | fraction;
  }
}

function float(rng: Random): number {
  const sign = rng.below(2) << 31;
  const fraction = rng.u32() & 0x7fffff;
  switch (rng.below(5)) {
    case 0: return (sign | (0xff << 23) | (rng.chance(0.5) ? 0 : fraction)) >>> 0;
    case 1: return (sign | fraction) >>> 0;
    default: return (sign | (rng.between(1, 0xfe) << 23) | fraction) >>> 0;
  }
}

/**
 * qemu-i386 7.2 rounds every conversion into the 80-bit format (FLD m64, FILD, an m64 or integer operand of
 * arithmetic) to the precision control, setting PE; the SDM has these conversions exact. Under single precision
 * only operands that fit 24 bits (floats, 16-bit integers) are generated, under double precision no 64-bit integer.
 */
interface Exactness { readonly doubles: boolean; readonly int32: boolean; readonly int64: boolean }
const exactness = (precision: number): Exactness => ({ doubles: precision !== 0, int32: precision !== 0, int64: precision === 3 });

const isNaN64 = (d: bigint) => ((d >> 52n) & 0x7ffn) === 0x7ffn && (d & ((1n << 52n) - 1n)) !== 0n;
const isNaN32 = (f: number) => ((f >>> 23) & 0xff) === 0xff && (f & 0x7fffff) !== 0;

/** Stages an operand at buf+at and loads it onto the stack; true if it is a NaN. */
function load(u: UnitBuilder, rng: Random, at: number, exact: Exactness): boolean {
  const put32 = (offset: number, v: number) => u.emit(`movl $${hex(v >>> 0)}, buf+${at + offset}`);
  switch (rng.below(7)) {
    case 0: case 1: case 2: {
      const [sign, exponent, significand] = extended(rng);
      put32(0, Number(significand & 0xffffffffn));
      put32(4, Number(significand >> 32n));
      u.emit(`movw $${hex((sign << 15) | exponent)}, buf+${at + 8}`);
      u.emit(`fldt buf+${at}`);
      return exponent === 0x7fff && significand !== SIGNIFICAND_TOP;
    }
    case 3: {
      if (!exact.doubles) break;
      const d = double(rng);
      put32(0, Number(d & 0xffffffffn));
      put32(4, Number(d >> 32n));
      u.emit(`fldl buf+${at}`);
      return isNaN64(d);
    }
    case 5: {
      const kind = rng.pick(['filds', 'fildl', 'fildll'].filter((k) => k === 'filds' || (k === 'fildl' ? exact.int32 : exact.int64)));
      put32(0, rng.operand());
      put32(4, rng.chance(0.5) ? rng.operand() : 0);
      u.emit(`${kind} buf+${at}`);
      return false;
    }
    case 6:
      u.emit(rng.pick(['fld1', 'fldz', 'fldpi', 'fldl2e', 'fldl2t', 'fldlg2', 'fldln2']));
      return false;
  }
  // case 4, and case 3 where a double would not load exactly
  const f = float(rng);
  put32(0, f);
  u.emit(`flds buf+${at}`);
  return isNaN32(f);
}

export function x87Unit(u: UnitBuilder, rng: Random): void {
  u.emit('fninit');
  const precision = rng.pick([0, 2, 3]);
  const rounding = rng.below(4);
  u.emit(`movw $${hex(0x7f | (precision << 8) | (rounding << 10))}, buf+120`);
  u.emit('fldcw buf+120');
  const exact = exactness(precision);
  load(u, rng, 64, exact);
  const nanOnTop = load(u, rng, 80, exact);
  let depth = 2;
  let defined = ALWAYS | C1;
  /** Arithmetic with a memory operand staged at buf+96: float, double, 16- or 32-bit integer. */
  const withMemory = (op: string) => {
    let kind = rng.below(4);
    if ((kind === 0 && !exact.doubles) || (kind === 3 && !exact.int32)) kind = kind === 0 ? 1 : 2;
    // qemu-i386 7.2 quiets a signalling NaN from memory before choosing between two NaNs (the SDM compares the
    // significands of the original NaNs): with a NaN in ST(0), a NaN operand from memory is a quiet one.
    let d = double(rng), f = float(rng);
    if (nanOnTop && isNaN64(d)) d |= 1n << 51n;
    if (nanOnTop && isNaN32(f)) f = (f | 0x400000) >>> 0;
    const low = kind === 0 ? Number(d & 0xffffffffn) : kind === 1 ? f : rng.operand();
    u.emit(`movl $${hex(low >>> 0)}, buf+96`);
    if (kind === 0) u.emit(`movl $${hex(Number(d >> 32n))}, buf+100`);
    u.emit(`${kind >= 2 ? 'fi' + op.slice(1) : op}${kind === 0 || kind === 3 ? 'l' : 's'} buf+96`);
  };
  switch (rng.below(7)) {
    case 0: case 1: {
      const op = rng.pick(['fadd', 'fsub', 'fsubr', 'fmul', 'fdiv', 'fdivr']);
      const form = rng.below(4);
      if (form === 0) u.emit(`${op} %st(1), %st`);
      else if (form === 1) u.emit(`${op} %st, %st(1)`);
      else if (form === 2) { u.emit(`${op}p %st, %st(1)`); depth = 1; }
      else withMemory(op);
      defined = ROUNDED;
      break;
    }
    case 2: {
      const op = rng.pick(['fsqrt', 'fabs', 'fchs', 'frndint', 'fscale', 'fxtract', 'fprem', 'fprem1', 'fxch']);
      if (op === 'frndint' || op === 'fprem' || op === 'fprem1') {
        // qemu-i386 7.2 rounds their results to the precision control, setting PE and UE (the SDM: exact in 64 bits).
        u.emit(`movw $${hex(0x37f | (rounding << 10))}, buf+120`);
        u.emit('fldcw buf+120');
      }
      u.emit(op);
      if (op === 'fxtract') depth = 3;
      if (op === 'fsqrt' || op === 'frndint' || op === 'fscale') defined = ROUNDED;
      if (op === 'fprem') defined = CONDITION_DEFINED;
      // qemu-i386 7.2's FPREM1 quotient bits (C0, C3, C1) are wrong; C2 (incomplete) is right.
      if (op === 'fprem1') defined = ALWAYS | C2;
      break;
    }
    case 3: {
      const op = rng.pick(['fcom', 'fcomp', 'fcompp', 'fucom', 'fucomp', 'fucompp', 'ftst', 'fxam']);
      u.emit(op === 'ftst' || op === 'fxam' || op.endsWith('pp') ? op : `${op} %st(1)`);
      depth -= op.endsWith('pp') ? 2 : op.endsWith('p') ? 1 : 0;
      defined = CONDITION_DEFINED;
      break;
    }
    case 4: {
      const op = rng.pick(['fcomi', 'fucomi', 'fcomip', 'fucomip']);
      u.emit(`${op} %st(1), %st`, effect(0, ZF | PF | CF, OF | SF | AF));
      if (op.endsWith('p')) depth = 1;
      defined = CONDITION_DEFINED;
      // The EFLAGS it set into ECX before the status word's AND replaces them: ZF, PF, CF (the SDM has OF, SF
      // and AF cleared; qemu-i386 leaves them as they were).
      u.emit('pushfl', effect(ZF | PF | CF, 0));
      u.emit('popl %ecx');
      u.emit(`andl $${hex(ZF | PF | CF)}, %ecx`, effect(0, STATUS));
      break;
    }
    case 5: {
      // Conversions on store: integers (rounding, overflow to the indefinite value) and narrower floats.
      const op = rng.pick(['fists', 'fistl', 'fistps', 'fistpl', 'fistpll', 'fisttpl', 'fisttpll', 'fsts', 'fstl', 'fstps', 'fstpl']);
      u.emit(`${op} buf+40`);
      if (op.includes('p')) depth = 1;
      defined = ROUNDED;
      break;
    }
    default: {
      const op = rng.pick(['fcmovb', 'fcmove', 'fcmovbe', 'fcmovu', 'fcmovnb', 'fcmovne', 'fcmovnbe', 'fcmovnu']);
      u.emit(`cmpl $${hex(rng.operand())}, %ebx`, effect(0, STATUS));
      u.emit(`${op} %st(1), %st`, effect(CF | ZF | PF, 0));
    }
  }
  u.emit('fnstsw %ax');
  u.emit(`andl $${hex(defined)}, %eax`, effect(0, STATUS));
  u.emit('movl %eax, %edx');
  for (let i = 0; i < depth; i++) u.emit(`fstpt buf+${i * 10}`);
  u.emit('fnstsw %ax');
  // The exact FSTP m80 stores keep the operation's C1.
  u.emit(`andl $${hex(ALWAYS | (defined & C1))}, %eax`, effect(0, STATUS));
}
