import { StateError } from '../../base/errors.js';
import type { VersionedState } from '../../base/state.js';

/** What the x87 needs of the CPU: linear memory access, probing before stores, AX and EFLAGS. */
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
  readonly protectedMode: boolean;
}

const TAG_VALID = 0, TAG_ZERO = 1, TAG_SPECIAL = 2, TAG_EMPTY = 3;
const IE = 0x1, ZE = 0x4, OE = 0x8, UE = 0x10, SF_STACK = 0x40, ES_SUMMARY = 0x80;
const C0 = 0x100, C1 = 0x200, C2 = 0x400, C3 = 0x4000;
const INDEFINITE = NaN;
const CF = 1, PF = 4, ZF = 0x40;

const f64 = new Float64Array(1);
const u32 = new Uint32Array(f64.buffer);
const f32 = new Float32Array(1);
const f32u = new Uint32Array(f32.buffer);

/**
 * The x87 FPU with 64-bit (double) internal precision: 80-bit values are converted on load and store, so
 * results can differ from hardware in the last bits of the 64-bit significand. Enough for kernels and
 * ordinary user space; a bit-exact 80-bit implementation can replace it behind the same interface.
 */
export class X87 {
  private readonly st = new Float64Array(8);
  private readonly tags = new Uint8Array(8);
  private top = 0;
  private status = 0;
  private control = 0x37f;
  private lastIp = 0;
  private lastOpcode = 0;
  private lastData = 0;

  constructor(private readonly cpu: X87Host) {
    this.reset();
  }

  reset(): void {
    this.fninit();
    this.control = 0x40;
  }

  fninit(): void {
    this.control = 0x37f;
    this.status = 0;
    this.top = 0;
    this.tags.fill(TAG_EMPTY);
    this.st.fill(0);
    this.lastIp = this.lastOpcode = this.lastData = 0;
  }

  /** An unmasked exception waits to be reported by the next waiting instruction. */
  pendingException(): boolean {
    return (this.status & ES_SUMMARY) !== 0;
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

  // --- stack

  private get(i: number): number {
    return this.st[(this.top + i) & 7];
  }

  private tagOf(i: number): number {
    return this.tags[(this.top + i) & 7];
  }

  private set(i: number, v: number): void {
    const r = (this.top + i) & 7;
    this.st[r] = v;
    this.tags[r] = v === 0 ? TAG_ZERO : Number.isFinite(v) ? TAG_VALID : TAG_SPECIAL;
  }

  private push(v: number): void {
    const r = (this.top - 1) & 7;
    if (this.tags[r] !== TAG_EMPTY) {
      this.stackFault(true);
      if (this.control & IE) {
        this.top = r;
        this.set(0, INDEFINITE);
      }
      return;
    }
    this.top = r;
    this.set(0, v);
  }

  private pop(): void {
    this.tags[this.top] = TAG_EMPTY;
    this.top = (this.top + 1) & 7;
  }

  /** Reads ST(i), or signals stack underflow (and returns NaN) when it is empty. */
  private read(i: number): number {
    if (this.tagOf(i) === TAG_EMPTY) {
      this.stackFault(false);
      return INDEFINITE;
    }
    return this.get(i);
  }

  private stackFault(overflow: boolean): void {
    this.status = (this.status & ~C1) | IE | SF_STACK | (overflow ? C1 : 0);
    this.raise(IE);
  }

  private raise(flags: number): void {
    this.status |= flags;
    if (flags & ~this.control & 0x3f) this.status |= ES_SUMMARY | 0x8000;
  }

  // --- arithmetic helpers

  private arith(kind: number, a: number, b: number): number {
    switch (kind) {
      case 0: return a + b;
      case 1: return a * b;
      case 4: return a - b;
      case 5: return b - a;
      case 6:
        if (b === 0 && a === a && Number.isFinite(a) && a !== 0) this.raise(ZE);
        else if (b === 0 && a === 0) this.raise(IE);
        return a / b;
      default:
        if (a === 0 && b === b && Number.isFinite(b) && b !== 0) this.raise(ZE);
        else if (a === 0 && b === 0) this.raise(IE);
        return b / a;
    }
  }

  private round(v: number): number {
    switch ((this.control >> 10) & 3) {
      case 0: {
        const r = Math.round(v);
        return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
      }
      case 1: return Math.floor(v);
      case 2: return Math.ceil(v);
      default: return Math.trunc(v);
    }
  }

  private compare(a: number, b: number, unordered: boolean): number {
    if (a !== a || b !== b) {
      if (!unordered) this.raise(IE);
      return C3 | C2 | C0;
    }
    return a > b ? 0 : a < b ? C0 : C3;
  }

  private setCompare(cc: number): void {
    this.status = (this.status & ~(C0 | C1 | C2 | C3)) | cc;
  }

  private setEflagsFromCompare(cc: number): void {
    const f = (cc & C3 ? ZF : 0) | (cc & C2 ? PF : 0) | (cc & C0 ? CF : 0);
    this.cpu.fpuSetFlags(CF | PF | ZF | 0x800 | 0x80 | 0x10, f);
  }

  // --- memory formats

  private readF32(lin: number): number {
    f32u[0] = this.cpu.rd32(lin);
    return f32[0];
  }

  private readF64(lin: number): number {
    u32[0] = this.cpu.rd32(lin);
    u32[1] = this.cpu.rd32((lin + 4) | 0);
    return f64[0];
  }

  private readF80(lin: number): number {
    const lo = this.cpu.rd32(lin) >>> 0;
    const hi = this.cpu.rd32((lin + 4) | 0) >>> 0;
    const se = this.cpu.rd16((lin + 8) | 0);
    const sign = se & 0x8000 ? -1 : 1;
    const exp = se & 0x7fff;
    const mant = hi * 2 ** 32 + lo;
    if (exp === 0x7fff) return (hi & 0x7fffffff) === 0 && lo === 0 ? sign * Infinity : NaN;
    if (exp === 0 && mant === 0) return sign * 0;
    return sign * mant * 2 ** (exp - 16383 - 63);
  }

  private writeF80(lin: number, v: number): void {
    let se: number, hi: number, lo: number;
    if (v !== v) {
      se = 0xffff;
      hi = 0xc0000000;
      lo = 0;
    } else if (!Number.isFinite(v)) {
      se = v < 0 ? 0xffff : 0x7fff;
      hi = 0x80000000;
      lo = 0;
    } else if (v === 0) {
      se = Object.is(v, -0) ? 0x8000 : 0;
      hi = lo = 0;
    } else {
      const sign = v < 0 ? 0x8000 : 0;
      const a = Math.abs(v);
      let exp = Math.floor(Math.log2(a));
      let m = a / 2 ** exp;
      if (m >= 2) { m /= 2; exp++; }
      if (m < 1) { m *= 2; exp--; }
      const mant = m * 2 ** 63;
      hi = Math.floor(mant / 2 ** 32) >>> 0;
      lo = (mant - hi * 2 ** 32) >>> 0;
      se = sign | (exp + 16383);
    }
    this.cpu.wr32(lin, lo);
    this.cpu.wr32((lin + 4) | 0, hi);
    this.cpu.wr16((lin + 8) | 0, se);
  }

  private readInt(lin: number, size: number): number {
    if (size === 2) return (this.cpu.rd16(lin) << 16) >> 16;
    if (size === 4) return this.cpu.rd32(lin) | 0;
    return this.cpu.rd32((lin + 4) | 0) * 2 ** 32 + (this.cpu.rd32(lin) >>> 0);
  }

  private writeInt(lin: number, size: number, v: number): void {
    let r = this.round(v);
    const max = size === 2 ? 0x7fff : size === 4 ? 0x7fffffff : 2 ** 63;
    if (!(r >= -max - 1 && r <= max) || r !== r) {
      this.raise(IE);
      r = -max - 1;
    }
    if (size === 2) this.cpu.wr16(lin, r & 0xffff);
    else if (size === 4) this.cpu.wr32(lin, r | 0);
    else {
      const big = BigInt.asUintN(64, BigInt(r));
      this.cpu.wr32(lin, Number(big & 0xffffffffn));
      this.cpu.wr32((lin + 4) | 0, Number(big >> 32n));
    }
  }

  private readBcd(lin: number): number {
    let v = 0;
    for (let i = 8; i >= 0; i--) {
      const b = this.cpu.rd8((lin + i) | 0);
      v = v * 100 + (b >> 4) * 10 + (b & 0xf);
    }
    return this.cpu.rd8((lin + 9) | 0) & 0x80 ? -v : v;
  }

  private writeBcd(lin: number, v: number): void {
    let r = Math.abs(this.round(v));
    const neg = v < 0 || Object.is(v, -0);
    if (!(r < 1e18)) {
      this.raise(IE);
      for (let i = 0; i < 7; i++) this.cpu.wr8((lin + i) | 0, 0);
      this.cpu.wr8((lin + 7) | 0, 0xc0);
      this.cpu.wr16((lin + 8) | 0, 0xffff);
      return;
    }
    for (let i = 0; i < 9; i++) {
      const two = r % 100;
      r = Math.floor(r / 100);
      this.cpu.wr8((lin + i) | 0, ((Math.floor(two / 10)) << 4) | (two % 10));
    }
    this.cpu.wr8((lin + 9) | 0, neg ? 0x80 : 0);
  }

  private tagWord(): number {
    let t = 0;
    for (let i = 0; i < 8; i++) t |= this.tags[i] << (2 * i);
    return t;
  }

  private statusWord(): number {
    return (this.status & ~0x3800) | (this.top << 11);
  }

  private storeEnv(lin: number, o32: boolean): void {
    const size = o32 ? 28 : 14;
    this.cpu.probeWrite(lin, size);
    const w = (i: number, v: number) => (o32 ? this.cpu.wr32((lin + 4 * i) | 0, v) : this.cpu.wr16((lin + 2 * i) | 0, v));
    w(0, this.control | (o32 ? 0xffff0000 : 0));
    w(1, this.statusWord() | (o32 ? 0xffff0000 : 0));
    w(2, this.tagWord() | (o32 ? 0xffff0000 : 0));
    w(3, this.lastIp);
    w(4, this.lastOpcode & 0x7ff);
    w(5, this.lastData);
    w(6, 0);
  }

  private loadEnv(lin: number, o32: boolean): void {
    const r = (i: number) => (o32 ? this.cpu.rd32((lin + 4 * i) | 0) : this.cpu.rd16((lin + 2 * i) | 0));
    const cw = r(0) & 0xffff, sw = r(1) & 0xffff, tw = r(2) & 0xffff;
    this.control = cw;
    this.status = sw & ~0x3800;
    this.top = (sw >> 11) & 7;
    for (let i = 0; i < 8; i++) {
      const t = (tw >> (2 * i)) & 3;
      this.tags[i] = t === TAG_EMPTY ? TAG_EMPTY : this.st[i] === 0 ? TAG_ZERO : Number.isFinite(this.st[i]) ? TAG_VALID : TAG_SPECIAL;
    }
    if (this.status & ~this.control & 0x3f) this.status |= ES_SUMMARY | 0x8000;
    else this.status &= ~(ES_SUMMARY | 0x8000);
  }

  // --- execution

  execute(op: number, modrm: number, lin: number, o32: boolean): void {
    const reg = (modrm >> 3) & 7;
    this.lastOpcode = ((op & 7) << 8) | modrm;
    if (modrm < 0xc0) {
      this.lastData = lin;
      this.memoryForm(op, reg, lin, o32);
    } else {
      this.registerForm(op, reg, modrm & 7, modrm);
    }
  }

  private memoryForm(op: number, reg: number, lin: number, o32: boolean): void {
    switch (op) {
      case 0xd8: case 0xdc: case 0xda: case 0xde: {
        const v = op === 0xd8 ? this.readF32(lin) : op === 0xdc ? this.readF64(lin) : this.readInt(lin, op === 0xda ? 4 : 2);
        const a = this.read(0);
        if (reg === 2 || reg === 3) {
          this.setCompare(this.compare(a, v, false));
          if (reg === 3) this.pop();
          return;
        }
        this.set(0, this.arith(reg, a, v));
        return;
      }
      case 0xd9:
        switch (reg) {
          case 0: this.push(this.readF32(lin)); return;
          case 2: case 3:
            f32[0] = this.read(0);
            this.cpu.wr32(lin, f32u[0]);
            if (reg === 3) this.pop();
            return;
          case 4: this.loadEnv(lin, o32); return;
          case 5: this.control = this.cpu.rd16(lin) | 0x40; return;
          case 6: this.storeEnv(lin, o32); this.control |= 0x3f; return;
          case 7: this.cpu.wr16(lin, this.control); return;
        }
        break;
      case 0xdb:
        switch (reg) {
          case 0: this.push(this.readInt(lin, 4)); return;
          case 2: case 3: this.writeInt(lin, 4, this.read(0)); if (reg === 3) this.pop(); return;
          case 5: this.push(this.readF80(lin)); return;
          case 7: this.cpu.probeWrite(lin, 10); this.writeF80(lin, this.read(0)); this.pop(); return;
        }
        break;
      case 0xdd:
        switch (reg) {
          case 0: this.push(this.readF64(lin)); return;
          case 2: case 3:
            this.cpu.probeWrite(lin, 8);
            f64[0] = this.read(0);
            this.cpu.wr32(lin, u32[0]);
            this.cpu.wr32((lin + 4) | 0, u32[1]);
            if (reg === 3) this.pop();
            return;
          case 4: {
            const envSize = o32 ? 28 : 14;
            const values: number[] = [];
            for (let i = 0; i < 8; i++) values.push(this.readF80((lin + envSize + 10 * i) | 0));
            this.loadEnv(lin, o32);
            for (let i = 0; i < 8; i++) this.st[(this.top + i) & 7] = values[i];
            return;
          }
          case 6: {
            const envSize = o32 ? 28 : 14;
            this.cpu.probeWrite(lin, envSize + 80);
            this.storeEnv(lin, o32);
            for (let i = 0; i < 8; i++) this.writeF80((lin + envSize + 10 * i) | 0, this.get(i));
            this.fninit();
            return;
          }
          case 7: this.cpu.wr16(lin, this.statusWord()); return;
        }
        break;
      case 0xdf:
        switch (reg) {
          case 0: this.push(this.readInt(lin, 2)); return;
          case 2: case 3: this.writeInt(lin, 2, this.read(0)); if (reg === 3) this.pop(); return;
          case 4: this.push(this.readBcd(lin)); return;
          case 5: this.push(this.readInt(lin, 8)); return;
          case 6: this.cpu.probeWrite(lin, 10); this.writeBcd(lin, this.read(0)); this.pop(); return;
          case 7: this.cpu.probeWrite(lin, 8); this.writeInt(lin, 8, this.read(0)); this.pop(); return;
        }
        break;
    }
    // Reserved encodings act as no-ops on the P6 x87 rather than #UD.
  }

  private registerForm(op: number, reg: number, i: number, modrm: number): void {
    switch (op) {
      case 0xd8: {
        const a = this.read(0), b = this.read(i);
        if (reg === 2 || reg === 3) {
          this.setCompare(this.compare(a, b, false));
          if (reg === 3) this.pop();
          return;
        }
        this.set(0, this.arith(reg, a, b));
        return;
      }
      case 0xdc: case 0xde: {
        const a = this.read(i), b = this.read(0);
        if (op === 0xde && modrm === 0xd9) {
          this.setCompare(this.compare(b, a, false));
          this.pop();
          this.pop();
          return;
        }
        if (reg === 2 || reg === 3) {
          this.setCompare(this.compare(b, a, false));
          if (reg === 3) this.pop();
          return;
        }
        const kind = reg >= 4 ? reg ^ 1 : reg;
        this.set(i, this.arith(kind, a, b));
        if (op === 0xde) this.pop();
        return;
      }
      case 0xd9: this.d9Register(modrm, i); return;
      case 0xda:
        if (modrm === 0xe9) {
          this.setCompare(this.compare(this.read(0), this.read(1), true));
          this.pop();
          this.pop();
          return;
        }
        if (reg < 4) {
          const cc = [2, 4, 6, 10][reg];
          if (this.cpu.fpuCondition(cc)) this.set(0, this.read(i));
        }
        return;
      case 0xdb:
        if (reg < 4) {
          const cc = [3, 5, 7, 11][reg];
          if (this.cpu.fpuCondition(cc)) this.set(0, this.read(i));
          return;
        }
        if (modrm === 0xe2) { this.status &= ~(0x80ff); return; }
        if (modrm === 0xe3) { this.fninit(); return; }
        if (reg === 5 || reg === 6) this.setEflagsFromCompare(this.compare(this.read(0), this.read(i), reg === 5));
        return;
      case 0xdd:
        switch (reg) {
          case 0: this.tags[(this.top + i) & 7] = TAG_EMPTY; return;
          case 2: this.set(i, this.read(0)); return;
          case 3: this.set(i, this.read(0)); this.pop(); return;
          case 4: case 5:
            this.setCompare(this.compare(this.read(0), this.read(i), true));
            if (reg === 5) this.pop();
            return;
        }
        return;
      case 0xdf:
        if (modrm === 0xe0) { this.cpu.setAx(this.statusWord()); return; }
        if (reg === 0) { this.tags[(this.top + i) & 7] = TAG_EMPTY; this.pop(); return; }
        if (reg === 5 || reg === 6) {
          this.setEflagsFromCompare(this.compare(this.read(0), this.read(i), reg === 5));
          this.pop();
        }
        return;
    }
  }

  private d9Register(modrm: number, i: number): void {
    if (modrm < 0xc8) { this.push(this.read(i)); return; }
    if (modrm < 0xd0) {
      const a = this.read(0), b = this.read(i);
      this.set(0, b);
      this.set(i, a);
      return;
    }
    switch (modrm) {
      case 0xd0: return;
      case 0xe0: this.set(0, -this.read(0)); return;
      case 0xe1: this.set(0, Math.abs(this.read(0))); return;
      case 0xe4: this.setCompare(this.compare(this.read(0), 0, false)); return;
      case 0xe5: {
        const r = (this.top) & 7;
        const v = this.st[r];
        const neg = v < 0 || Object.is(v, -0) ? C1 : 0;
        let cls: number;
        if (this.tags[r] === TAG_EMPTY) cls = C3 | C0;
        else if (v !== v) cls = C0;
        else if (!Number.isFinite(v)) cls = C2 | C0;
        else if (v === 0) cls = C3;
        else cls = C2;
        this.status = (this.status & ~(C0 | C1 | C2 | C3)) | cls | neg;
        return;
      }
      case 0xe8: this.push(1); return;
      case 0xe9: this.push(Math.LN10 / Math.LN2); return;
      case 0xea: this.push(Math.LOG2E); return;
      case 0xeb: this.push(Math.PI); return;
      case 0xec: this.push(Math.LOG10E * Math.LN2); return;
      case 0xed: this.push(Math.LN2); return;
      case 0xee: this.push(0); return;
      case 0xf0: this.set(0, 2 ** this.read(0) - 1); return;
      case 0xf1: { const v = this.read(1) * Math.log2(this.read(0)); this.pop(); this.set(0, v); return; }
      case 0xf2: {
        const x = this.read(0);
        if (Math.abs(x) >= 2 ** 63) { this.status |= C2; return; }
        this.status &= ~C2;
        this.set(0, Math.tan(x));
        this.push(1);
        return;
      }
      case 0xf3: { const v = Math.atan2(this.read(1), this.read(0)); this.pop(); this.set(0, v); return; }
      case 0xf4: {
        const x = this.read(0);
        if (x === 0) { this.raise(ZE); this.set(0, -Infinity); this.push(x); return; }
        const e = Math.floor(Math.log2(Math.abs(x)));
        this.set(0, e);
        this.push(x / 2 ** e);
        return;
      }
      case 0xf5: case 0xf8: {
        const a = this.read(0), b = this.read(1);
        const q = modrm === 0xf8 ? Math.trunc(a / b) : Math.round(a / b);
        const r = a - q * b;
        this.set(0, r);
        const qa = Math.abs(q);
        this.status = (this.status & ~(C0 | C1 | C2 | C3)) | (qa & 1 ? C1 : 0) | (qa & 2 ? C3 : 0) | (qa & 4 ? C0 : 0);
        return;
      }
      case 0xf6: this.top = (this.top - 1) & 7; return;
      case 0xf7: this.top = (this.top + 1) & 7; return;
      case 0xf9: { const v = this.read(1) * Math.log2(this.read(0) + 1); this.pop(); this.set(0, v); return; }
      case 0xfa: {
        const x = this.read(0);
        if (x < 0) this.raise(IE);
        this.set(0, Math.sqrt(x));
        return;
      }
      case 0xfb: {
        const x = this.read(0);
        if (Math.abs(x) >= 2 ** 63) { this.status |= C2; return; }
        this.status &= ~C2;
        this.set(0, Math.sin(x));
        this.push(Math.cos(x));
        return;
      }
      case 0xfc: this.set(0, this.round(this.read(0))); return;
      case 0xfd: this.set(0, this.read(0) * 2 ** Math.trunc(this.read(1))); return;
      case 0xfe: case 0xff: {
        const x = this.read(0);
        if (Math.abs(x) >= 2 ** 63) { this.status |= C2; return; }
        this.status &= ~C2;
        this.set(0, modrm === 0xfe ? Math.sin(x) : Math.cos(x));
        return;
      }
    }
  }

  saveState(): VersionedState {
    return {
      version: 1,
      fields: {
        st: Float64Array.from(this.st),
        tags: Uint8Array.from(this.tags),
        top: this.top,
        status: this.status,
        control: this.control,
      },
    };
  }

  restoreState(state: VersionedState): void {
    if (state?.version !== 1) throw new StateError('fpu: unsupported state version');
    const f = state.fields;
    if (!(f.st instanceof Float64Array) || f.st.length !== 8 || !(f.tags instanceof Uint8Array) || f.tags.length !== 8) {
      throw new StateError('fpu: bad register state');
    }
    this.st.set(f.st);
    this.tags.set(f.tags);
    this.top = Number(f.top) & 7;
    this.status = Number(f.status) & 0xffff;
    this.control = Number(f.control) & 0xffff;
  }
}
