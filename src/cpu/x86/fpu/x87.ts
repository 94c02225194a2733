import { bytes, int, record, u16, u16s, u32, u32s, type ValueOf } from '../../../base/state-schema.js';
import { DE, Float80Unit, IE, INDEFINITE_HI, INDEFINITE_SE, Kind, classify } from './float80.js';
import { Transcendentals } from './transcendental.js';

/** What the x87 needs of the CPU: linear memory access, probing before stores, AX, EFLAGS, and where it is. */
export interface X87Host {
  rd8(lin: number): number;
  rd16(lin: number): number;
  rd32(lin: number): number;
  wr8(lin: number, v: number): void;
  wr16(lin: number, v: number): void;
  wr32(lin: number, v: number): void;
  probeWrite(lin: number, size: number): void;
  setAx(v: number): void;
  fpuSetFlags(mask: number, values: number): void;
  fpuCondition(cc: number): boolean;
  /** Real-address or virtual-8086 mode: FSTENV/FSAVE use the real-mode layouts. */
  readonly fpuRealMode: boolean;
  /** The current instruction's CS selector and offset, and its memory operand's selector and offset. */
  readonly fpuCs: number;
  readonly fpuIp: number;
  readonly fpuDs: number;
  readonly fpuDataOffset: number;
}

const SF = 0x40, ES = 0x80, B = 0x8000;
const C0 = 0x100, C1 = 0x200, C2 = 0x400, C3 = 0x4000;
const CONDITION = C0 | C1 | C2 | C3;
const EFLAGS_CF = 1, EFLAGS_PF = 4, EFLAGS_ZF = 0x40;
/** Condition codes of a comparison by relation (less, equal, greater, unordered). */
const COMPARE_CC = [C0, C3, 0, C3 | C2 | C0];
/** FCMOVB, FCMOVE, FCMOVBE, FCMOVU as Jcc condition numbers (DB's FCMOVNcc are each + 1). */
const FCMOV_CONDITIONS = [2, 4, 6, 10];
const COMPARE_EFLAGS = [EFLAGS_CF, EFLAGS_ZF, 0, EFLAGS_ZF | EFLAGS_PF | EFLAGS_CF];

/**
 * The constants of FLD1..FLDZ: exponent word and significand, and for the irrational ones the last significand
 * word when rounding down or toward zero (or up, for log2(10)): the x87 rounds its internal 66-bit constants as
 * the rounding control says.
 */
const CONSTANTS: [number, number, number, number, number][] = [
  // se, hi, lo (nearest), lo (down/zero), lo (up)
  [0x3fff, 0x80000000, 0, 0, 0], // 1
  [0x4000, 0xd49a784b, 0xcd1b8afe, 0xcd1b8afe, 0xcd1b8aff], // log2(10)
  [0x3fff, 0xb8aa3b29, 0x5c17f0bc, 0x5c17f0bb, 0x5c17f0bc], // log2(e)
  [0x4000, 0xc90fdaa2, 0x2168c235, 0x2168c234, 0x2168c235], // pi
  [0x3ffd, 0x9a209a84, 0xfbcff799, 0xfbcff798, 0xfbcff799], // log10(2)
  [0x3ffe, 0xb17217f7, 0xd1cf79ac, 0xd1cf79ab, 0xd1cf79ac], // ln(2)
  [0, 0, 0, 0, 0], // +0
];

/**
 * The x87 FPU, bit-exact: eight 80-bit registers (exponent word and two significand words each), the stack,
 * status/control/tag words and the last instruction and operand pointers. Arithmetic is Float80Unit's;
 * this class decodes, moves data between memory formats and registers, handles the stack and reports
 * exceptions (an unmasked one sets ES/B and waits for the next waiting instruction, as the CPU glue asks
 * `pendingException`).
 */
/** The x87's state, part of the CPU's: registers as sign+exponent and significand halves, every pointer. */
export const X87_STATE = record({
  regSe: u16s(8), regHi: u32s(8), regLo: u32s(8),
  /** 1 where the tag word says empty. */
  empty: bytes(8),
  top: int(0, 7),
  /** Without TOP (bits 13:11). */
  status: u16,
  control: u16, fip: u32, fcs: u16, fop: int(0, 0x7ff), fdp: u32, fds: u16,
}, (s) => {
  if (s.empty.some((e) => e > 1)) return ['empty', 'holds a value other than 0 and 1'];
  if (s.status & 0x3800) return ['status', 'holds TOP (bits 13:11), which is the field top'];
  return undefined;
});
type X87State = ValueOf<typeof X87_STATE>;

export class X87 {
  private readonly regSe = new Uint16Array(8);
  private readonly regHi = new Uint32Array(8);
  private readonly regLo = new Uint32Array(8);
  /** Physical register i is empty (the tag word's 11); the other tags follow from the contents. */
  private readonly empty = new Uint8Array(8);
  private top = 0;
  /** The status word without TOP. */
  private status = 0;
  private control = 0x37f;
  private fip = 0;
  private fcs = 0;
  private fop = 0;
  private fdp = 0;
  private fds = 0;
  private readonly unit = new Float80Unit();
  private readonly transcendentals = new Transcendentals(this.unit);

  constructor(private readonly cpu: X87Host) {
    this.reset();
  }

  /** Power-on state (SDM table 9-1): control 0x40, every register +0 and tagged zero. */
  reset(): void {
    this.fninit();
    this.control = 0x40;
    this.regSe.fill(0);
    this.regHi.fill(0);
    this.regLo.fill(0);
    this.empty.fill(0);
  }

  /** FNINIT: the registers keep their contents, all tagged empty. */
  fninit(): void {
    this.control = 0x37f;
    this.status = 0;
    this.top = 0;
    this.empty.fill(1);
    this.fip = this.fcs = this.fop = this.fdp = this.fds = 0;
  }

  /** An unmasked exception waits to be reported by the next waiting instruction. */
  pendingException(): boolean {
    return (this.status & ES) !== 0;
  }

  /** FNINIT, FNCLEX, FNSTSW, FNSTCW, FNSTENV, FNSAVE do not report pending exceptions. */
  static isNonWaiting(op: number, modrm: number): boolean {
    const reg = (modrm >> 3) & 7;
    if (op === 0xdb && (modrm === 0xe2 || modrm === 0xe3)) return true;
    if (op === 0xdf && modrm === 0xe0) return true;
    if (modrm < 0xc0 && op === 0xd9 && (reg === 6 || reg === 7)) return true;
    if (modrm < 0xc0 && op === 0xdd && (reg === 6 || reg === 7)) return true;
    return false;
  }

  /** Control instructions leave the last instruction and operand pointers alone. */
  private static isControl(op: number, modrm: number): boolean {
    const reg = (modrm >> 3) & 7;
    if (modrm >= 0xc0) return (op === 0xdb && (modrm === 0xe2 || modrm === 0xe3)) || (op === 0xdf && modrm === 0xe0);
    return (op === 0xd9 && reg >= 4) || (op === 0xdd && (reg === 4 || reg === 6 || reg === 7));
  }

  // --- registers and the stack

  private phys(i: number): number {
    return (this.top + i) & 7;
  }

  private isEmpty(i: number): boolean {
    return this.empty[(this.top + i) & 7] !== 0;
  }

  private setReg(i: number, se: number, hi: number, lo: number): void {
    const r = (this.top + i) & 7;
    this.regSe[r] = se;
    this.regHi[r] = hi;
    this.regLo[r] = lo;
    this.empty[r] = 0;
  }

  /** Stores the unit's result in ST(i). */
  private setResult(i: number): void {
    this.setReg(i, this.unit.se, this.unit.hi, this.unit.lo);
  }

  private pop(): void {
    this.empty[this.top] = 1;
    this.top = (this.top + 1) & 7;
  }

  /** Makes room for a push: false (and the stack fault handled) when ST(7) is in use. */
  private pushRoom(): boolean {
    if (this.empty[(this.top - 1) & 7] !== 0) return true;
    this.stackFault(C1);
    if (this.control & IE) {
      this.top = (this.top - 1) & 7;
      this.setReg(0, INDEFINITE_SE, INDEFINITE_HI, 0);
    }
    return false;
  }

  private push(se: number, hi: number, lo: number): void {
    this.top = (this.top - 1) & 7;
    this.setReg(0, se, hi, lo);
  }

  /** Stack overflow (C1 = 1) or underflow (C1 = 0): IE with SF. */
  private stackFault(c1: number): void {
    this.status = (this.status & ~C1) | c1;
    this.raise(IE | SF);
  }

  /** Stack underflow on reading an empty register: masked, the destination gets the indefinite. */
  private underflow(dest: number, popAfter: boolean): void {
    this.stackFault(0);
    if (this.control & IE) {
      this.setReg(dest, INDEFINITE_SE, INDEFINITE_HI, 0);
      if (popAfter) this.pop();
    }
  }

  private raise(flags: number): void {
    this.status |= flags;
    if (flags & ~this.control & 0x3f) this.status |= ES | B;
  }

  /**
   * Takes the unit's exceptions into the status word (C1 = rounded up); true when the result may be stored
   * (an unmasked IE, DE or ZE keeps the destination).
   */
  private commit(): boolean {
    const flags = this.unit.flags;
    this.status = (this.status & ~C1) | (this.unit.roundedUp ? C1 : 0);
    if (flags !== 0) this.raise(flags);
    return (flags & ~this.control & (IE | DE | 0x4)) === 0;
  }

  private begin(): void {
    this.unit.control = this.control;
    this.unit.flags = 0;
    this.unit.roundedUp = false;
  }

  // --- execution

  execute(op: number, modrm: number, lin: number, o32: boolean): void {
    if (!X87.isControl(op, modrm)) {
      this.fop = ((op & 7) << 8) | modrm;
      this.fip = this.cpu.fpuIp;
      this.fcs = this.cpu.fpuCs;
      if (modrm < 0xc0) {
        this.fdp = this.cpu.fpuDataOffset;
        this.fds = this.cpu.fpuDs;
      }
    }
    this.begin();
    if (modrm < 0xc0) this.memoryForm(op, (modrm >> 3) & 7, lin, o32);
    else this.registerForm(op, (modrm >> 3) & 7, modrm & 7, modrm);
  }

  /** The memory operand of D8/DA/DC/DE (single, int32, double, int16) into the unit's result. */
  private loadOperand(op: number, lin: number): void {
    const u = this.unit;
    switch (op) {
      case 0xd8: u.fromFloat32(this.cpu.rd32(lin) >>> 0); return;
      case 0xdc: u.fromFloat64(this.cpu.rd32(lin) >>> 0, this.cpu.rd32((lin + 4) | 0) >>> 0); return;
      case 0xda: { const v = this.cpu.rd32(lin) | 0; u.fromInteger(v < 0, 0, Math.abs(v)); return; }
      default: { const v = (this.cpu.rd16(lin) << 16) >> 16; u.fromInteger(v < 0, 0, Math.abs(v)); return; }
    }
  }

  private memoryForm(op: number, reg: number, lin: number, o32: boolean): void {
    switch (op) {
      case 0xd8: case 0xdc: case 0xda: case 0xde: {
        this.loadOperand(op, lin);
        const u = this.unit;
        const bse = u.se, bhi = u.hi, blo = u.lo;
        if ((u.flags & ~this.control & DE) !== 0) { this.commit(); return; } // an unmasked denormal operand
        // A signaling NaN operand read from memory is quieted by the conversion, but still raises IE here.
        const sourceInvalid = (u.flags & IE) !== 0 && classify(bse, bhi, blo) === Kind.QNaN;
        if (sourceInvalid) {
          u.flags &= ~IE;
          // The original SNaN takes part so the NaN rules (and IE) apply.
          return this.binary(reg, 0, bse, (bhi & ~0x40000000) >>> 0, blo, false);
        }
        return this.binary(reg, 0, bse, bhi, blo, false);
      }
      case 0xd9:
        switch (reg) {
          case 0: this.unit.fromFloat32(this.cpu.rd32(lin) >>> 0); return this.pushConverted();
          case 2: case 3: return this.storeFloat32(lin, reg === 3);
          case 4: return this.loadEnvironment(lin, o32);
          case 5: this.setControl(this.cpu.rd16(lin)); return;
          case 6: this.storeEnvironment(lin, o32); this.control |= 0x3f; return;
          case 7: this.cpu.wr16(lin, this.control); return;
        }
        return;
      case 0xdb:
        switch (reg) {
          case 0: return this.loadInteger(this.cpu.rd32(lin) | 0);
          case 1: return this.storeTruncated(lin, 32);
          case 2: case 3: return this.storeInteger(lin, 32, reg === 3);
          case 5: {
            const lo = this.cpu.rd32(lin) >>> 0, hi = this.cpu.rd32((lin + 4) | 0) >>> 0, se = this.cpu.rd16((lin + 8) | 0);
            if (this.pushRoom()) this.push(se, hi, lo);
            return;
          }
          case 7: {
            if (this.isEmpty(0)) return this.underflowStore(lin, 10, () => this.write80(lin, INDEFINITE_SE, INDEFINITE_HI, 0));
            const r = this.phys(0);
            this.cpu.probeWrite(lin, 10);
            this.write80(lin, this.regSe[r]!, this.regHi[r]!, this.regLo[r]!);
            this.pop();
            return;
          }
        }
        return;
      case 0xdd:
        switch (reg) {
          case 0: this.unit.fromFloat64(this.cpu.rd32(lin) >>> 0, this.cpu.rd32((lin + 4) | 0) >>> 0); return this.pushConverted();
          case 1: return this.storeTruncated(lin, 64);
          case 2: case 3: return this.storeFloat64(lin, reg === 3);
          case 4: return this.restore(lin, o32);
          case 6: return this.save(lin, o32);
          case 7: this.cpu.wr16(lin, this.statusWord()); return;
        }
        return;
      case 0xdf:
        switch (reg) {
          case 0: return this.loadInteger((this.cpu.rd16(lin) << 16) >> 16);
          case 1: return this.storeTruncated(lin, 16);
          case 2: case 3: return this.storeInteger(lin, 16, reg === 3);
          case 4: return this.loadBcd(lin);
          case 5: {
            const lo = this.cpu.rd32(lin) >>> 0, hi = this.cpu.rd32((lin + 4) | 0) >>> 0;
            if (!this.pushRoom()) return;
            const negative = hi >= 0x80000000;
            const nl = negative ? (0x100000000 - lo) % 0x100000000 : lo;
            const nh = negative ? (lo === 0 ? (0x100000000 - hi) % 0x100000000 : 0xffffffff - hi) : hi;
            this.unit.fromInteger(negative, nh, nl);
            this.push(this.unit.se, this.unit.hi, this.unit.lo);
            return;
          }
          case 6: return this.storeBcd(lin);
          case 7: return this.storeInteger(lin, 64, true);
        }
        return;
    }
    // Reserved encodings act as no-ops on the P6 x87 rather than #UD.
  }

  /**
   * A binary operation by the D8 group's reg field (add, mul, com, comp, sub, subr, div, divr) between ST(0)
   * and (se, hi, lo), the result into ST(dest).
   */
  private binary(reg: number, dest: number, bse: number, bhi: number, blo: number, popAfter: boolean): void {
    if (this.isEmpty(0)) {
      if (reg === 2 || reg === 3) {
        this.stackFault(0);
        if (this.control & IE) { this.setCondition(COMPARE_CC[3]!); if (reg === 3) this.pop(); }
        return;
      }
      return this.underflow(dest, popAfter);
    }
    const r = this.phys(0);
    const se = this.regSe[r]!, hi = this.regHi[r]!, lo = this.regLo[r]!;
    const u = this.unit;
    if (reg === 2 || reg === 3) {
      const relation = u.compare(se, hi, lo, bse, bhi, blo, false);
      if (this.commit()) {
        this.setCondition(COMPARE_CC[relation]!);
        if (reg === 3) this.pop();
      }
      return;
    }
    // ST(0) op operand. The DC/DE register forms put the result in ST(i), and their reg fields for sub/subr
    // and div/divr are swapped, so that they too compute ST(0) - ST(i) for reg 4 and so on.
    switch (reg) {
      case 0: u.add(se, hi, lo, bse, bhi, blo); break;
      case 1: u.mul(se, hi, lo, bse, bhi, blo); break;
      case 4: u.sub(se, hi, lo, bse, bhi, blo); break;
      case 5: u.sub(bse, bhi, blo, se, hi, lo); break;
      case 6: u.div(se, hi, lo, bse, bhi, blo); break;
      default: u.div(bse, bhi, blo, se, hi, lo); break;
    }
    if (this.commit()) {
      this.setResult(dest);
      if (popAfter) this.pop();
    }
  }

  private setCondition(cc: number): void {
    this.status = (this.status & ~CONDITION) | cc;
  }

  /** FLD m32/m64 after the conversion into the unit's result: pushes it unless an unmasked IE or DE. */
  private pushConverted(): void {
    if (!this.pushRoom()) return;
    if (this.commit()) this.push(this.unit.se, this.unit.hi, this.unit.lo);
  }

  private loadInteger(v: number): void {
    if (!this.pushRoom()) return;
    this.unit.fromInteger(v < 0, 0, Math.abs(v));
    this.push(this.unit.se, this.unit.hi, this.unit.lo);
  }

  /** A store whose source register is empty: masked, the indefinite is stored (and the stack popped). */
  private underflowStore(lin: number, size: number, storeIndefinite: () => void): void {
    this.stackFault(0);
    if ((this.control & IE) === 0) return;
    this.cpu.probeWrite(lin, size);
    storeIndefinite();
    this.pop();
  }

  private storeFloat32(lin: number, popAfter: boolean): void {
    if (this.isEmpty(0)) {
      this.stackFault(0);
      if (this.control & IE) { this.cpu.wr32(lin, 0xffc00000); if (popAfter) this.pop(); }
      return;
    }
    const r = this.phys(0);
    const bits = this.unit.toFloat32(this.regSe[r]!, this.regHi[r]!, this.regLo[r]!);
    const flags = this.unit.flags;
    if (bits === null || (flags & ~this.control & IE) !== 0) { this.commit(); return; }
    this.cpu.wr32(lin, bits);
    this.commit();
    if (popAfter) this.pop();
  }

  private storeFloat64(lin: number, popAfter: boolean): void {
    if (this.isEmpty(0)) {
      this.stackFault(0);
      if (this.control & IE) {
        this.cpu.probeWrite(lin, 8);
        this.cpu.wr32(lin, 0);
        this.cpu.wr32((lin + 4) | 0, 0xfff80000);
        if (popAfter) this.pop();
      }
      return;
    }
    const r = this.phys(0);
    const ok = this.unit.toFloat64(this.regSe[r]!, this.regHi[r]!, this.regLo[r]!);
    if (!ok || (this.unit.flags & ~this.control & IE) !== 0) { this.commit(); return; }
    this.cpu.probeWrite(lin, 8);
    this.cpu.wr32(lin, this.unit.lo);
    this.cpu.wr32((lin + 4) | 0, this.unit.hi);
    this.commit();
    if (popAfter) this.pop();
  }

  private storeInteger(lin: number, bits: number, popAfter: boolean): void {
    const size = bits / 8;
    const u = this.unit;
    if (this.isEmpty(0)) {
      this.stackFault(0);
      if (this.control & IE) {
        this.cpu.probeWrite(lin, size);
        this.writeInteger(lin, bits, bits === 64 ? 0x80000000 : 0, bits === 64 ? 0 : 2 ** (bits - 1));
        if (popAfter) this.pop();
      }
      return;
    }
    const r = this.phys(0);
    u.toInteger(this.regSe[r]!, this.regHi[r]!, this.regLo[r]!, bits);
    if (!this.commit()) return;
    this.cpu.probeWrite(lin, size);
    this.writeInteger(lin, bits, u.hi, u.lo);
    if (popAfter) this.pop();
  }

  /** FISTTP (DF /1, DB /1, DD /1): FISTP rounding toward zero whatever the rounding control. */
  private storeTruncated(lin: number, bits: number): void {
    this.unit.control |= 0xc00;
    this.storeInteger(lin, bits, true);
  }

  private writeInteger(lin: number, bits: number, hi: number, lo: number): void {
    if (bits === 16) this.cpu.wr16(lin, lo & 0xffff);
    else if (bits === 32) this.cpu.wr32(lin, lo | 0);
    else {
      this.cpu.wr32(lin, lo | 0);
      this.cpu.wr32((lin + 4) | 0, hi | 0);
    }
  }

  private write80(lin: number, se: number, hi: number, lo: number): void {
    this.cpu.wr32(lin, lo | 0);
    this.cpu.wr32((lin + 4) | 0, hi | 0);
    this.cpu.wr16((lin + 8) | 0, se);
  }

  /** FBLD: 18 packed BCD digits and a sign byte; exact. */
  private loadBcd(lin: number): void {
    let digits = 0n;
    for (let i = 8; i >= 0; i--) {
      const b = this.cpu.rd8((lin + i) | 0);
      digits = digits * 100n + BigInt((b >> 4) * 10 + (b & 0xf));
    }
    const negative = (this.cpu.rd8((lin + 9) | 0) & 0x80) !== 0;
    if (!this.pushRoom()) return;
    this.unit.fromInteger(negative, Number(digits >> 32n), Number(digits & 0xffffffffn));
    this.push(this.unit.se, this.unit.hi, this.unit.lo);
  }

  /** FBSTP: rounds to an integer; beyond 18 digits (or NaN, infinity) IE and the BCD indefinite. */
  private storeBcd(lin: number): void {
    const indefinite = () => {
      for (let i = 0; i < 7; i++) this.cpu.wr8((lin + i) | 0, 0);
      this.cpu.wr8((lin + 7) | 0, 0xc0);
      this.cpu.wr16((lin + 8) | 0, 0xffff);
    };
    if (this.isEmpty(0)) return this.underflowStore(lin, 10, indefinite);
    const r = this.phys(0);
    const se = this.regSe[r]!;
    const u = this.unit;
    let ok = u.toInteger(se, this.regHi[r]!, this.regLo[r]!, 64);
    let magnitude = (BigInt(u.hi) << 32n) | BigInt(u.lo);
    if (ok && magnitude >= 1n << 63n) magnitude = (1n << 64n) - magnitude;
    if (ok && magnitude >= 10n ** 18n) {
      u.flags = (u.flags & ~0x20) | IE;
      ok = false;
    }
    if (!this.commit()) return;
    this.cpu.probeWrite(lin, 10);
    if (!ok) indefinite();
    else {
      for (let i = 0; i < 9; i++) {
        const two = Number(magnitude % 100n);
        magnitude /= 100n;
        this.cpu.wr8((lin + i) | 0, (Math.floor(two / 10) << 4) | (two % 10));
      }
      this.cpu.wr8((lin + 9) | 0, se & 0x8000 ? 0x80 : 0);
    }
    this.pop();
  }

  private setControl(cw: number): void {
    this.control = cw | 0x40;
    if (this.status & ~this.control & 0x3f) this.status |= ES | B;
    else this.status &= ~(ES | B);
  }

  // --- environment

  private tagWord(): number {
    let t = 0;
    for (let r = 0; r < 8; r++) {
      let tag: number;
      if (this.empty[r]) tag = 3;
      else {
        const k = classify(this.regSe[r]!, this.regHi[r]!, this.regLo[r]!);
        tag = k === Kind.Zero ? 1 : k === Kind.Normal ? 0 : 2;
      }
      t |= tag << (2 * r);
    }
    return t;
  }

  private statusWord(): number {
    return (this.status & ~0x3800) | (this.top << 11);
  }

  /** FSTENV's 14-byte (16-bit) or 28-byte (32-bit) layout, protected or real mode (SDM figures 8-9 to 8-12). */
  private storeEnvironment(lin: number, o32: boolean): void {
    this.cpu.probeWrite(lin, o32 ? 28 : 14);
    const words = this.environmentWords();
    for (let i = 0; i < 7; i++) {
      if (o32) this.cpu.wr32((lin + 4 * i) | 0, i < 3 ? (words[i]! | 0xffff0000) : words[i]!);
      else this.cpu.wr16((lin + 2 * i) | 0, words[i]! & 0xffff);
    }
  }

  /** The seven environment fields (the 16-bit layout uses their low halves, as the SDM figures show). */
  private environmentWords(): number[] {
    const head = [this.control, this.statusWord(), this.tagWord()];
    if (this.cpu.fpuRealMode) {
      // Real mode: 20-bit (32-bit layout: 32-bit) linear pointers, split in a low word and the bits above it.
      const ip = (this.fcs * 16 + this.fip) >>> 0, dp = (this.fds * 16 + this.fdp) >>> 0;
      return [...head, ip & 0xffff, ((ip >>> 16) << 12) | (this.fop & 0x7ff), dp & 0xffff, (dp >>> 16) << 12];
    }
    return [...head, this.fip, (this.fop << 16) | this.fcs, this.fdp, this.fds];
  }

  private loadEnvironment(lin: number, o32: boolean): void {
    const words: number[] = [];
    for (let i = 0; i < 7; i++) words.push(o32 ? this.cpu.rd32((lin + 4 * i) | 0) >>> 0 : this.cpu.rd16((lin + 2 * i) | 0));
    this.setEnvironment(words, o32);
  }

  private setEnvironment(words: number[], o32: boolean): void {
    const [cw, sw, tw, ip, ipHigh, dp, dpHigh] = words as [number, number, number, number, number, number, number];
    this.control = (cw & 0xffff) | 0x40;
    this.status = sw & 0xffff & ~0x3800;
    this.top = (sw >> 11) & 7;
    for (let r = 0; r < 8; r++) this.empty[r] = ((tw >> (2 * r)) & 3) === 3 ? 1 : 0;
    if (this.cpu.fpuRealMode) {
      const high = o32 ? 0xffff : 0xf;
      this.fip = ((ip & 0xffff) | (((ipHigh >>> 12) & high) << 16)) >>> 0;
      this.fcs = 0;
      this.fop = ipHigh & 0x7ff;
      this.fdp = ((dp & 0xffff) | (((dpHigh >>> 12) & high) << 16)) >>> 0;
      this.fds = 0;
    } else {
      this.fip = o32 ? ip : ip & 0xffff;
      this.fcs = ipHigh & 0xffff;
      this.fop = (ipHigh >>> 16) & 0x7ff;
      this.fdp = o32 ? dp : dp & 0xffff;
      this.fds = dpHigh & 0xffff;
    }
    if (this.status & ~this.control & 0x3f) this.status |= ES | B;
    else this.status &= ~(ES | B);
  }

  private save(lin: number, o32: boolean): void {
    const envSize = o32 ? 28 : 14;
    this.cpu.probeWrite(lin, envSize + 80);
    this.storeEnvironment(lin, o32);
    for (let i = 0; i < 8; i++) {
      const r = this.phys(i);
      this.write80((lin + envSize + 10 * i) | 0, this.regSe[r]!, this.regHi[r]!, this.regLo[r]!);
    }
    this.fninit();
  }

  private restore(lin: number, o32: boolean): void {
    const envSize = o32 ? 28 : 14;
    const words: number[] = [];
    for (let i = 0; i < 7; i++) words.push(o32 ? this.cpu.rd32((lin + 4 * i) | 0) >>> 0 : this.cpu.rd16((lin + 2 * i) | 0));
    const values: number[] = [];
    for (let i = 0; i < 8; i++) {
      const at = (lin + envSize + 10 * i) | 0;
      values.push(this.cpu.rd32(at) >>> 0, this.cpu.rd32((at + 4) | 0) >>> 0, this.cpu.rd16((at + 8) | 0));
    }
    this.setEnvironment(words, o32);
    for (let i = 0; i < 8; i++) {
      const r = this.phys(i);
      this.regLo[r] = values[3 * i]!;
      this.regHi[r] = values[3 * i + 1]!;
      this.regSe[r] = values[3 * i + 2]!;
    }
  }

  // --- register forms

  private registerForm(op: number, reg: number, i: number, modrm: number): void {
    switch (op) {
      case 0xd8: return this.binaryRegister(reg, 0, i, false);
      case 0xdc: return this.binaryRegister(reg, i, i, false);
      case 0xde:
        if (reg === 3) {
          if (modrm === 0xd9) return this.compareRegister(1, false, 2);
          return;
        }
        if (reg === 2) return this.compareRegister(i, false, 1);
        return this.binaryRegister(reg, i, i, true);
      case 0xd9: return this.d9Register(modrm, i);
      case 0xda:
        if (modrm === 0xe9) return this.compareRegister(1, true, 2);
        if (reg < 4) return this.conditionalMove(i, FCMOV_CONDITIONS[reg]!);
        return;
      case 0xdb:
        if (reg < 4) return this.conditionalMove(i, FCMOV_CONDITIONS[reg]! + 1);
        if (modrm === 0xe2) { this.status &= ~(0x80ff); return; }
        if (modrm === 0xe3) { this.fninit(); return; }
        if (reg === 5 || reg === 6) return this.compareToEflags(i, reg === 5, false);
        return; // FENI, FDISI, FSETPM: no-ops since the 80387
      case 0xdd:
        switch (reg) {
          case 0: this.empty[this.phys(i)] = 1; return;
          case 1: return this.exchange(i);
          case 2: case 3: return this.copyTo(i, reg === 3);
          case 4: case 5: return this.compareRegister(i, true, reg === 5 ? 1 : 0);
        }
        return;
      case 0xdf:
        if (modrm === 0xe0) { this.cpu.setAx(this.statusWord()); return; }
        switch (reg) {
          case 0: this.empty[this.phys(i)] = 1; this.pop(); return;
          case 1: return this.exchange(i);
          case 2: case 3: return this.copyTo(i, true);
          case 5: case 6: return this.compareToEflags(i, reg === 5, true);
        }
        return;
    }
  }

  private binaryRegister(reg: number, dest: number, i: number, popAfter: boolean): void {
    if (reg === 2 || reg === 3) return this.compareRegister(i, false, reg === 3 ? 1 : 0);
    if (this.isEmpty(i)) return this.underflow(dest, popAfter);
    const r = this.phys(i);
    this.binary(reg, dest, this.regSe[r]!, this.regHi[r]!, this.regLo[r]!, popAfter);
  }

  /** FCOM/FUCOM ST(i) with `pops` pops afterwards. */
  private compareRegister(i: number, quiet: boolean, pops: number): void {
    if (this.isEmpty(0) || this.isEmpty(i)) {
      this.stackFault(0);
      if (this.control & IE) {
        this.setCondition(COMPARE_CC[3]!);
        for (let n = 0; n < pops; n++) this.pop();
      }
      return;
    }
    const a = this.phys(0), b = this.phys(i);
    const relation = this.unit.compare(this.regSe[a]!, this.regHi[a]!, this.regLo[a]!, this.regSe[b]!, this.regHi[b]!, this.regLo[b]!, quiet);
    if (!this.commit()) return;
    this.setCondition(COMPARE_CC[relation]!);
    for (let n = 0; n < pops; n++) this.pop();
  }

  /** FCOMI/FUCOMI(P): the relation in ZF, PF, CF (OF, SF, AF cleared). */
  private compareToEflags(i: number, quiet: boolean, popAfter: boolean): void {
    const mask = EFLAGS_CF | EFLAGS_PF | EFLAGS_ZF | 0x800 | 0x80 | 0x10;
    if (this.isEmpty(0) || this.isEmpty(i)) {
      this.stackFault(0);
      if (this.control & IE) {
        this.cpu.fpuSetFlags(mask, COMPARE_EFLAGS[3]!);
        if (popAfter) this.pop();
      }
      return;
    }
    const a = this.phys(0), b = this.phys(i);
    const relation = this.unit.compare(this.regSe[a]!, this.regHi[a]!, this.regLo[a]!, this.regSe[b]!, this.regHi[b]!, this.regLo[b]!, quiet);
    this.status &= ~C1;
    if (!this.commit()) return;
    this.cpu.fpuSetFlags(mask, COMPARE_EFLAGS[relation]!);
    if (popAfter) this.pop();
  }

  private conditionalMove(i: number, cc: number): void {
    if (this.isEmpty(i) || this.isEmpty(0)) {
      this.stackFault(0);
      return;
    }
    if (!this.cpu.fpuCondition(cc)) return;
    const r = this.phys(i);
    this.setReg(0, this.regSe[r]!, this.regHi[r]!, this.regLo[r]!);
  }

  private exchange(i: number): void {
    const a = this.phys(0), b = this.phys(i);
    if (this.empty[a] || this.empty[b]) {
      this.stackFault(0);
      if ((this.control & IE) === 0) return;
      for (const r of [a, b]) {
        if (this.empty[r]) { this.regSe[r] = INDEFINITE_SE; this.regHi[r] = INDEFINITE_HI; this.regLo[r] = 0; this.empty[r] = 0; }
      }
    }
    const se = this.regSe[a]!, hi = this.regHi[a]!, lo = this.regLo[a]!;
    this.regSe[a] = this.regSe[b]!; this.regHi[a] = this.regHi[b]!; this.regLo[a] = this.regLo[b]!;
    this.regSe[b] = se; this.regHi[b] = hi; this.regLo[b] = lo;
    this.status &= ~C1;
  }

  /** FST/FSTP ST(i): a plain copy. */
  private copyTo(i: number, popAfter: boolean): void {
    if (this.isEmpty(0)) return this.underflow(i, popAfter);
    const r = this.phys(0);
    this.setReg(i, this.regSe[r]!, this.regHi[r]!, this.regLo[r]!);
    this.status &= ~C1;
    if (popAfter) this.pop();
  }

  private d9Register(modrm: number, i: number): void {
    if (modrm < 0xc8) {
      // FLD ST(i): read before the push renumbers the stack.
      if (this.isEmpty(i)) {
        this.stackFault(0);
        if ((this.control & IE) && this.pushRoom()) this.push(INDEFINITE_SE, INDEFINITE_HI, 0);
        return;
      }
      const r = this.phys(i);
      if (this.pushRoom()) this.push(this.regSe[r]!, this.regHi[r]!, this.regLo[r]!);
      this.status &= ~C1;
      return;
    }
    if (modrm < 0xd0) return this.exchange(i);
    if (modrm >= 0xd8 && modrm < 0xe0) return this.copyTo(i, true);
    if (modrm >= 0xe8 && modrm <= 0xee) {
      if (!this.pushRoom()) return;
      const [se, hi, nearest, downOrZero, up] = CONSTANTS[modrm - 0xe8]!;
      const rc = (this.control >> 10) & 3;
      this.push(se, hi, rc === 0 ? nearest : rc === 2 ? up : downOrZero);
      this.status &= ~C1;
      return;
    }
    if (modrm === 0xd0) return; // FNOP
    if (modrm === 0xf6 || modrm === 0xf7) {
      this.top = (this.top + (modrm === 0xf6 ? -1 : 1)) & 7;
      this.status &= ~C1;
      return;
    }
    if (modrm === 0xe5) return this.examine();
    this.unary(modrm);
  }

  /** FXAM: the class of ST(0) in C3, C2, C0 and its sign in C1 (also for an empty register). */
  private examine(): void {
    const r = this.top;
    const se = this.regSe[r]!;
    let cc: number;
    if (this.empty[r]) cc = C3 | C0;
    else {
      switch (classify(se, this.regHi[r]!, this.regLo[r]!)) {
        case Kind.Zero: cc = C3; break;
        case Kind.Normal: cc = C2; break;
        case Kind.Denormal: cc = C3 | C2; break;
        case Kind.Infinity: cc = C2 | C0; break;
        case Kind.QNaN: case Kind.SNaN: cc = C0; break;
        default: cc = 0;
      }
    }
    this.setCondition(cc | (se & 0x8000 ? C1 : 0));
  }

  /** The D9 E0-FF operations on ST(0) (and ST(1)). */
  private unary(modrm: number): void {
    const twoOperands = modrm === 0xf1 || modrm === 0xf3 || modrm === 0xf5 || modrm === 0xf8 || modrm === 0xf9 || modrm === 0xfd;
    if (this.isEmpty(0) || (twoOperands && this.isEmpty(1))) {
      this.stackFault(0);
      if ((this.control & IE) === 0) return;
      if (modrm === 0xf1 || modrm === 0xf3 || modrm === 0xf9) {
        this.setReg(1, INDEFINITE_SE, INDEFINITE_HI, 0);
        this.pop();
      } else if (modrm === 0xf4 || modrm === 0xf2 || modrm === 0xfb) {
        this.setReg(0, INDEFINITE_SE, INDEFINITE_HI, 0);
        if (this.pushRoom()) this.push(INDEFINITE_SE, INDEFINITE_HI, 0);
      } else if (modrm !== 0xe4) {
        this.setReg(0, INDEFINITE_SE, INDEFINITE_HI, 0);
      } else {
        this.setCondition(COMPARE_CC[3]!);
      }
      return;
    }
    const r0 = this.phys(0), r1 = this.phys(1);
    const se = this.regSe[r0]!, hi = this.regHi[r0]!, lo = this.regLo[r0]!;
    const se1 = this.regSe[r1]!, hi1 = this.regHi[r1]!, lo1 = this.regLo[r1]!;
    const u = this.unit, t = this.transcendentals;
    switch (modrm) {
      case 0xe0: this.setReg(0, se ^ 0x8000, hi, lo); this.status &= ~C1; return;
      case 0xe1: this.setReg(0, se & 0x7fff, hi, lo); this.status &= ~C1; return;
      case 0xe4: {
        const relation = u.compare(se, hi, lo, 0, 0, 0, false);
        if (this.commit()) this.setCondition(COMPARE_CC[relation]!);
        return;
      }
      case 0xfa: u.sqrt(se, hi, lo); break;
      case 0xfc: u.roundToInteger(se, hi, lo); break;
      case 0xfd: u.scale(se, hi, lo, se1, hi1, lo1); break;
      case 0xf4: {
        u.extract(se, hi, lo);
        if (!this.pushRoom() || !this.commit()) return;
        this.setResult(0);
        this.push(u.significandSe, u.significandHi, u.significandLo);
        return;
      }
      case 0xf5: case 0xf8: {
        const cc = u.remainder(se, hi, lo, se1, hi1, lo1, modrm === 0xf5);
        if (!this.commit()) return;
        this.setResult(0);
        this.setCondition(cc);
        return;
      }
      case 0xf0: t.twoToXMinus1(se, hi, lo); break;
      case 0xf1: case 0xf3: case 0xf9: {
        if (modrm === 0xf1) t.yLog2X(se1, hi1, lo1, se, hi, lo);
        else if (modrm === 0xf9) t.yLog2XPlus1(se1, hi1, lo1, se, hi, lo);
        else t.arctangent(se1, hi1, lo1, se, hi, lo);
        if (!this.commit()) return;
        this.setResult(1);
        this.pop();
        return;
      }
      case 0xfe: case 0xff: case 0xf2: case 0xfb: return this.trigonometric(modrm, se, hi, lo);
      default: return;
    }
    if (this.commit()) this.setResult(0);
  }

  /** FSIN, FCOS, FPTAN, FSINCOS: |x| >= 2^63 sets C2 and leaves the operand. */
  private trigonometric(modrm: number, se: number, hi: number, lo: number): void {
    const t = this.transcendentals, u = this.unit;
    if (t.outOfRange(se, hi, lo)) {
      this.status = (this.status & ~(C1 | C2)) | C2;
      return;
    }
    this.status &= ~C2;
    if (modrm === 0xfe || modrm === 0xff) {
      if (modrm === 0xfe) t.sine(se, hi, lo); else t.cosine(se, hi, lo);
      if (this.commit()) this.setResult(0);
      return;
    }
    // FPTAN pushes 1 after tan(x); FSINCOS pushes cos(x) after sin(x). Both need room for the push first.
    if (this.empty[(this.top - 1) & 7] === 0) return void this.pushRoom();
    if (modrm === 0xf2) {
      t.tangent(se, hi, lo);
      if (!this.commit()) return;
      this.setResult(0);
      const nan = classify(u.se, u.hi, u.lo) >= Kind.QNaN;
      if (nan) this.push(u.se, u.hi, u.lo); else this.push(0x3fff, 0x80000000, 0);
      return;
    }
    t.sineCosine(se, hi, lo);
    if (!this.commit()) return;
    this.setReg(0, t.sineSe, t.sineHi, t.sineLo);
    this.push(u.se, u.hi, u.lo);
  }

  // --- state

  saveFields(): X87State {
    const { regSe, regHi, regLo, empty, top, status, control, fcs, fop, fds } = this;
    return { regSe, regHi, regLo, empty, top, status, control, fip: this.fip >>> 0, fcs, fop, fdp: this.fdp >>> 0, fds };
  }

  loadFields(s: X87State): void {
    this.regSe.set(s.regSe);
    this.regHi.set(s.regHi);
    this.regLo.set(s.regLo);
    this.empty.set(s.empty);
    ({ top: this.top, status: this.status, control: this.control, fip: this.fip, fcs: this.fcs, fop: this.fop, fdp: this.fdp, fds: this.fds } = s);
  }
}
