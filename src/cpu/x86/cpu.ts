import type { VirtualClock } from '../../base/clock.js';
import type { Stateful, VersionedState } from '../../base/state.js';
import type { CpuLocalApic, InterruptAcknowledge, IntrPin } from '../../devices/device.js';
import type { PhysicalMemory } from '../../memory/physical-memory.js';
import type { PortIoBus } from '../../memory/port-io-bus.js';
import { AC, AF, CF, DF, FIXED_ONE, ID, IF, IOPL, LAZY_ADD, LAZY_LOGIC, LAZY_SUB, NT, OF, PARITY, PF, RF, SF, STATUS_FLAGS, TF, VM, ZF } from './flags.js';
import { AC_VECTOR, BP, BR, DB, DE, DF_VECTOR, FAULT, GP, NM, NP, OF_VECTOR, PF_VECTOR, SS_VECTOR, TS, UD, hasErrorCode, isContributory, isFaultClass } from './exceptions.js';
import { CS, DS, ES, FS, GS, SS, type SegmentState, type X86Registers } from './registers.js';
import { type CompiledBlock, MODE_CS32, MODE_FLAT } from './jit/block-compiler.js';
import { CodeCache } from './jit/code-cache.js';
import { lockAllowed } from './lock-prefix.js';
import { X87 } from './fpu/x87.js';
import { CPU_STATE } from './cpu-state.js';

export interface X86CpuOptions {
  memory: PhysicalMemory;
  io: PortIoBus;
  interrupts: InterruptAcknowledge;
  clock: VirtualClock;
  /** The local APIC's MSRs and CPUID bits (without one, CPUID reports no APIC and its MSRs raise #GP). */
  apic?: CpuLocalApic;
  /** FERR# for the legacy FPU error reporting (IRQ 13) when CR0.NE is clear. */
  onFerr?: (level: boolean) => void;
  /**
   * Compile hot code into JavaScript (default: on unless TSVM_JIT=0, see ARCHITECTURE.md). `jitThreshold` is how often a
   * start address is interpreted before its block is compiled (default 100, TSVM_JIT_THRESHOLD).
   */
  jit?: boolean;
  jitThreshold?: number;
}

export type CpuStopReason = 'none' | 'halt' | 'exit-request' | 'triple-fault';

/** Prefix bytes: segment overrides, operand/address size, LOCK, REP/REPNE. */
const IS_PREFIX = new Uint8Array(256);
for (const p of [0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x66, 0x67, 0xf0, 0xf2, 0xf3]) IS_PREFIX[p] = 1;

/** Index of LDTR and TR in the segment arrays, after the six segment registers. */
const LDTR = 6, TR = 7;
/** TLB entry bits: bit 0 supervisor access allowed, bit 1 user access allowed; the page address above. */
const TLB_SUPERVISOR = 1, TLB_USER = 3;
/**
 * The access mask while alignment checking is on (CR0.AM, EFLAGS.AC, CPL 3): no TLB entry has this bit, so
 * every data access takes the slow path, which checks alignment (programs rarely run with EFLAGS.AC set).
 */
const TLB_ALIGNMENT_CHECK = 4;
const PAGE_MASK = -4096;
/** Entries kept in the list of filled TLB slots; past this a flush clears the whole table. */
const TLB_LIST_SIZE = 4096;
/** The high 32 bits of the unsigned 64-bit product of two 32-bit values (from 16-bit partial products). */
function mulHigh(a: number, b: number): number {
  const a0 = a & 0xffff, a1 = a >>> 16, b0 = b & 0xffff, b1 = b >>> 16;
  const lh = a0 * b1, hl = a1 * b0;
  const mid = ((a0 * b0) >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return a1 * b1 + (lh >>> 16) + (hl >>> 16) + Math.floor(mid / 0x10000);
}

/** TSC ticks per guest nanosecond (a 1 GHz clock). */
const TSC_PER_NS = 1;
export const CPUID_FAMILY_MODEL_STEPPING = 0x0633; // family 6, model 3 (Pentium II class), stepping 3
/** CPUID.1 EDX: FPU DE PSE TSC MSR CX8 SEP CMOV. */
export const CPUID_FEATURES = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 11) | (1 << 15);
/** CR0: PE MP EM TS ET NE WP AM NW CD PG are defined, the other bits reserved (ignored when written). */
const CR0_DEFINED = 0xe005003f | 0, CR0_ET = 0x10, CR0_NW = 0x20000000, CR0_CD = 0x40000000;
/** CR4 bits this CPU has: TSD(2) DE(3) PSE(4) PGE(7). */
const CR4_DEFINED = 0x9c, CR4_DE = 0x8;
/** DR6: B0-B3 (breakpoint n matched), BD (general detect), BS (single step); its reserved bits read as set. */
const DR6_HITS = 0xf, DR6_BD = 0x2000, DR6_BS = 0x4000, DR6_WRITABLE = 0xe00f, DR6_FIXED = 0xffff0ff0 | 0;
/** DR7: GD (general detect); bit 10 reads as set, bits 11, 12, 14, 15 as clear. */
const DR7_GD = 0x2000, DR7_WRITABLE = 0xffff23ff | 0, DR7_FIXED = 0x400;
/** Bytes a breakpoint covers by its DR7 LEN field (LEN 10b is undefined on this CPU class: taken as 8). */
const BREAKPOINT_LENGTHS = [1, 2, 8, 4];
const DEFAULT_JIT_THRESHOLD = 100;
const MSR_TSC = 0x10, MSR_SYSENTER_CS = 0x174, MSR_SYSENTER_ESP = 0x175, MSR_SYSENTER_EIP = 0x176;
const MSR_APIC_BASE = 0x1b, MSR_TSC_DEADLINE = 0x6e0;
export const CPUID_EDX_APIC = 1 << 9;

/**
 * An IA-32 processor of the P6 class, interpreted. The hot path is `step()`: prefixes, one switch over the
 * opcode, operands straight from guest RAM through a software TLB. Status flags are computed lazily from the
 * last arithmetic operation. Instructions raise faults by throwing the shared FAULT object before they change
 * any architectural state, so the run loop can restart them after delivering the exception.
 */
export class X86Cpu implements Stateful, IntrPin {
  readonly id = 'cpu0';
  readonly regs = new Int32Array(8);
  private readonly r16 = new Uint16Array(this.regs.buffer);
  private readonly r8 = new Uint8Array(this.regs.buffer);
  eip = 0;

  // Segment registers ES..GS, then LDTR and TR: selector, base, attributes, and the valid offset range.
  readonly segSel = new Int32Array(8);
  readonly segBase = new Int32Array(8);
  readonly segAttr = new Int32Array(8);
  readonly segLimit = new Float64Array(8);
  private readonly segLo = new Float64Array(8);
  private readonly segHi = new Float64Array(8);
  /** Bit 0: readable, bit 1: writable (for data accesses through this register). */
  private readonly segAccess = new Uint8Array(8);
  /** 1 when base 0, limit 4 GiB, expand-up, readable and writable: no check can fail, the offset is linear. */
  private readonly segFlat = new Uint8Array(8);

  gdtBase = 0;
  gdtLimit = 0;
  idtBase = 0;
  idtLimit = 0x3ff;
  cr0 = 0x60000010;
  cr2 = 0;
  cr3 = 0;
  cr4 = 0;
  readonly dr = new Int32Array(8);
  cpl = 0;
  private cs32 = false;
  private ss32 = false;
  /** MODE_FLAT when DS, ES and SS are flat and the stack 32-bit (compiled blocks then skip segmentation). */
  private flatData = 0;

  // EFLAGS: the stored bits, and which status flags are to be computed from the lazy record instead.
  private flags = FIXED_ONE;
  private lazy = 0;
  private lop = LAZY_LOGIC;
  private la = 0;
  private lb = 0;
  private lr = 0;
  private lw = 32;

  // Decoding state of the current instruction.
  private o32 = false;
  private a32 = false;
  private segOverride = -1;
  private rep = 0;
  private instrStart = 0;
  private eaSeg = DS;
  private eaOff = 0;

  private readonly ram: Uint8Array;
  /** The same RAM as 32-bit words (little-endian host) for aligned accesses. */
  private readonly ram32: Int32Array;
  /** Guest RAM as words, for compiled code's aligned 16-bit accesses. */
  private readonly ram16: Uint16Array;
  private readonly ramSize: number;
  private readonly tlbRead = new Int32Array(1 << 20);
  private readonly tlbWrite = new Int32Array(1 << 20);
  private readonly tlbFilled = new Int32Array(TLB_LIST_SIZE);
  /** 1 for each 4 MiB region whose TLB entries came from a 4 MiB page: INVLPG drops all of them. */
  private readonly largePageCached = new Uint8Array(1024);
  private largePagesCached = 0;
  private tlbCount = 0;
  /** TLB_USER at CPL 3, else TLB_SUPERVISOR. */
  private accessMask = TLB_SUPERVISOR;
  private a20Mask = -1;
  /** EIP values [fetchEipLo, fetchEipHi) are in the cached code page; RAM index = fetchDelta + EIP. */
  private fetchEipLo = 0;
  private fetchEipHi = 0;
  private fetchDelta = 0;
  /**
   * Changes whenever the block a CS:EIP leads to may change (TLB flush, CS or CPL change, data-segment mode,
   * dropped code): block links made under another value are not followed.
   */
  private linkEpoch = 0;

  halted = false;
  stopReason: CpuStopReason = 'none';
  private exitRequested = false;
  private intrLine = false;
  private nmiPending = false;
  private nmiBlocked = false;
  /** Interrupts are inhibited for one instruction after STI, MOV SS and POP SS. */
  private interruptShadow = false;
  // Debugging (see stepWithDebug). Breakpoints enabled in DR7, one bit per DR0-DR3, by kind.
  private codeBreakpoints = 0;
  private dataBreakpoints = 0;
  private ioBreakpoints = 0;
  /** DR6 B0-B3 bits of the data and I/O breakpoints the current instruction matched. */
  private debugHits = 0;
  /** The run loop executes one instruction at a time through stepWithDebug: TF, RF or a breakpoint is set. */
  private debugStepping = false;
  /** DR6 bits of debug traps that MOV SS / POP SS held back until after the next instruction. */
  private heldDebugTraps = 0;
  /** The last instruction loaded SS with MOV or POP (debug traps and code breakpoints wait one instruction). */
  private ssLoaded = false;
  /** The instruction executing is INT n, INT3, INTO or INT1: no single-step trap follows it. */
  private softwareInterrupted = false;
  /** Set whenever the run loop must look at events before the next instruction (see serviceEvents). */
  private attention = false;
  /** Instructions executed by finished run() calls. */
  instructionCount = 0;
  /** Instructions the current run() call has executed before the block or instruction now running. */
  private runProgress = 0;
  private tscOffset = 0;
  private sysenterCs = 0;
  private sysenterEsp = 0;
  private sysenterEip = 0;
  /** Nesting of exception delivery, for #DF and triple fault. */
  private deliveringVector = -1;
  private readonly fpu: X87;
  /** Compiled blocks (null: interpret only). */
  private readonly jit: CodeCache | null;

  private readonly memory: PhysicalMemory;
  private readonly io: PortIoBus;
  private readonly interrupts: InterruptAcknowledge;
  private readonly clock: VirtualClock;
  private readonly apic: CpuLocalApic | null;
  private readonly onFerr: (level: boolean) => void;

  constructor(options: X86CpuOptions) {
    this.memory = options.memory;
    this.io = options.io;
    this.interrupts = options.interrupts;
    this.clock = options.clock;
    this.apic = options.apic ?? null;
    this.onFerr = options.onFerr ?? (() => {});
    this.ram = options.memory.ram.bytes;
    this.ram32 = new Int32Array(this.ram.buffer, this.ram.byteOffset, this.ram.byteLength >> 2);
    this.ram16 = new Uint16Array(this.ram.buffer, this.ram.byteOffset, this.ram.byteLength >> 1);
    this.ramSize = options.memory.ramSize;
    this.fpu = new X87(this);
    const jitEnabled = options.jit ?? process.env.TSVM_JIT !== '0';
    const threshold = options.jitThreshold ?? (Number(process.env.TSVM_JIT_THRESHOLD) || DEFAULT_JIT_THRESHOLD);
    this.jit = jitEnabled ? new CodeCache(this, this.ram.subarray(0, this.ramSize), Math.max(1, Math.min(255, threshold))) : null;
    options.memory.onRamWrite((address, length) => this.jit?.writtenRange(address, length));
    options.memory.onA20Change(() => {
      this.a20Mask = this.memory.a20Mask;
      this.flushTlb();
    });
    options.memory.onLayoutChange(() => this.flushTlb());
    this.reset();
  }

  // ---------------------------------------------------------------------------------------------------
  // Reset and register access

  reset(): void {
    this.regs.fill(0);
    this.regs[2] = CPUID_FAMILY_MODEL_STEPPING;
    this.eip = 0xfff0;
    this.flags = FIXED_ONE;
    this.lazy = 0;
    this.cr0 = 0x60000010;
    this.cr2 = this.cr3 = this.cr4 = 0;
    this.dr.fill(0);
    this.dr[6] = DR6_FIXED;
    this.dr[7] = DR7_FIXED;
    this.heldDebugTraps = 0;
    this.gdtBase = 0;
    this.gdtLimit = 0xffff;
    this.idtBase = 0;
    this.idtLimit = 0xffff;
    for (let s = 0; s < 6; s++) this.setSegmentCache(s, 0, 0, 0xffff, 0x93);
    this.setSegmentCache(CS, 0xf000, 0xffff0000 | 0, 0xffff, 0x93);
    this.setSegmentCache(LDTR, 0, 0, 0xffff, 0x82);
    this.setSegmentCache(TR, 0, 0, 0xffff, 0x8b);
    this.cpl = 0;
    this.updateModes();
    this.halted = false;
    this.intrLine = false;
    this.nmiPending = false;
    this.nmiBlocked = false;
    this.interruptShadow = false;
    this.deliveringVector = -1;
    this.sysenterCs = this.sysenterEsp = this.sysenterEip = 0;
    this.a20Mask = this.memory.a20Mask;
    this.fpu.reset();
    this.jit?.clear();
    this.updateBreakpoints();
    this.flushTlb();
  }

  getRegisters(): X86Registers {
    const seg = (i: number): SegmentState => ({
      selector: this.segSel[i] & 0xffff,
      base: this.segBase[i] >>> 0,
      limit: this.segLimit[i],
      attributes: this.segAttr[i] & 0xffff,
    });
    return {
      gpr: Array.from(this.regs, (v) => v >>> 0),
      eip: this.eip >>> 0,
      eflags: this.getEflags() >>> 0,
      segments: [0, 1, 2, 3, 4, 5].map(seg),
      ldtr: seg(LDTR),
      tr: seg(TR),
      gdtr: { base: this.gdtBase >>> 0, limit: this.gdtLimit },
      idtr: { base: this.idtBase >>> 0, limit: this.idtLimit },
      cr0: this.cr0 >>> 0,
      cr2: this.cr2 >>> 0,
      cr3: this.cr3 >>> 0,
      cr4: this.cr4 >>> 0,
    };
  }

  setRegisters(r: X86Registers): void {
    for (let i = 0; i < 8; i++) this.regs[i] = r.gpr[i] | 0;
    this.eip = r.eip | 0;
    this.cr0 = r.cr0 | 0x10;
    this.cr2 = r.cr2 | 0;
    this.cr3 = r.cr3 | 0;
    this.cr4 = r.cr4 | 0;
    this.setEflags(r.eflags);
    r.segments.forEach((s, i) => this.setSegmentCache(i, s.selector, s.base | 0, s.limit, s.attributes));
    this.setSegmentCache(LDTR, r.ldtr.selector, r.ldtr.base | 0, r.ldtr.limit, r.ldtr.attributes);
    this.setSegmentCache(TR, r.tr.selector, r.tr.base | 0, r.tr.limit, r.tr.attributes);
    this.gdtBase = r.gdtr.base | 0;
    this.gdtLimit = r.gdtr.limit;
    this.idtBase = r.idtr.base | 0;
    this.idtLimit = r.idtr.limit;
    this.cpl = this.protectedMode ? (this.flags & VM ? 3 : (this.segAttr[SS] >> 5) & 3) : 0;
    this.updateModes();
    this.halted = false;
    this.flushTlb();
  }

  get protectedMode(): boolean {
    return (this.cr0 & 1) !== 0;
  }

  private get paging(): boolean {
    return this.cr0 < 0;
  }

  /** Recompute what depends on CS/SS attributes, CPL and mode. */
  private updateModes(): void {
    this.cs32 = (this.segAttr[CS] & 0x4000) !== 0 && this.protectedMode && (this.flags & VM) === 0;
    this.ss32 = (this.segAttr[SS] & 0x4000) !== 0 && this.protectedMode && (this.flags & VM) === 0;
    this.updateAccessMask();
    this.updateFlatData();
    this.invalidateFetch();
  }

  private updateAccessMask(): void {
    const alignmentCheck = (this.cr0 & 0x40000) !== 0 && (this.flags & AC) !== 0;
    this.accessMask = this.cpl !== 3 ? TLB_SUPERVISOR : alignmentCheck ? TLB_ALIGNMENT_CHECK : TLB_USER;
  }

  private updateFlatData(): void {
    const flatData = this.ss32 && (this.segFlat[DS] & this.segFlat[ES] & this.segFlat[SS]) !== 0 ? MODE_FLAT : 0;
    if (flatData !== this.flatData) {
      this.flatData = flatData;
      this.linkEpoch++;
    }
  }

  /** Loads a segment register's hidden part and derives the checks its accesses need. */
  private setSegmentCache(seg: number, selector: number, base: number, limit: number, attributes: number): void {
    this.segSel[seg] = selector & 0xffff;
    this.segBase[seg] = base | 0;
    this.segLimit[seg] = limit >>> 0;
    this.segAttr[seg] = attributes;
    const type = attributes & 0xf;
    const isCode = (attributes & 0x18) === 0x18;
    const present = (attributes & 0x80) !== 0;
    if (!present && seg !== CS) {
      // Unusable (null selector in protected mode): every access faults.
      this.segLo[seg] = 1;
      this.segHi[seg] = 0;
      this.segAccess[seg] = 0;
      this.segFlat[seg] = 0;
      this.updateFlatData();
      return;
    }
    if (!isCode && (type & 4)) {
      // Expand-down data: valid offsets lie above the limit.
      this.segLo[seg] = (limit >>> 0) + 1;
      this.segHi[seg] = attributes & 0x4000 ? 0xffffffff : 0xffff;
    } else {
      this.segLo[seg] = 0;
      this.segHi[seg] = limit >>> 0;
    }
    this.segAccess[seg] = isCode ? (type & 2 ? 1 : 0) : type & 2 ? 3 : 1;
    this.segFlat[seg] = base === 0 && this.segLo[seg] === 0 && this.segHi[seg] === 0xffffffff && this.segAccess[seg] === 3 ? 1 : 0;
    this.updateFlatData();
    if (seg === CS) this.invalidateFetch();
  }

  /**
   * Real-mode and v8086 segment load: base = selector * 16. In v8086 mode the limit is 64 KiB. In real mode
   * only the selector and base change and the limit stays what the last protected-mode load left, as on
   * hardware: firmware depends on it ("big real mode": SeaBIOS runs option ROMs with 4 GiB data limits, and
   * the VGA BIOS reaches its MMIO registers that way). Type checks do not apply in real mode.
   */
  private setSegmentReal(seg: number, selector: number): void {
    const vm86 = (this.flags & VM) !== 0;
    const limit = vm86 ? 0xffff : this.segLimit[seg];
    const attributes = vm86 ? 0xf3 : 0x93 | (this.segAttr[seg] & 0xc000);
    this.setSegmentCache(seg, selector & 0xffff, (selector & 0xffff) << 4, limit, attributes);
  }

  // ---------------------------------------------------------------------------------------------------
  // Flags

  getEflags(): number {
    let f = this.flags & ~this.lazy;
    const lz = this.lazy;
    if (lz !== 0) {
      if (lz & CF && this.lazyCF()) f |= CF;
      if (lz & PF) f |= PARITY[this.lr & 0xff];
      if (lz & AF && this.lazyAF()) f |= AF;
      if (lz & ZF && this.lr << (32 - this.lw) === 0) f |= ZF;
      if (lz & SF && this.lr << (32 - this.lw) < 0) f |= SF;
      if (lz & OF && this.lazyOF()) f |= OF;
    }
    return f | FIXED_ONE;
  }

  /** Writes all of EFLAGS as given (callers apply privilege rules). */
  setEflags(value: number): void {
    const old = this.flags;
    this.flags = (value & (STATUS_FLAGS | TF | IF | DF | IOPL | NT | RF | VM | AC | ID)) | FIXED_ONE;
    this.lazy = 0;
    // Single-stepping and RF are looked after between instructions (serviceEvents).
    if (this.flags & (TF | RF)) this.attention = true;
    if ((this.flags ^ old) & VM) this.updateModes();
    else if ((this.flags ^ old) & AC) this.updateAccessMask();
  }

  private lazyCF(): boolean {
    const a = this.la, b = this.lb, r = this.lr, s = 32 - this.lw;
    if (this.lop === LAZY_ADD) return ((a & b) | ((a | b) & ~r)) << s < 0;
    if (this.lop === LAZY_SUB) return ((~a & b) | ((~a | b) & r)) << s < 0;
    return false;
  }

  private lazyOF(): boolean {
    const a = this.la, b = this.lb, r = this.lr, s = 32 - this.lw;
    if (this.lop === LAZY_ADD) return ((a ^ r) & (b ^ r)) << s < 0;
    if (this.lop === LAZY_SUB) return ((a ^ b) & (a ^ r)) << s < 0;
    return false;
  }

  private lazyAF(): boolean {
    if (this.lop === LAZY_LOGIC) return false;
    return ((this.la ^ this.lb ^ this.lr) & 0x10) !== 0;
  }

  private getCF(): number {
    return this.lazy & CF ? (this.lazyCF() ? 1 : 0) : this.flags & CF;
  }

  private getZF(): boolean {
    return this.lazy & ZF ? this.lr << (32 - this.lw) === 0 : (this.flags & ZF) !== 0;
  }

  private getSF(): boolean {
    return this.lazy & SF ? this.lr << (32 - this.lw) < 0 : (this.flags & SF) !== 0;
  }

  private getOF(): boolean {
    return this.lazy & OF ? this.lazyOF() : (this.flags & OF) !== 0;
  }

  private getPF(): boolean {
    return this.lazy & PF ? PARITY[this.lr & 0xff] !== 0 : (this.flags & PF) !== 0;
  }

  /**
   * Sets the given status bits to the given values; the others keep what they were, lazily computed ones from
   * the same record (every writer of the record sets `lazy` anew).
   */
  private setStatusFlags(mask: number, values: number): void {
    this.flags = (this.flags & ~mask) | (values & mask);
    this.lazy &= ~mask;
  }

  private setLazy(op: number, a: number, b: number, r: number, width: number): void {
    this.lop = op;
    this.la = a;
    this.lb = b;
    this.lr = r;
    this.lw = width;
    this.lazy = STATUS_FLAGS;
  }

  /** Keeps CF as it was (INC, DEC) while the other status flags become lazy. */
  private setLazyKeepCF(op: number, a: number, b: number, r: number, width: number): void {
    this.setLazyWithCF(op, a, b, r, width, this.getCF());
  }

  /** The other status flags lazy, CF given (0 or 1): INC and DEC when compiled code knows the CF before them. */
  private setLazyWithCF(op: number, a: number, b: number, r: number, width: number, cf: number): void {
    this.flags = (this.flags & ~CF) | cf;
    this.lop = op;
    this.la = a;
    this.lb = b;
    this.lr = r;
    this.lw = width;
    this.lazy = STATUS_FLAGS & ~CF;
  }

  /** Condition codes 0..15 as in Jcc/SETcc/CMOVcc. */
  private condition(cc: number): boolean {
    let v: boolean;
    switch (cc >> 1) {
      case 0: v = this.getOF(); break;
      case 1: v = this.getCF() !== 0; break;
      case 2: v = this.getZF(); break;
      case 3: v = this.getCF() !== 0 || this.getZF(); break;
      case 4: v = this.getSF(); break;
      case 5: v = this.getPF(); break;
      case 6: v = this.getSF() !== this.getOF(); break;
      default: v = this.getZF() || this.getSF() !== this.getOF(); break;
    }
    return (cc & 1) === 0 ? v : !v;
  }

  // ---------------------------------------------------------------------------------------------------
  // Faults

  /** Raises an exception from inside an instruction: state is rolled back to the instruction's start. */
  fault(vector: number, errorCode = -1): never {
    FAULT.vector = vector;
    FAULT.errorCode = errorCode;
    throw FAULT;
  }

  private gp(errorCode = 0): never {
    return this.fault(GP, errorCode);
  }

  private ud(): never {
    return this.fault(UD);
  }

  // ---------------------------------------------------------------------------------------------------
  // Paging and the TLB

  flushTlb(): void {
    if (this.tlbCount > TLB_LIST_SIZE) {
      this.tlbRead.fill(0);
      this.tlbWrite.fill(0);
    } else {
      for (let i = 0; i < this.tlbCount; i++) {
        const page = this.tlbFilled[i];
        this.tlbRead[page] = 0;
        this.tlbWrite[page] = 0;
      }
    }
    this.tlbCount = 0;
    if (this.largePagesCached !== 0) {
      this.largePageCached.fill(0);
      this.largePagesCached = 0;
    }
    this.invalidateFetch();
  }

  /** INVLPG: the translation of the page holding `linear`, all 4 MiB of it when it came from a 4 MiB page. */
  private invalidatePage(linear: number): void {
    const region = linear >>> 22;
    if (this.largePageCached[region] !== 0) {
      this.largePageCached[region] = 0;
      this.largePagesCached--;
      this.tlbRead.fill(0, region << 10, (region + 1) << 10);
      this.tlbWrite.fill(0, region << 10, (region + 1) << 10);
    }
    this.tlbRead[linear >>> 12] = 0;
    this.tlbWrite[linear >>> 12] = 0;
    this.invalidateFetch();
  }

  private physRead32(addr: number): number {
    const a = addr & this.a20Mask;
    if (a >= 0 && a + 4 <= this.ramSize) {
      const m = this.ram;
      return m[a] | (m[a + 1] << 8) | (m[a + 2] << 16) | (m[a + 3] << 24);
    }
    return this.memory.read(a, 4) | 0;
  }

  private physWrite32(addr: number, value: number): void {
    const a = addr & this.a20Mask;
    if (a >= 0 && a + 4 <= this.ramSize) {
      const m = this.ram;
      m[a] = value;
      m[a + 1] = value >> 8;
      m[a + 2] = value >> 16;
      m[a + 3] = value >> 24;
      return;
    }
    this.memory.write(a, 4, value >>> 0);
  }

  /**
   * Walks the page tables for `linear` and fills the TLB. `user` is the privilege of the access (not simply
   * CPL: descriptor-table and TSS accesses are supervisor accesses). Returns the physical address.
   */
  private translate(linear: number, write: boolean, user: boolean): number {
    let phys: number;
    let userOk = true;
    let writeOk = true;
    let largePage = false;
    if (!this.paging) {
      phys = linear & this.a20Mask;
    } else {
      const pdeAddr = (this.cr3 & PAGE_MASK) | ((linear >>> 22) << 2);
      let pde = this.physRead32(pdeAddr);
      const errorBase = (write ? 2 : 0) | (user ? 4 : 0);
      if ((pde & 1) === 0) this.pageFault(linear, errorBase);
      if (pde & 0x80 && this.cr4 & 0x10) {
        // Bits 21:13 of a 4 MiB PDE are reserved without PSE-36 (not in CPUID): #PF with P and RSVD.
        if (pde & 0x3fe000) this.pageFault(linear, errorBase | 9);
        userOk = (pde & 4) !== 0;
        writeOk = (pde & 2) !== 0;
        this.checkPageAccess(linear, errorBase, user, write, userOk, writeOk);
        const newPde = pde | 0x20 | (write ? 0x40 : 0);
        if (newPde !== pde) this.physWrite32(pdeAddr, newPde);
        phys = ((pde & 0xffc00000) | (linear & 0x3ff000)) & this.a20Mask;
        largePage = true;
      } else {
        const pteAddr = (pde & PAGE_MASK) | ((linear >>> 10) & 0xffc);
        const pte = this.physRead32(pteAddr);
        if ((pte & 1) === 0) this.pageFault(linear, errorBase);
        userOk = (pde & pte & 4) !== 0;
        writeOk = (pde & pte & 2) !== 0;
        this.checkPageAccess(linear, errorBase, user, write, userOk, writeOk);
        if ((pde & 0x20) === 0) {
          pde |= 0x20;
          this.physWrite32(pdeAddr, pde);
        }
        const newPte = pte | 0x20 | (write ? 0x40 : 0);
        if (newPte !== pte) this.physWrite32(pteAddr, newPte);
        phys = (pte & PAGE_MASK) & this.a20Mask;
      }
    }
    const page = phys & PAGE_MASK;
    // Pages holding a data breakpoint get no fast entries: their accesses take slowRead/slowWrite, which match.
    if (this.memory.isDirectRam(page >>> 0) && (this.dataBreakpoints === 0 || !this.watchesPage(linear))) {
      const vpn = linear >>> 12;
      const bits = userOk ? TLB_USER : TLB_SUPERVISOR;
      if (largePage && this.largePageCached[linear >>> 22] === 0) {
        this.largePageCached[linear >>> 22] = 1;
        this.largePagesCached++;
      }
      if (this.tlbRead[vpn] === 0 && this.tlbWrite[vpn] === 0) {
        if (this.tlbCount < TLB_LIST_SIZE) this.tlbFilled[this.tlbCount] = vpn;
        this.tlbCount++;
      }
      this.tlbRead[vpn] = page | bits;
      if (write && (this.jit === null || this.jit.codePages[page >>> 12] === 0)) {
        // Supervisor writes to read-only pages are allowed unless CR0.WP; user writes need R/W. Pages with
        // compiled code get no fast write entry: their writes go through slowWrite, which tells the cache.
        const supW = writeOk || (this.cr0 & 0x10000) === 0;
        this.tlbWrite[vpn] = writeOk && userOk ? page | TLB_USER : supW ? page | TLB_SUPERVISOR : 0;
      }
    }
    return (phys & PAGE_MASK) | (linear & 0xfff);
  }

  private checkPageAccess(linear: number, errorBase: number, user: boolean, write: boolean, userOk: boolean, writeOk: boolean): void {
    if (user && !userOk) this.pageFault(linear, errorBase | 1);
    if (write && !writeOk && (user || (this.cr0 & 0x10000) !== 0)) this.pageFault(linear, errorBase | 1);
  }

  private pageFault(linear: number, errorCode: number): never {
    this.cr2 = linear;
    return this.fault(PF_VECTOR, errorCode);
  }

  // ---------------------------------------------------------------------------------------------------
  // Linear memory access (after segmentation). Fast path: one TLB load and a RAM access.

  rd8(lin: number): number {
    const e = this.tlbRead[lin >>> 12];
    if ((e & this.accessMask) === this.accessMask) return this.ram[(e & PAGE_MASK) | (lin & 0xfff)];
    return this.slowRead(lin, 1);
  }

  rd16(lin: number): number {
    const e = this.tlbRead[lin >>> 12];
    if ((e & this.accessMask) === this.accessMask && (lin & 0xfff) !== 0xfff) {
      const i = (e & PAGE_MASK) | (lin & 0xfff);
      return this.ram[i] | (this.ram[i + 1] << 8);
    }
    return this.slowRead(lin, 2);
  }

  rd32(lin: number): number {
    const e = this.tlbRead[lin >>> 12];
    if ((e & this.accessMask) === this.accessMask && (lin & 0xfff) <= 0xffc) {
      const i = (e & PAGE_MASK) | (lin & 0xfff);
      if ((i & 3) === 0) return this.ram32[i >> 2];
      const m = this.ram;
      return m[i] | (m[i + 1] << 8) | (m[i + 2] << 16) | (m[i + 3] << 24);
    }
    return this.slowRead(lin, 4);
  }

  wr8(lin: number, v: number): void {
    const e = this.tlbWrite[lin >>> 12];
    if ((e & this.accessMask) === this.accessMask) {
      this.ram[(e & PAGE_MASK) | (lin & 0xfff)] = v;
      return;
    }
    this.slowWrite(lin, 1, v);
  }

  wr16(lin: number, v: number): void {
    const e = this.tlbWrite[lin >>> 12];
    if ((e & this.accessMask) === this.accessMask && (lin & 0xfff) !== 0xfff) {
      const i = (e & PAGE_MASK) | (lin & 0xfff);
      this.ram[i] = v;
      this.ram[i + 1] = v >> 8;
      return;
    }
    this.slowWrite(lin, 2, v);
  }

  wr32(lin: number, v: number): void {
    const e = this.tlbWrite[lin >>> 12];
    if ((e & this.accessMask) === this.accessMask && (lin & 0xfff) <= 0xffc) {
      const i = (e & PAGE_MASK) | (lin & 0xfff);
      if ((i & 3) === 0) {
        this.ram32[i >> 2] = v;
        return;
      }
      const m = this.ram;
      m[i] = v;
      m[i + 1] = v >> 8;
      m[i + 2] = v >> 16;
      m[i + 3] = v >> 24;
      return;
    }
    this.slowWrite(lin, 4, v);
  }

  private slowRead(lin: number, size: 1 | 2 | 4): number {
    if (lin & (size - 1) && this.accessMask === TLB_ALIGNMENT_CHECK) this.fault(AC_VECTOR, 0);
    if (this.dataBreakpoints !== 0) this.matchDataBreakpoints(lin, size, false);
    const user = this.cpl === 3;
    if (size > 1 && (lin & 0xfff) > 0x1000 - size) {
      // Crossing a page: both pages must be readable before anything is read.
      let v = 0;
      const first = 0x1000 - (lin & 0xfff);
      const p1 = this.translate(lin, false, user);
      const p2 = this.translate((lin + first) | 0, false, user);
      for (let i = 0; i < size; i++) v |= this.memory.read(i < first ? p1 + i : p2 + i - first, 1) << (8 * i);
      return size === 4 ? v | 0 : v;
    }
    const p = this.translate(lin, false, user);
    const v = this.memory.read(p >>> 0, size);
    return size === 4 ? v | 0 : v;
  }

  private slowWrite(lin: number, size: 1 | 2 | 4, v: number): void {
    if (lin & (size - 1) && this.accessMask === TLB_ALIGNMENT_CHECK) this.fault(AC_VECTOR, 0);
    if (this.dataBreakpoints !== 0) this.matchDataBreakpoints(lin, size, true);
    const user = this.cpl === 3;
    if (size > 1 && (lin & 0xfff) > 0x1000 - size) {
      const first = 0x1000 - (lin & 0xfff);
      const p1 = this.translate(lin, true, user);
      const p2 = this.translate((lin + first) | 0, true, user);
      for (let i = 0; i < size; i++) this.memory.write(i < first ? p1 + i : p2 + i - first, 1, (v >>> (8 * i)) & 0xff);
      this.codeWritten(p1, first);
      this.codeWritten(p2, size - first);
      return;
    }
    const p = this.translate(lin, true, user);
    this.memory.write(p >>> 0, size, size === 4 ? v >>> 0 : v & (size === 1 ? 0xff : 0xffff));
    this.codeWritten(p, size);
  }

  /** After a slow-path write to physical `p`: compiled code there may be stale. */
  private codeWritten(p: number, size: number): void {
    const jit = this.jit;
    if (jit !== null && p >>> 0 < this.ramSize && jit.codePages[p >>> 12] !== 0) jit.written(p, size);
  }

  codeInvalidated(): void {
    this.attention = true;
    this.linkEpoch++;
  }

  /** The code cache compiled a block in physical page `page`: its fast write entries must go. */
  protectCodePage(page: number): void {
    if (this.tlbCount > TLB_LIST_SIZE) {
      this.flushTlb();
      return;
    }
    for (let i = 0; i < this.tlbCount; i++) {
      const vpn = this.tlbFilled[i];
      if (this.tlbWrite[vpn] >>> 12 === page) this.tlbWrite[vpn] = 0;
    }
  }

  /** Checks that a write of `size` bytes at `lin` would not fault (for instructions writing several places). */
  probeWrite(lin: number, size: number): void {
    const e = this.tlbWrite[lin >>> 12];
    if ((e & this.accessMask) === this.accessMask && (lin & 0xfff) <= 0x1000 - size) return;
    const user = this.cpl === 3;
    this.translate(lin, true, user);
    if ((lin & 0xfff) > 0x1000 - size) this.translate((lin + size - 1) | 0, true, user);
  }

  /** Runs memory accesses with supervisor privilege (descriptor tables, TSS, IDT), whatever the CPL. */
  private asSupervisor<T>(access: () => T): T {
    const savedMask = this.accessMask;
    const savedCpl = this.cpl;
    this.accessMask = TLB_SUPERVISOR;
    this.cpl = 0;
    try {
      return access();
    } finally {
      this.accessMask = savedMask;
      this.cpl = savedCpl;
    }
  }

  private sysRead32(lin: number): number {
    return this.asSupervisor(() => this.rd32(lin));
  }

  private sysRead16(lin: number): number {
    return this.asSupervisor(() => this.rd16(lin));
  }

  private sysWrite32(lin: number, v: number): void {
    this.asSupervisor(() => this.wr32(lin, v));
  }

  private sysWrite16(lin: number, v: number): void {
    this.asSupervisor(() => this.wr16(lin, v));
  }

  // ---------------------------------------------------------------------------------------------------
  // Segmentation: offset → linear with limit and access checks.

  private segFault(seg: number): never {
    return this.fault(seg === SS ? SS_VECTOR : GP, 0);
  }

  /** Linear address of a data read of `size` bytes at seg:off. */
  segRead(seg: number, off: number, size: number): number {
    if (this.segFlat[seg] !== 0) return off;
    const o = off >>> 0;
    if (o < this.segLo[seg] || o + size - 1 > this.segHi[seg] || (this.segAccess[seg] & 1) === 0) this.segFault(seg);
    return (this.segBase[seg] + off) | 0;
  }

  segWrite(seg: number, off: number, size: number): number {
    if (this.segFlat[seg] !== 0) return off;
    const o = off >>> 0;
    if (o < this.segLo[seg] || o + size - 1 > this.segHi[seg] || (this.segAccess[seg] & 2) === 0) this.segFault(seg);
    return (this.segBase[seg] + off) | 0;
  }

  // ---------------------------------------------------------------------------------------------------
  // Instruction fetch

  private fetch8(): number {
    const eip = this.eip;
    if (eip >= this.fetchEipLo && eip < this.fetchEipHi) {
      this.eip = eip + 1;
      return this.ram[this.fetchDelta + eip];
    }
    return this.fetchSlow();
  }

  /**
   * Translates EIP's page and caches the range of EIP values that stay inside it (and inside CS's limit), so
   * the next fetches are one compare and a RAM read. EIP is kept as a signed 32-bit value; ranges are
   * computed unsigned and stored so that the signed compare in fetch8 holds.
   */
  private fetchSlow(): number {
    const p = this.mapFetchWindow();
    this.eip = (this.eip + 1) | 0;
    return this.fetchEipLo === this.fetchEipHi ? this.memory.read(p >>> 0, 1) : this.ram[p];
  }

  /**
   * Translates CS:EIP for execution (faulting as an instruction fetch would) and, when it is in RAM, makes its
   * page the fetch window. Returns the physical address.
   */
  private mapFetchWindow(): number {
    const eip = this.eip;
    if (eip >>> 0 > this.segLimit[CS]) this.gp(0);
    const lin = (this.segBase[CS] + eip) | 0;
    const p = this.translate(lin, false, this.cpl === 3);
    const page = p & PAGE_MASK;
    if (!this.memory.isDirectRam(page >>> 0)) {
      this.invalidateFetch();
      return p;
    }
    const startU = (eip >>> 0) - (lin & 0xfff);
    const endU = Math.min(startU + 4096, this.segLimit[CS] + 1);
    const lo = startU | 0;
    let hi: number;
    if (startU < 0x80000000) hi = endU > 0x7fffffff ? 0x7fffffff : endU;
    else hi = endU >= 0x100000000 ? 0 : endU | 0;
    this.fetchEipLo = lo;
    this.fetchEipHi = hi;
    this.fetchDelta = page - lo;
    return p;
  }

  private invalidateFetch(): void {
    this.fetchEipLo = 0;
    this.fetchEipHi = 0;
    this.linkEpoch++;
  }

  private fetch16(): number {
    const lo = this.fetch8();
    return lo | (this.fetch8() << 8);
  }

  private fetch32(): number {
    const b0 = this.fetch8();
    const b1 = this.fetch8();
    const b2 = this.fetch8();
    return b0 | (b1 << 8) | (b2 << 16) | (this.fetch8() << 24);
  }

  private fetchImm(): number {
    return this.o32 ? this.fetch32() : this.fetch16();
  }

  // ---------------------------------------------------------------------------------------------------
  // ModRM operands

  /** Decodes the memory operand of a ModRM byte (mod != 3) into eaSeg:eaOff. */
  private decodeEA(modrm: number): void {
    const mod = modrm >> 6;
    const rm = modrm & 7;
    let seg = DS;
    let off: number;
    if (this.a32) {
      if (rm === 4) {
        const sib = this.fetch8();
        const base = sib & 7;
        const index = (sib >> 3) & 7;
        if (base === 5 && mod === 0) {
          off = this.fetch32();
        } else {
          off = this.regs[base];
          if (base === 4 || base === 5) seg = SS;
        }
        if (index !== 4) off = (off + (this.regs[index] << (sib >> 6))) | 0;
      } else if (rm === 5 && mod === 0) {
        off = this.fetch32();
      } else {
        off = this.regs[rm];
        if (rm === 5) seg = SS;
      }
      if (mod === 1) off = (off + ((this.fetch8() << 24) >> 24)) | 0;
      else if (mod === 2) off = (off + this.fetch32()) | 0;
    } else {
      const r = this.regs;
      switch (rm) {
        case 0: off = r[3] + r[6]; break;
        case 1: off = r[3] + r[7]; break;
        case 2: off = r[5] + r[6]; seg = SS; break;
        case 3: off = r[5] + r[7]; seg = SS; break;
        case 4: off = r[6]; break;
        case 5: off = r[7]; break;
        case 6:
          if (mod === 0) off = this.fetch16();
          else { off = r[5]; seg = SS; }
          break;
        default: off = r[3]; break;
      }
      if (mod === 1) off += (this.fetch8() << 24) >> 24;
      else if (mod === 2) off += this.fetch16();
      off &= 0xffff;
    }
    this.eaSeg = this.segOverride >= 0 ? this.segOverride : seg;
    this.eaOff = off;
  }

  private reg8(n: number): number {
    return this.r8[n < 4 ? n << 2 : ((n - 4) << 2) + 1];
  }

  private setReg8(n: number, v: number): void {
    this.r8[n < 4 ? n << 2 : ((n - 4) << 2) + 1] = v;
  }

  private reg16(n: number): number {
    return this.r16[n << 1];
  }

  private setReg16(n: number, v: number): void {
    this.r16[n << 1] = v;
  }

  /** Reads the r/m operand (8-bit). For memory it leaves eaSeg:eaOff decoded for a later write. */
  private readRM8(modrm: number): number {
    if (modrm >= 0xc0) return this.reg8(modrm & 7);
    this.decodeEA(modrm);
    return this.rd8(this.segRead(this.eaSeg, this.eaOff, 1));
  }

  private readRM16(modrm: number): number {
    if (modrm >= 0xc0) return this.r16[(modrm & 7) << 1];
    this.decodeEA(modrm);
    return this.rd16(this.segRead(this.eaSeg, this.eaOff, 2));
  }

  private readRM32(modrm: number): number {
    if (modrm >= 0xc0) return this.regs[modrm & 7];
    this.decodeEA(modrm);
    return this.rd32(this.segRead(this.eaSeg, this.eaOff, 4));
  }

  private readRMv(modrm: number): number {
    return this.o32 ? this.readRM32(modrm) : this.readRM16(modrm);
  }

  /** Writes the r/m operand; for memory, uses the address decoded by the preceding read (or decodes now). */
  private writeRM8(modrm: number, v: number, decoded: boolean): void {
    if (modrm >= 0xc0) {
      this.setReg8(modrm & 7, v);
      return;
    }
    if (!decoded) this.decodeEA(modrm);
    this.wr8(this.segWrite(this.eaSeg, this.eaOff, 1), v);
  }

  private writeRM16(modrm: number, v: number, decoded: boolean): void {
    if (modrm >= 0xc0) {
      this.r16[(modrm & 7) << 1] = v;
      return;
    }
    if (!decoded) this.decodeEA(modrm);
    this.wr16(this.segWrite(this.eaSeg, this.eaOff, 2), v);
  }

  private writeRM32(modrm: number, v: number, decoded: boolean): void {
    if (modrm >= 0xc0) {
      this.regs[modrm & 7] = v;
      return;
    }
    if (!decoded) this.decodeEA(modrm);
    this.wr32(this.segWrite(this.eaSeg, this.eaOff, 4), v);
  }

  private writeRMv(modrm: number, v: number, decoded: boolean): void {
    if (this.o32) this.writeRM32(modrm, v, decoded);
    else this.writeRM16(modrm, v, decoded);
  }

  /** For read-modify-write memory operands: check writability first, so a faulting write changes nothing. */
  private readRMW(modrm: number, width: number): number {
    if (modrm >= 0xc0) {
      const n = modrm & 7;
      return width === 8 ? this.reg8(n) : width === 16 ? this.r16[n << 1] : this.regs[n];
    }
    this.decodeEA(modrm);
    const size = width >> 3;
    const lin = this.segWrite(this.eaSeg, this.eaOff, size);
    if ((this.segAccess[this.eaSeg] & 1) === 0) this.segFault(this.eaSeg);
    this.probeWrite(lin, size);
    return size === 1 ? this.rd8(lin) : size === 2 ? this.rd16(lin) : this.rd32(lin);
  }

  private writeBack(modrm: number, width: number, v: number): void {
    if (width === 8) this.writeRM8(modrm, v, true);
    else if (width === 16) this.writeRM16(modrm, v, true);
    else this.writeRM32(modrm, v, true);
  }

  // ---------------------------------------------------------------------------------------------------
  // Stack

  private get stackMask(): number {
    return this.ss32 ? -1 : 0xffff;
  }

  private espSet(v: number): void {
    if (this.ss32) this.regs[4] = v;
    else this.r16[8] = v;
  }

  private push16(v: number): void {
    const sp = (this.regs[4] - 2) & this.stackMask;
    this.wr16(this.segWrite(SS, sp, 2), v);
    this.espSet(sp);
  }

  private push32(v: number): void {
    const sp = (this.regs[4] - 4) & this.stackMask;
    this.wr32(this.segWrite(SS, sp, 4), v);
    this.espSet(sp);
  }

  private pushv(v: number): void {
    if (this.o32) this.push32(v);
    else this.push16(v);
  }

  private pop16(): number {
    const sp = this.regs[4] & this.stackMask;
    const v = this.rd16(this.segRead(SS, sp, 2));
    this.espSet(sp + 2);
    return v;
  }

  private pop32(): number {
    const sp = this.regs[4] & this.stackMask;
    const v = this.rd32(this.segRead(SS, sp, 4));
    this.espSet(sp + 4);
    return v;
  }

  private popv(): number {
    return this.o32 ? this.pop32() : this.pop16();
  }

  /** Reads the stack at ESP+offset without popping. */
  private peek(offset: number, size: number): number {
    const sp = (this.regs[4] + offset) & this.stackMask;
    const lin = this.segRead(SS, sp, size);
    return size === 4 ? this.rd32(lin) : this.rd16(lin);
  }

  // ---------------------------------------------------------------------------------------------------
  // Arithmetic

  /** ADD OR ADC SBB AND SUB XOR CMP (op 0..7) on width-bit operands; returns the result (unmasked). */
  private alu(op: number, a: number, b: number, width: number): number {
    let r: number;
    switch (op) {
      case 0: r = (a + b) | 0; this.setLazy(LAZY_ADD, a, b, r, width); break;
      case 1: r = a | b; this.setLazy(LAZY_LOGIC, a, b, r, width); break;
      case 2: r = (a + b + this.getCF()) | 0; this.setLazy(LAZY_ADD, a, b, r, width); break;
      case 3: r = (a - b - this.getCF()) | 0; this.setLazy(LAZY_SUB, a, b, r, width); break;
      case 4: r = a & b; this.setLazy(LAZY_LOGIC, a, b, r, width); break;
      case 5: case 7: r = (a - b) | 0; this.setLazy(LAZY_SUB, a, b, r, width); break;
      default: r = a ^ b; this.setLazy(LAZY_LOGIC, a, b, r, width); break;
    }
    return r;
  }

  private inc(a: number, width: number): number {
    const r = (a + 1) | 0;
    this.setLazyKeepCF(LAZY_ADD, a, 1, r, width);
    return r;
  }

  private dec(a: number, width: number): number {
    const r = (a - 1) | 0;
    this.setLazyKeepCF(LAZY_SUB, a, 1, r, width);
    return r;
  }

  /** Sets SF/ZF/PF from a result and CF/OF explicitly (AF cleared): shifts, rotates, multiplies. */
  private setResultFlags(r: number, width: number, cf: number, of: boolean): void {
    const af = 0;
    this.lop = LAZY_LOGIC;
    this.la = 0;
    this.lb = 0;
    this.lr = r;
    this.lw = width;
    this.flags = (this.flags & ~(CF | OF | AF)) | (cf ? CF : 0) | (of ? OF : 0) | af;
    this.lazy = ZF | SF | PF;
  }

  /** Group 2: ROL ROR RCL RCR SHL SHR SAL SAR by `count` (already masked to 5 bits). */
  private shift(op: number, v: number, count: number, width: number): number {
    const mask = width === 32 ? -1 : (1 << width) - 1;
    v &= mask;
    if (count === 0) return v;
    const sign = 1 << (width - 1);
    let r: number;
    let cf: number;
    switch (op) {
      case 0: { // ROL
        const c = count % width;
        r = width === 32 ? (v << c) | (v >>> (32 - c)) : ((v << c) | (v >>> (width - c))) & mask;
        if (c === 0) r = v;
        cf = r & 1;
        const of = ((r & sign) !== 0) !== (cf !== 0);
        this.setStatusFlags(CF | OF, (cf ? CF : 0) | (of ? OF : 0));
        return r;
      }
      case 1: { // ROR
        const c = count % width;
        r = c === 0 ? v : width === 32 ? (v >>> c) | (v << (32 - c)) : ((v >>> c) | (v << (width - c))) & mask;
        cf = (r & sign) !== 0 ? 1 : 0;
        const of = ((r & sign) !== 0) !== ((r & (sign >>> 1)) !== 0);
        this.setStatusFlags(CF | OF, (cf ? CF : 0) | (of ? OF : 0));
        return r;
      }
      case 2: { // RCL
        const c = count % (width + 1);
        let carry = this.getCF();
        r = v;
        for (let i = 0; i < c; i++) {
          const out = (r & sign) !== 0 ? 1 : 0;
          r = ((r << 1) | carry) & mask;
          carry = out;
        }
        const of = ((r & sign) !== 0) !== (carry !== 0);
        this.setStatusFlags(CF | OF, (carry ? CF : 0) | (of ? OF : 0));
        return r;
      }
      case 3: { // RCR
        const c = count % (width + 1);
        let carry = this.getCF();
        r = v;
        const of = ((r & sign) !== 0) !== (carry !== 0);
        for (let i = 0; i < c; i++) {
          const out = r & 1;
          r = ((r >>> 1) | (carry ? sign : 0)) & mask;
          carry = out;
        }
        this.setStatusFlags(CF | OF, (carry ? CF : 0) | (of ? OF : 0));
        return r;
      }
      case 4: case 6: { // SHL/SAL
        if (count > width) {
          r = 0;
          cf = 0;
        } else {
          cf = count === width ? v & 1 : (v >>> (width - count)) & 1;
          r = count === 32 ? 0 : (v << count) & mask;
        }
        this.setResultFlags(r, width, cf, ((r & sign) !== 0) !== (cf !== 0));
        return r;
      }
      case 5: { // SHR
        cf = count > width ? 0 : (v >>> (count - 1)) & 1;
        r = count >= width ? 0 : v >>> count;
        this.setResultFlags(r, width, cf, (v & sign) !== 0);
        return r;
      }
      default: { // SAR
        const sv = (v << (32 - width)) >> (32 - width);
        const c = count >= width ? width - 1 : count;
        cf = count >= width ? (sv < 0 ? 1 : 0) : (sv >> (c - 1)) & 1;
        r = (sv >> c) & mask;
        this.setResultFlags(r, width, cf, false);
        return r;
      }
    }
  }

  /** SHLD/SHRD: shifts `dst` by count, filling from `src`. */
  private shiftDouble(left: boolean, dst: number, src: number, count: number, width: number): number {
    count &= 31;
    if (count === 0) return dst;
    const mask = width === 32 ? -1 : 0xffff;
    dst &= mask;
    src &= mask;
    let r: number;
    let cf: number;
    if (width === 16) {
      // 16-bit forms with counts above 16 are undefined; use the 48-bit concatenation Intel documents.
      const big = left ? BigInt(dst) * 0x100000000n + BigInt(src) * 0x10000n + BigInt(dst) : 0n;
      if (left) {
        const shifted = big << BigInt(count);
        r = Number((shifted >> 32n) & 0xffffn);
        cf = Number((shifted >> 48n) & 1n);
      } else {
        const cat = BigInt(dst) | (BigInt(src) << 16n) | (BigInt(dst) << 32n);
        r = Number((cat >> BigInt(count)) & 0xffffn);
        cf = Number((cat >> BigInt(count - 1)) & 1n);
      }
    } else if (left) {
      r = (dst << count) | (src >>> (32 - count));
      cf = (dst >>> (32 - count)) & 1;
    } else {
      r = (dst >>> count) | (src << (32 - count));
      cf = (dst >>> (count - 1)) & 1;
    }
    const sign = 1 << (width - 1);
    this.setResultFlags(r & mask, width, cf, ((r ^ dst) & sign) !== 0);
    return r & mask;
  }

  /** MUL/IMUL/DIV/IDIV of group 3 (op 4..7) on AL/AX/EAX. */
  private mulDiv(op: number, src: number, width: number): void {
    const regs = this.regs;
    if (width === 8) {
      const al = regs[0] & 0xff;
      if (op === 4) {
        const r = al * (src & 0xff);
        this.setReg16(0, r);
        const hi = r >> 8 !== 0;
        this.setResultFlags(r & 0xff, 8, hi ? 1 : 0, hi);
      } else if (op === 5) {
        const r = ((al << 24) >> 24) * ((src << 24) >> 24);
        this.setReg16(0, r & 0xffff);
        const ov = r !== (r << 24) >> 24;
        this.setResultFlags(r & 0xff, 8, ov ? 1 : 0, ov);
      } else {
        const ax = regs[0] & 0xffff;
        if (op === 6) {
          const d = src & 0xff;
          if (d === 0) this.fault(DE);
          const q = Math.floor(ax / d);
          if (q > 0xff) this.fault(DE);
          this.setReg16(0, ((ax % d) << 8) | q);
        } else {
          const d = (src << 24) >> 24;
          if (d === 0) this.fault(DE);
          const n = (ax << 16) >> 16;
          const q = Math.trunc(n / d);
          if (q > 127 || q < -128) this.fault(DE);
          this.setReg16(0, (((n % d) & 0xff) << 8) | (q & 0xff));
        }
      }
      return;
    }
    if (width === 16) {
      const ax = regs[0] & 0xffff;
      if (op === 4) {
        const r = ax * (src & 0xffff);
        this.setReg16(0, r & 0xffff);
        this.setReg16(2, r >>> 16);
        const hi = r >>> 16 !== 0;
        this.setResultFlags(r & 0xffff, 16, hi ? 1 : 0, hi);
      } else if (op === 5) {
        const r = ((ax << 16) >> 16) * ((src << 16) >> 16);
        this.setReg16(0, r & 0xffff);
        this.setReg16(2, (r >> 16) & 0xffff);
        const ov = r !== (r << 16) >> 16;
        this.setResultFlags(r & 0xffff, 16, ov ? 1 : 0, ov);
      } else {
        const dx = regs[2] & 0xffff;
        if (op === 6) {
          const d = src & 0xffff;
          if (d === 0) this.fault(DE);
          const n = dx * 0x10000 + ax;
          const q = Math.floor(n / d);
          if (q > 0xffff) this.fault(DE);
          this.setReg16(0, q);
          this.setReg16(2, n % d);
        } else {
          const d = (src << 16) >> 16;
          if (d === 0) this.fault(DE);
          const n = ((dx << 16) | ax) | 0;
          const q = Math.trunc(n / d);
          if (q > 32767 || q < -32768) this.fault(DE);
          this.setReg16(0, q & 0xffff);
          this.setReg16(2, (n % d) & 0xffff);
        }
      }
      return;
    }
    const eax = regs[0];
    if (op === 4) {
      const lo = Math.imul(eax, src);
      const hi = mulHigh(eax, src) | 0;
      regs[0] = lo;
      regs[2] = hi;
      this.setResultFlags(lo, 32, hi !== 0 ? 1 : 0, hi !== 0);
    } else if (op === 5) {
      // The signed high half from the unsigned one: subtract the other operand for each negative operand.
      const lo = Math.imul(eax, src);
      const hi = (mulHigh(eax, src) - (eax < 0 ? src >>> 0 : 0) - ((src | 0) < 0 ? eax >>> 0 : 0)) | 0;
      regs[0] = lo;
      regs[2] = hi;
      const ov = hi !== lo >> 31;
      this.setResultFlags(lo, 32, ov ? 1 : 0, ov);
    } else if (op === 6) {
      const d = src >>> 0;
      if (d === 0) this.fault(DE);
      const edx = regs[2] >>> 0;
      if (edx === 0) {
        const n = eax >>> 0;
        regs[0] = Math.floor(n / d) | 0;
        regs[2] = n % d | 0;
        return;
      }
      if (edx >= d) this.fault(DE);
      // Long division by 16-bit digits: every intermediate stays below 2^48, exact in a double.
      const t1 = edx * 0x10000 + (eax >>> 16);
      const q1 = Math.floor(t1 / d);
      const t2 = (t1 - q1 * d) * 0x10000 + (eax & 0xffff);
      const q2 = Math.floor(t2 / d);
      regs[0] = (q1 * 0x10000 + q2) | 0;
      regs[2] = (t2 - q2 * d) | 0;
    } else {
      const d = src | 0;
      if (d === 0) this.fault(DE);
      const n = (BigInt(regs[2]) << 32n) | BigInt(eax >>> 0);
      const bd = BigInt(d);
      const q = n / bd;
      if (q > 0x7fffffffn || q < -0x80000000n) this.fault(DE);
      regs[0] = Number(q) | 0;
      regs[2] = Number(n % bd) | 0;
    }
  }

  /** Two- and three-operand IMUL (result truncated to width; CF=OF=overflow). */
  private imul(a: number, b: number, width: number): number {
    if (width === 16) {
      const r = ((a << 16) >> 16) * ((b << 16) >> 16);
      const ov = r !== (r << 16) >> 16;
      this.setResultFlags(r & 0xffff, 16, ov ? 1 : 0, ov);
      return r & 0xffff;
    }
    const r = Math.imul(a, b);
    // The double product is exact whenever the true product fits in 32 bits, and outside that range otherwise.
    const ov = (a | 0) * (b | 0) !== r;
    this.setResultFlags(r, 32, ov ? 1 : 0, ov);
    return r;
  }

  // ---------------------------------------------------------------------------------------------------
  // Execution

  /** Executes one instruction (prefixes included). Faults propagate as FAULT. */
  private step(): void {
    this.instrStart = this.eip;
    let op = this.fetch8();
    if (IS_PREFIX[op] === 0) {
      this.o32 = this.a32 = this.cs32;
      this.segOverride = -1;
      this.rep = 0;
      this.execute(op);
      return;
    }
    this.o32 = this.a32 = this.cs32;
    this.segOverride = -1;
    this.rep = 0;
    let lock = false;
    // Prefixes (at most 15 bytes per instruction in all).
    for (let n = 0; IS_PREFIX[op] !== 0; n++) {
      if (n > 14) this.gp(0);
      switch (op) {
        case 0x26: this.segOverride = ES; break;
        case 0x2e: this.segOverride = CS; break;
        case 0x36: this.segOverride = SS; break;
        case 0x3e: this.segOverride = DS; break;
        case 0x64: this.segOverride = FS; break;
        case 0x65: this.segOverride = GS; break;
        case 0x66: this.o32 = !this.cs32; break;
        case 0x67: this.a32 = !this.cs32; break;
        case 0xf2: this.rep = 2; break;
        case 0xf3: this.rep = 1; break;
        default: lock = true; break;
      }
      op = this.fetch8();
    }
    if (lock) this.checkLockable(op);
    this.execute(op);
  }

  /** LOCK on an instruction that cannot be locked is #UD: looks at the opcode's next bytes without consuming them. */
  private checkLockable(op: number): void {
    const eip = this.eip;
    const op2 = op === 0x0f ? this.fetch8() : 0;
    const modrm = this.fetch8();
    this.eip = eip;
    if (!lockAllowed(op, op2, modrm)) this.ud();
  }

  private execute(op: number): void {
    const regs = this.regs;
    if (op < 0x40 && (op & 7) < 6) {
      // The eight ALU operations in their six forms.
      const alu = op >> 3;
      switch (op & 7) {
        case 0: {
          const modrm = this.fetch8();
          const b = this.reg8((modrm >> 3) & 7);
          const a = alu === 7 ? this.readRM8(modrm) : this.readRMW(modrm, 8);
          const r = this.alu(alu, a, b, 8);
          if (alu !== 7) this.writeBack(modrm, 8, r);
          return;
        }
        case 1: {
          const modrm = this.fetch8();
          const w = this.o32 ? 32 : 16;
          const b = this.o32 ? regs[(modrm >> 3) & 7] : this.reg16((modrm >> 3) & 7);
          const a = alu === 7 ? this.readRMv(modrm) : this.readRMW(modrm, w);
          const r = this.alu(alu, a, b, w);
          if (alu !== 7) this.writeBack(modrm, w, r);
          return;
        }
        case 2: {
          const modrm = this.fetch8();
          const reg = (modrm >> 3) & 7;
          const r = this.alu(alu, this.reg8(reg), this.readRM8(modrm), 8);
          if (alu !== 7) this.setReg8(reg, r);
          return;
        }
        case 3: {
          const modrm = this.fetch8();
          const reg = (modrm >> 3) & 7;
          if (this.o32) {
            const r = this.alu(alu, regs[reg], this.readRM32(modrm), 32);
            if (alu !== 7) regs[reg] = r;
          } else {
            const r = this.alu(alu, this.reg16(reg), this.readRM16(modrm), 16);
            if (alu !== 7) this.setReg16(reg, r);
          }
          return;
        }
        case 4: {
          const r = this.alu(alu, regs[0] & 0xff, this.fetch8(), 8);
          if (alu !== 7) this.setReg8(0, r);
          return;
        }
        default: {
          if (this.o32) {
            const r = this.alu(alu, regs[0], this.fetch32(), 32);
            if (alu !== 7) regs[0] = r;
          } else {
            const r = this.alu(alu, regs[0] & 0xffff, this.fetch16(), 16);
            if (alu !== 7) this.setReg16(0, r);
          }
          return;
        }
      }
    }
    switch (op) {
      case 0x06: this.pushv(this.segSel[ES]); return;
      case 0x07: this.popSegment(ES); return;
      case 0x0e: this.pushv(this.segSel[CS]); return;
      case 0x0f: this.execute0f(this.fetch8()); return;
      case 0x16: this.pushv(this.segSel[SS]); return;
      case 0x17: this.popSegment(SS); this.interruptShadow = this.ssLoaded = this.attention = true; return;
      case 0x1e: this.pushv(this.segSel[DS]); return;
      case 0x1f: this.popSegment(DS); return;
      case 0x27: this.daa(); return;
      case 0x2f: this.das(); return;
      case 0x37: this.aaa(); return;
      case 0x3f: this.aas(); return;
    }
    if (op >= 0x40 && op < 0x50) {
      const reg = op & 7;
      if (this.o32) regs[reg] = op < 0x48 ? this.inc(regs[reg], 32) : this.dec(regs[reg], 32);
      else this.setReg16(reg, op < 0x48 ? this.inc(this.reg16(reg), 16) : this.dec(this.reg16(reg), 16));
      return;
    }
    if (op >= 0x50 && op < 0x58) {
      this.pushv(this.o32 ? regs[op & 7] : this.reg16(op & 7));
      return;
    }
    if (op >= 0x58 && op < 0x60) {
      const v = this.popv();
      if (this.o32) regs[op & 7] = v;
      else this.setReg16(op & 7, v);
      return;
    }
    if (op >= 0x70 && op < 0x80) {
      const d = (this.fetch8() << 24) >> 24;
      if (this.condition(op & 15)) this.jumpRelative(d);
      return;
    }
    if (op >= 0x91 && op < 0x98) {
      const reg = op & 7;
      if (this.o32) {
        const t = regs[0];
        regs[0] = regs[reg];
        regs[reg] = t;
      } else {
        const t = this.reg16(0);
        this.setReg16(0, this.reg16(reg));
        this.setReg16(reg, t);
      }
      return;
    }
    if (op >= 0xb0 && op < 0xb8) {
      this.setReg8(op & 7, this.fetch8());
      return;
    }
    if (op >= 0xb8 && op < 0xc0) {
      if (this.o32) regs[op & 7] = this.fetch32();
      else this.setReg16(op & 7, this.fetch16());
      return;
    }
    if (op >= 0xd8 && op <= 0xdf) {
      this.fpuInstruction(op);
      return;
    }
    switch (op) {
      case 0x60: this.pusha(); return;
      case 0x61: this.popa(); return;
      case 0x62: this.bound(); return;
      case 0x63: this.arpl(); return;
      case 0x68: this.pushv(this.fetchImm()); return;
      case 0x69: case 0x6b: {
        const modrm = this.fetch8();
        const w = this.o32 ? 32 : 16;
        const a = this.readRMv(modrm);
        const b = op === 0x69 ? this.fetchImm() : (this.fetch8() << 24) >> 24;
        const r = this.imul(a, b, w);
        if (this.o32) regs[(modrm >> 3) & 7] = r;
        else this.setReg16((modrm >> 3) & 7, r);
        return;
      }
      case 0x6a: this.pushv((this.fetch8() << 24) >> 24); return;
      case 0x6c: case 0x6d: case 0x6e: case 0x6f: this.stringIo(op); return;
      case 0x80: case 0x82: {
        const modrm = this.fetch8();
        const alu = (modrm >> 3) & 7;
        const a = alu === 7 ? this.readRM8(modrm) : this.readRMW(modrm, 8);
        const r = this.alu(alu, a, this.fetch8(), 8);
        if (alu !== 7) this.writeBack(modrm, 8, r);
        return;
      }
      case 0x81: case 0x83: {
        const modrm = this.fetch8();
        const alu = (modrm >> 3) & 7;
        const w = this.o32 ? 32 : 16;
        const a = alu === 7 ? this.readRMv(modrm) : this.readRMW(modrm, w);
        const b = op === 0x81 ? this.fetchImm() : (this.fetch8() << 24) >> 24;
        const r = this.alu(alu, a, w === 16 ? b & 0xffff : b, w);
        if (alu !== 7) this.writeBack(modrm, w, r);
        return;
      }
      case 0x84: {
        const modrm = this.fetch8();
        this.alu(4, this.readRM8(modrm), this.reg8((modrm >> 3) & 7), 8);
        return;
      }
      case 0x85: {
        const modrm = this.fetch8();
        this.alu(4, this.readRMv(modrm), this.o32 ? regs[(modrm >> 3) & 7] : this.reg16((modrm >> 3) & 7), this.o32 ? 32 : 16);
        return;
      }
      case 0x86: {
        const modrm = this.fetch8();
        const reg = (modrm >> 3) & 7;
        const a = this.readRMW(modrm, 8);
        this.writeBack(modrm, 8, this.reg8(reg));
        this.setReg8(reg, a);
        return;
      }
      case 0x87: {
        const modrm = this.fetch8();
        const reg = (modrm >> 3) & 7;
        const w = this.o32 ? 32 : 16;
        const a = this.readRMW(modrm, w);
        this.writeBack(modrm, w, this.o32 ? regs[reg] : this.reg16(reg));
        if (this.o32) regs[reg] = a;
        else this.setReg16(reg, a);
        return;
      }
      case 0x88: {
        const modrm = this.fetch8();
        this.writeRM8(modrm, this.reg8((modrm >> 3) & 7), false);
        return;
      }
      case 0x89: {
        const modrm = this.fetch8();
        if (this.o32) this.writeRM32(modrm, regs[(modrm >> 3) & 7], false);
        else this.writeRM16(modrm, this.reg16((modrm >> 3) & 7), false);
        return;
      }
      case 0x8a: {
        const modrm = this.fetch8();
        this.setReg8((modrm >> 3) & 7, this.readRM8(modrm));
        return;
      }
      case 0x8b: {
        const modrm = this.fetch8();
        if (this.o32) regs[(modrm >> 3) & 7] = this.readRM32(modrm);
        else this.setReg16((modrm >> 3) & 7, this.readRM16(modrm));
        return;
      }
      case 0x8c: {
        const modrm = this.fetch8();
        const seg = (modrm >> 3) & 7;
        if (seg > 5) this.ud();
        // A register destination with a 32-bit operand size gets the zero-extended selector.
        if (modrm >= 0xc0 && this.o32) regs[modrm & 7] = this.segSel[seg];
        else this.writeRM16(modrm, this.segSel[seg], false);
        return;
      }
      case 0x8d: {
        const modrm = this.fetch8();
        if (modrm >= 0xc0) this.ud();
        this.decodeEA(modrm);
        if (this.o32) regs[(modrm >> 3) & 7] = this.eaOff;
        else this.setReg16((modrm >> 3) & 7, this.eaOff);
        return;
      }
      case 0x8e: {
        const modrm = this.fetch8();
        const seg = (modrm >> 3) & 7;
        if (seg === CS || seg > 5) this.ud();
        this.loadSegment(seg, this.readRM16(modrm));
        if (seg === SS) this.interruptShadow = this.ssLoaded = this.attention = true;
        return;
      }
      case 0x8f: {
        const modrm = this.fetch8();
        // POP to memory: the address is computed with ESP after the pop; restore ESP if the store faults.
        const oldEsp = regs[4];
        const v = this.popv();
        try {
          this.writeRMv(modrm, v, false);
        } catch (e) {
          regs[4] = oldEsp;
          throw e;
        }
        return;
      }
      case 0x90: return;
      case 0x98:
        if (this.o32) regs[0] = (regs[0] << 16) >> 16;
        else this.setReg16(0, ((regs[0] << 24) >> 24) & 0xffff);
        return;
      case 0x99:
        if (this.o32) regs[2] = regs[0] >> 31;
        else this.setReg16(2, (regs[0] << 16) >> 31);
        return;
      case 0x9a: {
        const off = this.fetchImm();
        const sel = this.fetch16();
        this.farCall(sel, off);
        return;
      }
      case 0x9b: this.fpuWait(); return;
      case 0x9c: this.pushf(); return;
      case 0x9d: this.popf(); return;
      case 0x9e: this.setStatusFlags(SF | ZF | AF | PF | CF, (regs[0] >> 8) & 0xd5); return;
      case 0x9f: this.setReg8(4, this.getEflags() & 0xd7); return;
      case 0xa0: case 0xa1: case 0xa2: case 0xa3: {
        const off = this.a32 ? this.fetch32() : this.fetch16();
        const seg = this.segOverride >= 0 ? this.segOverride : DS;
        if (op === 0xa0) this.setReg8(0, this.rd8(this.segRead(seg, off, 1)));
        else if (op === 0xa1) {
          if (this.o32) regs[0] = this.rd32(this.segRead(seg, off, 4));
          else this.setReg16(0, this.rd16(this.segRead(seg, off, 2)));
        } else if (op === 0xa2) this.wr8(this.segWrite(seg, off, 1), regs[0]);
        else if (this.o32) this.wr32(this.segWrite(seg, off, 4), regs[0]);
        else this.wr16(this.segWrite(seg, off, 2), regs[0]);
        return;
      }
      case 0xa4: case 0xa5: case 0xa6: case 0xa7: case 0xaa: case 0xab: case 0xac: case 0xad: case 0xae: case 0xaf:
        this.stringOp(op);
        return;
      case 0xa8: this.alu(4, regs[0] & 0xff, this.fetch8(), 8); return;
      case 0xa9: this.alu(4, this.o32 ? regs[0] : regs[0] & 0xffff, this.fetchImm(), this.o32 ? 32 : 16); return;
      case 0xc0: case 0xc1: case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        const modrm = this.fetch8();
        const w = op & 1 ? (this.o32 ? 32 : 16) : 8;
        const v = this.readRMW(modrm, w);
        const count = (op <= 0xc1 ? this.fetch8() : op <= 0xd1 ? 1 : regs[1]) & 31;
        if (count === 0) return;
        this.writeBack(modrm, w, this.shift((modrm >> 3) & 7, v, count, w));
        return;
      }
      case 0xc2: {
        const n = this.fetch16();
        const ip = this.popv();
        this.setEipChecked(ip);
        this.espSet((regs[4] + n) & this.stackMask);
        return;
      }
      case 0xc3: this.setEipChecked(this.popv()); return;
      case 0xc4: this.loadFarPointer(ES); return;
      case 0xc5: this.loadFarPointer(DS); return;
      case 0xc6: {
        const modrm = this.fetch8();
        if (modrm < 0xc0) this.decodeEA(modrm);
        this.writeRM8(modrm, this.fetch8(), true);
        return;
      }
      case 0xc7: {
        const modrm = this.fetch8();
        if (modrm < 0xc0) this.decodeEA(modrm);
        this.writeRMv(modrm, this.fetchImm(), true);
        return;
      }
      case 0xc8: this.enter(); return;
      case 0xc9: {
        const bp = this.ss32 ? regs[5] : regs[5] & 0xffff;
        const v = this.o32 ? this.rd32(this.segRead(SS, bp, 4)) : this.rd16(this.segRead(SS, bp, 2));
        this.espSet(bp + (this.o32 ? 4 : 2));
        if (this.o32) regs[5] = v;
        else this.setReg16(5, v);
        return;
      }
      case 0xca: this.farReturn(this.fetch16()); return;
      case 0xcb: this.farReturn(0); return;
      case 0xcc: this.softwareInterrupt(BP, true); return;
      case 0xcd: this.softwareInterrupt(this.fetch8(), false); return;
      case 0xce: if (this.getOF()) this.softwareInterrupt(OF_VECTOR, true); return;
      case 0xcf: this.iret(); return;
      case 0xd4: {
        const base = this.fetch8();
        if (base === 0) this.fault(DE);
        const al = regs[0] & 0xff;
        const r = al % base;
        this.setReg16(0, (Math.floor(al / base) << 8) | r);
        this.setResultFlags(r, 8, 0, false);
        return;
      }
      case 0xd5: {
        const base = this.fetch8();
        const r = ((regs[0] & 0xff) + ((regs[0] >> 8) & 0xff) * base) & 0xff;
        this.setReg16(0, r);
        this.setResultFlags(r, 8, 0, false);
        return;
      }
      case 0xd6: this.setReg8(0, this.getCF() ? 0xff : 0); return;
      case 0xd7: {
        const seg = this.segOverride >= 0 ? this.segOverride : DS;
        const off = this.a32 ? (regs[3] + (regs[0] & 0xff)) | 0 : (regs[3] + (regs[0] & 0xff)) & 0xffff;
        this.setReg8(0, this.rd8(this.segRead(seg, off, 1)));
        return;
      }
      case 0xe0: case 0xe1: case 0xe2: {
        const d = (this.fetch8() << 24) >> 24;
        let count: number;
        if (this.a32) count = regs[1] = (regs[1] - 1) | 0;
        else {
          count = (regs[1] - 1) & 0xffff;
          this.setReg16(1, count);
        }
        const take = count !== 0 && (op === 0xe2 || (op === 0xe1 ? this.getZF() : !this.getZF()));
        if (take) this.jumpRelative(d);
        return;
      }
      case 0xe3: {
        const d = (this.fetch8() << 24) >> 24;
        if ((this.a32 ? regs[1] : regs[1] & 0xffff) === 0) this.jumpRelative(d);
        return;
      }
      case 0xe4: { const port = this.fetch8(); this.setReg8(0, this.portIn(port, 1)); return; }
      case 0xe5: {
        const port = this.fetch8();
        if (this.o32) regs[0] = this.portIn(port, 4);
        else this.setReg16(0, this.portIn(port, 2));
        return;
      }
      case 0xe6: { const port = this.fetch8(); this.portOut(port, 1, regs[0] & 0xff); return; }
      case 0xe7: { const port = this.fetch8(); this.portOut(port, this.o32 ? 4 : 2, this.o32 ? regs[0] : regs[0] & 0xffff); return; }
      case 0xe8: {
        const d = this.fetchImm();
        this.pushv(this.eip);
        this.jumpRelative(d);
        return;
      }
      case 0xe9: this.jumpRelative(this.o32 ? this.fetch32() : (this.fetch16() << 16) >> 16); return;
      case 0xea: {
        const off = this.fetchImm();
        const sel = this.fetch16();
        this.farJump(sel, off);
        return;
      }
      case 0xeb: this.jumpRelative((this.fetch8() << 24) >> 24); return;
      case 0xec: this.setReg8(0, this.portIn(regs[2] & 0xffff, 1)); return;
      case 0xed:
        if (this.o32) regs[0] = this.portIn(regs[2] & 0xffff, 4);
        else this.setReg16(0, this.portIn(regs[2] & 0xffff, 2));
        return;
      case 0xee: this.portOut(regs[2] & 0xffff, 1, regs[0] & 0xff); return;
      case 0xef: this.portOut(regs[2] & 0xffff, this.o32 ? 4 : 2, this.o32 ? regs[0] : regs[0] & 0xffff); return;
      case 0xf1: this.softwareInterrupt(1, true); return;
      case 0xf4:
        if (this.cpl !== 0) this.gp(0);
        this.halted = this.attention = true;
        return;
      case 0xf5: this.setStatusFlags(CF, this.getCF() ? 0 : CF); return;
      case 0xf6: this.group3(8); return;
      case 0xf7: this.group3(this.o32 ? 32 : 16); return;
      case 0xf8: this.setStatusFlags(CF, 0); return;
      case 0xf9: this.setStatusFlags(CF, CF); return;
      case 0xfa:
        if (!this.iopOk()) this.gp(0);
        this.flags &= ~IF;
        return;
      case 0xfb:
        if (!this.iopOk()) this.gp(0);
        if ((this.flags & IF) === 0) this.interruptShadow = this.attention = true;
        this.flags |= IF;
        return;
      case 0xfc: this.flags &= ~DF; return;
      case 0xfd: this.flags |= DF; return;
      case 0xfe: {
        const modrm = this.fetch8();
        const sub = (modrm >> 3) & 7;
        if (sub > 1) this.ud();
        const v = this.readRMW(modrm, 8);
        this.writeBack(modrm, 8, sub === 0 ? this.inc(v, 8) : this.dec(v, 8));
        return;
      }
      case 0xff: this.group5(); return;
    }
    this.ud();
  }

  private jumpRelative(d: number): void {
    this.setEipChecked(this.o32 ? (this.eip + d) | 0 : (this.eip + d) & 0xffff);
  }

  /** Near control transfer: the target must lie within CS's limit. */
  private setEipChecked(target: number): void {
    const t = this.o32 ? target : target & 0xffff;
    if (t >>> 0 > this.segLimit[CS]) this.gp(0);
    this.eip = t;
  }

  // Helpers for compiled blocks, which decide operand sizes when they are compiled.

  /** A near jump to an already size-masked target. */
  nearJump(target: number): void {
    if (target >>> 0 > this.segLimit[CS]) this.gp(0);
    this.eip = target;
  }

  checkNearTarget(target: number): void {
    if (target >>> 0 > this.segLimit[CS]) this.gp(0);
  }

  /** RET imm16: drops `bytes` of arguments. */
  releaseStack(bytes: number): void {
    this.espSet((this.regs[4] + bytes) & this.stackMask);
  }

  /** The linear address of a read-modify-write operand, checked readable and writable before either access. */
  rmwAddress(seg: number, off: number, size: number): number {
    const lin = this.segWrite(seg, off, size);
    if ((this.segAccess[seg] & 1) === 0) this.segFault(seg);
    this.probeWrite(lin, size);
    return lin;
  }

  private group3(w: number): void {
    const modrm = this.fetch8();
    const sub = (modrm >> 3) & 7;
    switch (sub) {
      case 0: case 1: {
        const v = w === 8 ? this.readRM8(modrm) : this.readRMv(modrm);
        const imm = w === 8 ? this.fetch8() : this.fetchImm();
        this.alu(4, v, imm, w);
        return;
      }
      case 2: {
        const v = this.readRMW(modrm, w);
        this.writeBack(modrm, w, ~v);
        return;
      }
      case 3: {
        const v = this.readRMW(modrm, w);
        const r = this.alu(5, 0, v, w);
        this.writeBack(modrm, w, r);
        return;
      }
      default: {
        const v = w === 8 ? this.readRM8(modrm) : this.readRMv(modrm);
        this.mulDiv(sub, v, w);
        return;
      }
    }
  }

  private group5(): void {
    const modrm = this.fetch8();
    const sub = (modrm >> 3) & 7;
    const w = this.o32 ? 32 : 16;
    switch (sub) {
      case 0: case 1: {
        const v = this.readRMW(modrm, w);
        this.writeBack(modrm, w, sub === 0 ? this.inc(v, w) : this.dec(v, w));
        return;
      }
      case 2: {
        const target = this.readRMv(modrm);
        this.pushv(this.eip);
        this.setEipChecked(target);
        return;
      }
      case 4: this.setEipChecked(this.readRMv(modrm)); return;
      case 3: case 5: {
        if (modrm >= 0xc0) this.ud();
        this.decodeEA(modrm);
        const size = this.o32 ? 4 : 2;
        const lin = this.segRead(this.eaSeg, this.eaOff, size + 2);
        const off = this.o32 ? this.rd32(lin) : this.rd16(lin);
        const sel = this.rd16((lin + size) | 0);
        if (sub === 3) this.farCall(sel, off);
        else this.farJump(sel, off);
        return;
      }
      case 6: this.pushv(this.readRMv(modrm)); return;
      default: this.ud();
    }
  }

  private loadFarPointer(seg: number): void {
    const modrm = this.fetch8();
    if (modrm >= 0xc0) this.ud();
    this.decodeEA(modrm);
    const size = this.o32 ? 4 : 2;
    const lin = this.segRead(this.eaSeg, this.eaOff, size + 2);
    const off = this.o32 ? this.rd32(lin) : this.rd16(lin);
    const sel = this.rd16((lin + size) | 0);
    this.loadSegment(seg, sel);
    if (this.o32) this.regs[(modrm >> 3) & 7] = off;
    else this.setReg16((modrm >> 3) & 7, off);
  }

  private popSegment(seg: number): void {
    const sel = this.o32 ? this.peek(0, 4) & 0xffff : this.peek(0, 2);
    this.loadSegment(seg, sel);
    this.espSet(this.regs[4] + (this.o32 ? 4 : 2));
  }

  private pusha(): void {
    const r = this.regs;
    const size = this.o32 ? 4 : 2;
    const sp = r[4];
    const start = (sp - 8 * size) & this.stackMask;
    this.probeWrite(this.segWrite(SS, start, 8 * size), 8 * size);
    for (let i = 0; i < 8; i++) this.pushv(i === 4 ? sp : r[i]);
  }

  private popa(): void {
    const size = this.o32 ? 4 : 2;
    this.segRead(SS, this.regs[4] & this.stackMask, 8 * size);
    const values: number[] = [];
    for (let i = 0; i < 8; i++) values.push(this.peek(i * size, size));
    for (let i = 0; i < 8; i++) {
      if (i === 3) continue; // the saved ESP is skipped
      const reg = 7 - i;
      if (this.o32) this.regs[reg] = values[i];
      else this.setReg16(reg, values[i]);
    }
    this.espSet(this.regs[4] + 8 * size);
  }

  private enter(): void {
    const size = this.fetch16();
    const level = this.fetch8() & 31;
    const r = this.regs;
    const opSize = this.o32 ? 4 : 2;
    // Check the whole frame first so that a fault leaves everything untouched.
    const frameTop = (r[4] - opSize * (level + 1)) & this.stackMask;
    this.probeWrite(this.segWrite(SS, frameTop, opSize * (level + 1)), opSize * (level + 1));
    this.pushv(r[5]);
    const frame = r[4] & this.stackMask;
    if (level > 0) {
      let bp = r[5];
      for (let i = 1; i < level; i++) {
        bp = (bp - opSize) & this.stackMask;
        this.pushv(this.o32 ? this.rd32(this.segRead(SS, bp, 4)) : this.rd16(this.segRead(SS, bp, 2)));
      }
      this.pushv(frame);
    }
    if (this.o32) r[5] = frame;
    else this.setReg16(5, frame);
    const newSp = (r[4] - size) & this.stackMask;
    this.segWrite(SS, newSp, 1);
    this.espSet(newSp);
  }

  private bound(): void {
    const modrm = this.fetch8();
    if (modrm >= 0xc0) this.ud();
    this.decodeEA(modrm);
    const reg = (modrm >> 3) & 7;
    if (this.o32) {
      const lin = this.segRead(this.eaSeg, this.eaOff, 8);
      const lo = this.rd32(lin), hi = this.rd32((lin + 4) | 0), v = this.regs[reg];
      if (v < lo || v > hi) this.fault(BR);
    } else {
      const lin = this.segRead(this.eaSeg, this.eaOff, 4);
      const lo = (this.rd16(lin) << 16) >> 16, hi = (this.rd16((lin + 2) | 0) << 16) >> 16, v = (this.regs[reg] << 16) >> 16;
      if (v < lo || v > hi) this.fault(BR);
    }
  }

  private arpl(): void {
    if (!this.protectedMode || this.flags & VM) this.ud();
    const modrm = this.fetch8();
    const dst = this.readRMW(modrm, 16);
    const src = this.reg16((modrm >> 3) & 7);
    if ((dst & 3) < (src & 3)) {
      this.writeBack(modrm, 16, (dst & ~3) | (src & 3));
      this.setStatusFlags(ZF, ZF);
    } else {
      this.setStatusFlags(ZF, 0);
    }
  }

  /** DAA and DAS (SDM pseudo-code): adjust AL after BCD addition or subtraction. */
  private daa(): void {
    this.decimalAdjust(1);
  }

  private das(): void {
    this.decimalAdjust(-1);
  }

  private decimalAdjust(sign: number): void {
    const oldAl = this.regs[0] & 0xff;
    const oldCf = this.getCF();
    const af = this.lazy & AF ? this.lazyAF() : (this.flags & AF) !== 0;
    let r = oldAl;
    let newAf = false;
    let newCf = false;
    if ((oldAl & 0xf) > 9 || af) {
      r += 6 * sign;
      newCf = oldCf !== 0 || r > 0xff || r < 0;
      newAf = true;
    }
    if (oldAl > 0x99 || oldCf) {
      r += 0x60 * sign;
      newCf = true;
    }
    r &= 0xff;
    this.setReg8(0, r);
    this.setStatusFlags(CF | AF | ZF | SF | PF | OF, (newCf ? CF : 0) | (newAf ? AF : 0) | (r === 0 ? ZF : 0) | (r & 0x80 ? SF : 0) | PARITY[r]);
  }

  private aaa(): void {
    const af = this.lazy & AF ? this.lazyAF() : (this.flags & AF) !== 0;
    const al = this.regs[0] & 0xff;
    if ((al & 0xf) > 9 || af) {
      this.setReg16(0, ((this.regs[0] & 0xffff) + 0x106) & 0xff0f);
      this.setStatusFlags(AF | CF, AF | CF);
    } else {
      this.setReg8(0, al & 0xf);
      this.setStatusFlags(AF | CF, 0);
    }
  }

  private aas(): void {
    const af = this.lazy & AF ? this.lazyAF() : (this.flags & AF) !== 0;
    const al = this.regs[0] & 0xff;
    if ((al & 0xf) > 9 || af) {
      const ax = (this.regs[0] & 0xffff) - 6;
      this.setReg16(0, ((ax - 0x100) & 0xff00) | (ax & 0x0f));
      this.setStatusFlags(AF | CF, AF | CF);
    } else {
      this.setReg8(0, al & 0xf);
      this.setStatusFlags(AF | CF, 0);
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Flags instructions

  /** IOPL-sensitive instructions (CLI, STI, and in v8086 mode PUSHF/POPF/INT/IRET) are allowed. */
  private iopOk(): boolean {
    if (!this.protectedMode) return true;
    return ((this.flags & IOPL) >> 12) >= (this.flags & VM ? 3 : this.cpl);
  }

  private pushf(): void {
    if (this.flags & VM && !this.iopOk()) this.gp(0);
    const f = this.getEflags() & ~(VM | RF);
    this.pushv(f);
  }

  private popf(): void {
    if (this.flags & VM && !this.iopOk()) this.gp(0);
    const v = this.popv();
    let changeable = STATUS_FLAGS | TF | DF | NT;
    if (this.o32) changeable |= AC | ID;
    if (!this.protectedMode || this.cpl === 0) changeable |= IOPL | IF;
    else if (this.iopOk()) changeable |= IF;
    const cur = this.getEflags();
    const mask = this.o32 ? changeable : changeable & 0xffff;
    this.setEflags((cur & ~mask) | (v & mask));
  }

  // ---------------------------------------------------------------------------------------------------
  // Port I/O with the protected-mode permission checks (IOPL, then the TSS I/O bitmap).

  private checkIoPermission(port: number, size: number): void {
    if (!this.protectedMode) return;
    if (!(this.flags & VM) && this.cpl <= ((this.flags & IOPL) >> 12)) return;
    // The TSS must be a 32-bit TSS whose bitmap covers every byte of the access.
    const trType = this.segAttr[TR] & 0xf;
    if (trType !== 0x9 && trType !== 0xb) this.gp(0);
    const limit = this.segLimit[TR];
    if (limit < 0x67) this.gp(0);
    const base = this.segBase[TR];
    const bitmap = this.sysRead16((base + 0x66) | 0);
    const byteOffset = bitmap + (port >> 3);
    if (byteOffset + 1 > limit) this.gp(0);
    const bits = this.sysRead16((base + byteOffset) | 0);
    if ((bits >> (port & 7)) & ((1 << size) - 1)) this.gp(0);
  }

  private portIn(port: number, size: 1 | 2 | 4): number {
    this.checkIoPermission(port, size);
    if (this.ioBreakpoints !== 0) this.matchIoBreakpoints(port, size);
    return this.io.read(port, size) | 0;
  }

  private portOut(port: number, size: 1 | 2 | 4, value: number): void {
    this.checkIoPermission(port, size);
    if (this.ioBreakpoints !== 0) this.matchIoBreakpoints(port, size);
    this.io.write(port, size, size === 4 ? value >>> 0 : value);
  }

  // ---------------------------------------------------------------------------------------------------
  // String instructions

  private stringOp(op: number): void {
    const r = this.regs;
    const size = op & 1 ? (this.o32 ? 4 : 2) : 1;
    const width = size * 8;
    const delta = this.flags & DF ? -size : size;
    const amask = this.a32 ? -1 : 0xffff;
    const srcSeg = this.segOverride >= 0 ? this.segOverride : DS;
    const repeat = this.rep !== 0;
    // A bounded number of iterations per step keeps interrupts and timers responsive; the instruction is
    // restarted (EIP stays) until the count runs out.
    let budget = repeat ? this.repeatBudget() : 1;
    // Page at a time, unless each element must be checked: debugging (breakpoints, single-step) or alignment (#AC).
    const bulk = repeat && !this.debugStepping && this.accessMask !== TLB_ALIGNMENT_CHECK && amask === -1 && delta > 0 &&
      (op === 0xa4 || op === 0xa5 || op === 0xaa || op === 0xab);
    for (;;) {
      if (repeat && (r[1] & amask) === 0) return;
      if (bulk) {
        const done = this.bulkMoveOrStore(op === 0xa4 || op === 0xa5, size, srcSeg);
        if (done > 0) {
          if (r[1] === 0) return;
          budget -= done;
          if (budget <= 0) {
            this.suspendRepeat();
            return;
          }
          continue;
        }
      }
      const si = r[6] & amask;
      const di = r[7] & amask;
      let stop = false;
      switch (op) {
        case 0xa4: case 0xa5: {
          const v = size === 1 ? this.rd8(this.segRead(srcSeg, si, 1)) : size === 2 ? this.rd16(this.segRead(srcSeg, si, 2)) : this.rd32(this.segRead(srcSeg, si, 4));
          const d = this.segWrite(ES, di, size);
          if (size === 1) this.wr8(d, v);
          else if (size === 2) this.wr16(d, v);
          else this.wr32(d, v);
          this.advance(6, delta, amask);
          this.advance(7, delta, amask);
          break;
        }
        case 0xa6: case 0xa7: {
          const a = size === 1 ? this.rd8(this.segRead(srcSeg, si, 1)) : size === 2 ? this.rd16(this.segRead(srcSeg, si, 2)) : this.rd32(this.segRead(srcSeg, si, 4));
          const b = size === 1 ? this.rd8(this.segRead(ES, di, 1)) : size === 2 ? this.rd16(this.segRead(ES, di, 2)) : this.rd32(this.segRead(ES, di, 4));
          this.alu(7, a, b, width);
          this.advance(6, delta, amask);
          this.advance(7, delta, amask);
          stop = this.rep === 1 ? !this.getZF() : this.rep === 2 ? this.getZF() : false;
          break;
        }
        case 0xaa: case 0xab: {
          const d = this.segWrite(ES, di, size);
          if (size === 1) this.wr8(d, r[0]);
          else if (size === 2) this.wr16(d, r[0]);
          else this.wr32(d, r[0]);
          this.advance(7, delta, amask);
          break;
        }
        case 0xac: case 0xad: {
          const v = size === 1 ? this.rd8(this.segRead(srcSeg, si, 1)) : size === 2 ? this.rd16(this.segRead(srcSeg, si, 2)) : this.rd32(this.segRead(srcSeg, si, 4));
          if (size === 1) this.setReg8(0, v);
          else if (size === 2) this.setReg16(0, v);
          else r[0] = v;
          this.advance(6, delta, amask);
          break;
        }
        default: {
          const b = size === 1 ? this.rd8(this.segRead(ES, di, 1)) : size === 2 ? this.rd16(this.segRead(ES, di, 2)) : this.rd32(this.segRead(ES, di, 4));
          this.alu(7, size === 4 ? r[0] : r[0] & (size === 1 ? 0xff : 0xffff), b, width);
          this.advance(7, delta, amask);
          stop = this.rep === 1 ? !this.getZF() : this.rep === 2 ? this.getZF() : false;
          break;
        }
      }
      if (!repeat) return;
      this.advance(1, -1, amask);
      if (stop || (r[1] & amask) === 0) return;
      if (--budget === 0) {
        this.suspendRepeat();
        return;
      }
    }
  }

  /**
   * REP MOVS / REP STOS with 32-bit addressing, forwards: as many elements as stay inside one source and one
   * destination page of plain RAM, copied or filled at once (page clearing and copying are most of what a
   * booting kernel does with them). Returns the elements done, 0 when the element-wise path must run (the
   * first element faults there, exactly).
   */
  private bulkMoveOrStore(move: boolean, size: number, srcSeg: number): number {
    const r = this.regs;
    const di = r[7] >>> 0, si = r[6] >>> 0;
    const dst = (this.segBase[ES] + di) | 0;
    let n = Math.min(r[1] >>> 0, ((4096 - (dst & 0xfff)) / size) | 0);
    const src = (this.segBase[srcSeg] + si) | 0;
    if (move) n = Math.min(n, ((4096 - (src & 0xfff)) / size) | 0);
    if (n < 2) return 0;
    const bytes = n * size;
    const fits = (seg: number, off: number, access: number) => this.segFlat[seg] !== 0 ||
      ((this.segAccess[seg] & access) !== 0 && off >= this.segLo[seg] && off + bytes - 1 <= this.segHi[seg]);
    if (!fits(ES, di, 2) || (move && !fits(srcSeg, si, 1))) return 0;
    const user = this.cpl === 3;
    const jit = this.jit;
    const s = move ? this.translate(src, false, user) : 0;
    const d = this.translate(dst, true, user);
    if (d >>> 0 >= this.ramSize || !this.memory.isDirectRam((d & PAGE_MASK) >>> 0) || (jit !== null && jit.codePages[d >>> 12] !== 0)) return 0;
    if (move) {
      if (s >>> 0 >= this.ramSize || !this.memory.isDirectRam((s & PAGE_MASK) >>> 0)) return 0;
      // An overlapping forward copy repeats a pattern element by element; copyWithin would not.
      if (d > s && d < s + bytes) return 0;
      this.ram.copyWithin(d, s, s + bytes);
      r[6] = (r[6] + bytes) | 0;
    } else if (size === 1) {
      this.ram.fill(r[0] & 0xff, d, d + bytes);
    } else if (size === 4 && (d & 3) === 0) {
      this.ram32.fill(r[0], d >> 2, (d + bytes) >> 2);
    } else {
      for (let i = 0; i < bytes; i++) this.ram[d + i] = r[0] >>> ((i % size) * 8);
    }
    r[7] = (r[7] + bytes) | 0;
    r[1] = (r[1] - n) | 0;
    return n;
  }

  /** Iterations of a REP string instruction per step: one while debugging (single-step and data breakpoints trap after each). */
  private repeatBudget(): number {
    return this.debugStepping ? 1 : 4096;
  }

  /**
   * Ends a step inside a REP string instruction, which restarts at the same EIP. While debugging, RF is set as
   * hardware sets it in the EFLAGS image of an interrupted REP: the instruction's breakpoint does not match again.
   */
  private suspendRepeat(): void {
    this.eip = this.instrStart;
    if (this.debugStepping) this.flags |= RF;
  }

  /** Adds delta to a register under the address-size mask (SI/DI/CX wrap at 64 KiB in 16-bit addressing). */
  private advance(reg: number, delta: number, amask: number): void {
    if (amask === -1) this.regs[reg] = (this.regs[reg] + delta) | 0;
    else this.setReg16(reg, (this.regs[reg] + delta) & 0xffff);
  }

  private stringIo(op: number): void {
    const r = this.regs;
    const size = op & 1 ? (this.o32 ? 4 : 2) : 1;
    const delta = this.flags & DF ? -size : size;
    const amask = this.a32 ? -1 : 0xffff;
    const port = r[2] & 0xffff;
    const repeat = this.rep !== 0;
    let budget = repeat ? this.repeatBudget() : 1;
    for (;;) {
      if (repeat && (r[1] & amask) === 0) return;
      if (op < 0x6e) {
        const d = this.segWrite(ES, r[7] & amask, size);
        this.probeWrite(d, size);
        const v = this.portIn(port, size as 1 | 2 | 4);
        if (size === 1) this.wr8(d, v);
        else if (size === 2) this.wr16(d, v);
        else this.wr32(d, v);
        this.advance(7, delta, amask);
      } else {
        const seg = this.segOverride >= 0 ? this.segOverride : DS;
        const s = this.segRead(seg, r[6] & amask, size);
        const v = size === 1 ? this.rd8(s) : size === 2 ? this.rd16(s) : this.rd32(s);
        this.portOut(port, size as 1 | 2 | 4, v);
        this.advance(6, delta, amask);
      }
      if (!repeat) return;
      this.advance(1, -1, amask);
      if ((r[1] & amask) === 0) return;
      if (--budget === 0) {
        this.suspendRepeat();
        return;
      }
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Two-byte opcodes

  private execute0f(op: number): void {
    const regs = this.regs;
    if (op >= 0x80 && op < 0x90) {
      const d = this.o32 ? this.fetch32() : (this.fetch16() << 16) >> 16;
      if (this.condition(op & 15)) this.jumpRelative(d);
      return;
    }
    if (op >= 0x40 && op < 0x50) {
      const modrm = this.fetch8();
      const v = this.readRMv(modrm);
      const reg = (modrm >> 3) & 7;
      if (this.condition(op & 15)) {
        if (this.o32) regs[reg] = v;
        else this.setReg16(reg, v);
      }
      return;
    }
    if (op >= 0x90 && op < 0xa0) {
      const modrm = this.fetch8();
      this.writeRM8(modrm, this.condition(op & 15) ? 1 : 0, false);
      return;
    }
    if (op >= 0xc8) {
      const v = regs[op & 7];
      regs[op & 7] = ((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24);
      return;
    }
    switch (op) {
      case 0x00: this.group6(); return;
      case 0x01: this.group7(); return;
      case 0x02: case 0x03: this.larLsl(op === 0x02); return;
      case 0x06:
        if (this.cpl !== 0) this.gp(0);
        this.cr0 &= ~8;
        return;
      case 0x08: case 0x09:
        if (this.cpl !== 0) this.gp(0);
        return;
      case 0x0b: case 0xb9: case 0xff: this.ud(); return;
      case 0x18: case 0x19: case 0x1a: case 0x1b: case 0x1c: case 0x1d: case 0x1e: case 0x1f: {
        // Hint NOPs (NOP r/m, PREFETCHh, and ENDBR32 = F3 0F 1E FB on a CPU without CET): the operand is decoded,
        // no memory is accessed.
        const modrm = this.fetch8();
        if (modrm < 0xc0) this.decodeEA(modrm);
        return;
      }
      case 0x20: case 0x21: case 0x22: case 0x23: this.movControl(op); return;
      case 0x30:
        if (this.cpl !== 0) this.gp(0);
        this.wrmsr(regs[1] >>> 0, regs[2], regs[0]);
        return;
      case 0x31:
        this.rdtsc();
        return;
      case 0x32:
        if (this.cpl !== 0) this.gp(0);
        this.rdmsr(regs[1] >>> 0);
        return;
      case 0x34: this.sysenter(); return;
      case 0x35: this.sysexit(); return;
      case 0xa0: this.pushv(this.segSel[FS]); return;
      case 0xa1: this.popSegment(FS); return;
      case 0xa2: this.cpuid(); return;
      case 0xa3: case 0xab: case 0xb3: case 0xbb: this.bitTest(op, -1); return;
      case 0xa4: case 0xa5: case 0xac: case 0xad: {
        const modrm = this.fetch8();
        const w = this.o32 ? 32 : 16;
        const v = this.readRMW(modrm, w);
        const src = this.o32 ? regs[(modrm >> 3) & 7] : this.reg16((modrm >> 3) & 7);
        const count = (op & 1 ? regs[1] : this.fetch8()) & 31;
        if (count === 0) return;
        this.writeBack(modrm, w, this.shiftDouble(op < 0xa8, v, src, count, w));
        return;
      }
      case 0xa8: this.pushv(this.segSel[GS]); return;
      case 0xa9: this.popSegment(GS); return;
      case 0xaf: {
        const modrm = this.fetch8();
        const reg = (modrm >> 3) & 7;
        const w = this.o32 ? 32 : 16;
        const r = this.imul(this.o32 ? regs[reg] : this.reg16(reg), this.readRMv(modrm), w);
        if (this.o32) regs[reg] = r;
        else this.setReg16(reg, r);
        return;
      }
      case 0xb0: case 0xb1: {
        const modrm = this.fetch8();
        const w = op === 0xb0 ? 8 : this.o32 ? 32 : 16;
        const reg = (modrm >> 3) & 7;
        const dst = this.readRMW(modrm, w);
        const acc = w === 8 ? regs[0] & 0xff : w === 16 ? regs[0] & 0xffff : regs[0];
        this.alu(7, acc, dst, w);
        if (this.getZF()) {
          this.writeBack(modrm, w, w === 8 ? this.reg8(reg) : w === 16 ? this.reg16(reg) : regs[reg]);
        } else {
          // The destination is written back unchanged (a locked cycle always writes), then the accumulator loads.
          this.writeBack(modrm, w, dst);
          if (w === 8) this.setReg8(0, dst);
          else if (w === 16) this.setReg16(0, dst);
          else regs[0] = dst;
        }
        return;
      }
      case 0xb2: this.loadFarPointer(SS); return;
      case 0xb4: this.loadFarPointer(FS); return;
      case 0xb5: this.loadFarPointer(GS); return;
      case 0xb6: case 0xb7: case 0xbe: case 0xbf: {
        const modrm = this.fetch8();
        let v: number;
        if (op & 1) {
          v = this.readRM16(modrm);
          if (op === 0xbf) v = (v << 16) >> 16;
        } else {
          v = this.readRM8(modrm);
          if (op === 0xbe) v = (v << 24) >> 24;
        }
        if (this.o32) regs[(modrm >> 3) & 7] = v;
        else this.setReg16((modrm >> 3) & 7, v);
        return;
      }
      case 0xba: {
        const modrm = this.fetch8();
        const sub = (modrm >> 3) & 7;
        if (sub < 4) this.ud();
        this.bitTestImmediate(sub, modrm);
        return;
      }
      case 0xbc: case 0xbd: {
        const modrm = this.fetch8();
        const w = this.o32 ? 32 : 16;
        const v = this.readRMv(modrm) & (w === 32 ? -1 : 0xffff);
        if (v === 0) {
          this.setStatusFlags(ZF, ZF);
          return;
        }
        const idx = op === 0xbc ? 31 - Math.clz32(v & -v) : 31 - Math.clz32(v);
        if (this.o32) regs[(modrm >> 3) & 7] = idx;
        else this.setReg16((modrm >> 3) & 7, idx);
        this.setStatusFlags(ZF, 0);
        return;
      }
      case 0xc0: case 0xc1: {
        const modrm = this.fetch8();
        const w = op === 0xc0 ? 8 : this.o32 ? 32 : 16;
        const reg = (modrm >> 3) & 7;
        const dst = this.readRMW(modrm, w);
        const src = w === 8 ? this.reg8(reg) : w === 16 ? this.reg16(reg) : regs[reg];
        const sum = this.alu(0, dst, src, w);
        // The source register takes the old destination first, then the destination the sum: with one register
        // as both operands it ends holding the sum (SDM: TEMP = SRC + DEST; SRC = DEST; DEST = TEMP).
        if (w === 8) this.setReg8(reg, dst);
        else if (w === 16) this.setReg16(reg, dst);
        else regs[reg] = dst;
        this.writeBack(modrm, w, sum);
        return;
      }
      case 0xc7: {
        const modrm = this.fetch8();
        if (modrm >= 0xc0 || ((modrm >> 3) & 7) !== 1) this.ud();
        this.decodeEA(modrm);
        const lin = this.segWrite(this.eaSeg, this.eaOff, 8);
        this.probeWrite(lin, 8);
        const lo = this.rd32(lin), hi = this.rd32((lin + 4) | 0);
        if (lo === regs[0] && hi === regs[2]) {
          this.wr32(lin, regs[3]);
          this.wr32((lin + 4) | 0, regs[1]);
          this.setStatusFlags(ZF, ZF);
        } else {
          this.wr32(lin, lo);
          this.wr32((lin + 4) | 0, hi);
          regs[0] = lo;
          regs[2] = hi;
          this.setStatusFlags(ZF, 0);
        }
        return;
      }
    }
    this.ud();
  }

  /** BT/BTS/BTR/BTC with a register bit offset: memory operands address beyond the operand by offset/width. */
  private bitTest(op: number, _unused: number): void {
    const modrm = this.fetch8();
    const w = this.o32 ? 32 : 16;
    const bit = this.o32 ? this.regs[(modrm >> 3) & 7] : (this.reg16((modrm >> 3) & 7) << 16) >> 16;
    const kind = op === 0xa3 ? 0 : op === 0xab ? 1 : op === 0xb3 ? 2 : 3;
    if (modrm >= 0xc0) {
      const v = w === 32 ? this.regs[modrm & 7] : this.reg16(modrm & 7);
      const m = 1 << (bit & (w - 1));
      this.setStatusFlags(CF, v & m ? CF : 0);
      if (kind !== 0) {
        const r = kind === 1 ? v | m : kind === 2 ? v & ~m : v ^ m;
        if (w === 32) this.regs[modrm & 7] = r;
        else this.setReg16(modrm & 7, r);
      }
      return;
    }
    this.decodeEA(modrm);
    const byteDelta = (bit >> 3) & ~((w >> 3) - 1);
    const off = this.a32 ? (this.eaOff + byteDelta) | 0 : (this.eaOff + byteDelta) & 0xffff;
    const size = w >> 3;
    const m = 1 << (bit & (w - 1));
    if (kind === 0) {
      const lin = this.segRead(this.eaSeg, off, size);
      const v = size === 4 ? this.rd32(lin) : this.rd16(lin);
      this.setStatusFlags(CF, v & m ? CF : 0);
      return;
    }
    const lin = this.segWrite(this.eaSeg, off, size);
    this.probeWrite(lin, size);
    const v = size === 4 ? this.rd32(lin) : this.rd16(lin);
    const r = kind === 1 ? v | m : kind === 2 ? v & ~m : v ^ m;
    if (size === 4) this.wr32(lin, r);
    else this.wr16(lin, r);
    this.setStatusFlags(CF, v & m ? CF : 0);
  }

  private bitTestImmediate(sub: number, modrm: number): void {
    const w = this.o32 ? 32 : 16;
    const kind = sub - 4;
    if (kind === 0) {
      const v = this.readRMv(modrm);
      const bit = this.fetch8() & (w - 1);
      this.setStatusFlags(CF, (v >> bit) & 1 ? CF : 0);
      return;
    }
    const v = this.readRMW(modrm, w);
    const m = 1 << (this.fetch8() & (w - 1));
    const r = kind === 1 ? v | m : kind === 2 ? v & ~m : v ^ m;
    this.writeBack(modrm, w, r);
    this.setStatusFlags(CF, v & m ? CF : 0);
  }

  // ---------------------------------------------------------------------------------------------------
  // Descriptor tables

  /** Reads the 8-byte descriptor for `selector` from the GDT or LDT; faults with `vector`(sel) past the limit. */
  private readDescriptor(selector: number, vector = GP): [number, number] {
    const index = selector & 0xfff8;
    let base: number, limit: number;
    if (selector & 4) {
      if ((this.segAttr[LDTR] & 0x80) === 0) this.fault(vector, selector & 0xfffc);
      base = this.segBase[LDTR];
      limit = this.segLimit[LDTR];
    } else {
      base = this.gdtBase;
      limit = this.gdtLimit;
    }
    if (index + 7 > limit) this.fault(vector, selector & 0xfffc);
    const lin = (base + index) | 0;
    return [this.sysRead32(lin), this.sysRead32((lin + 4) | 0)];
  }

  private setAccessedBit(selector: number, hi: number): void {
    if (hi & 0x100) return;
    const base = selector & 4 ? this.segBase[LDTR] : this.gdtBase;
    this.sysWrite32((base + (selector & 0xfff8) + 4) | 0, hi | 0x100);
  }

  private static descBase(lo: number, hi: number): number {
    return ((lo >>> 16) | ((hi & 0xff) << 16) | (hi & 0xff000000)) | 0;
  }

  private static descLimit(lo: number, hi: number): number {
    const raw = (lo & 0xffff) | (hi & 0xf0000);
    return hi & 0x800000 ? raw * 4096 + 4095 : raw;
  }

  private static descAttributes(hi: number): number {
    return (hi >>> 8) & 0xf0ff;
  }

  private loadFromDescriptor(seg: number, selector: number, lo: number, hi: number): void {
    this.setSegmentCache(seg, selector, X86Cpu.descBase(lo, hi), X86Cpu.descLimit(lo, hi), X86Cpu.descAttributes(hi));
  }

  /** MOV/POP/LxS to a data or stack segment register, with the protected-mode checks. */
  loadSegment(seg: number, selector: number): void {
    selector &= 0xffff;
    if (!this.protectedMode || this.flags & VM) {
      this.setSegmentReal(seg, selector);
      if (seg === SS) this.updateModes();
      return;
    }
    const rpl = selector & 3;
    if ((selector & 0xfffc) === 0) {
      if (seg === SS) this.gp(0);
      this.setSegmentCache(seg, selector, 0, 0, 0);
      return;
    }
    const [lo, hi] = this.readDescriptor(selector);
    const dpl = (hi >> 13) & 3;
    const isSystem = (hi & 0x1000) === 0;
    const isCode = (hi & 0x800) !== 0;
    const type = (hi >> 8) & 0xf;
    if (seg === SS) {
      if (isSystem || isCode || (type & 2) === 0 || rpl !== this.cpl || dpl !== this.cpl) this.gp(selector & 0xfffc);
      if ((hi & 0x8000) === 0) this.fault(SS_VECTOR, selector & 0xfffc);
    } else {
      if (isSystem || (isCode && (type & 2) === 0)) this.gp(selector & 0xfffc);
      const conforming = isCode && (type & 4) !== 0;
      if (!conforming && (rpl > dpl || this.cpl > dpl)) this.gp(selector & 0xfffc);
      if ((hi & 0x8000) === 0) this.fault(NP, selector & 0xfffc);
    }
    this.setAccessedBit(selector, hi);
    this.loadFromDescriptor(seg, selector, lo, hi | 0x100);
    if (seg === SS) this.updateModes();
  }

  /** After a privilege change to an outer level, data segments the new CPL may not use become null. */
  private nullInaccessibleSegments(): void {
    for (const seg of [ES, DS, FS, GS]) {
      const attr = this.segAttr[seg];
      const isCode = (attr & 0x18) === 0x18;
      const conforming = isCode && (attr & 4) !== 0;
      const dpl = (attr >> 5) & 3;
      if ((attr & 0x80) !== 0 && !conforming && dpl < this.cpl) this.setSegmentCache(seg, 0, 0, 0, 0);
    }
  }

  private setCpl(cpl: number): void {
    this.cpl = cpl;
    this.updateModes();
  }

  private loadCsChecked(selector: number, lo: number, hi: number, cpl: number): void {
    this.setAccessedBit(selector, hi);
    this.setSegmentCache(CS, (selector & 0xfffc) | cpl, X86Cpu.descBase(lo, hi), X86Cpu.descLimit(lo, hi), X86Cpu.descAttributes(hi | 0x100));
    this.setCpl(cpl);
  }

  // ---------------------------------------------------------------------------------------------------
  // Far transfers

  /** Real-mode and v8086 far transfer target: CS = selector, EIP = offset. */
  private jumpReal(selector: number, offset: number): void {
    this.setSegmentReal(CS, selector);
    this.eip = this.o32 ? offset : offset & 0xffff;
    this.updateModes();
  }

  /** Pushes CS and EIP for a far call, after checking that the whole frame can be written. */
  private pushFarReturnAddress(push: (v: number) => void, size: number): void {
    const sp = (this.regs[4] - 2 * size) & this.stackMask;
    this.probeWrite(this.segWrite(SS, sp, 2 * size), 2 * size);
    push(this.segSel[CS]);
    push(this.eip);
  }

  private farJump(selector: number, offset: number): void {
    if (!this.protectedMode || this.flags & VM) {
      this.jumpReal(selector, offset);
      return;
    }
    if ((selector & 0xfffc) === 0) this.gp(0);
    const [lo, hi] = this.readDescriptor(selector);
    if (hi & 0x1000) {
      this.checkCodeTarget(selector, hi);
      const limit = X86Cpu.descLimit(lo, hi);
      const target = this.o32 ? offset >>> 0 : offset & 0xffff;
      if (target > limit) this.gp(0);
      this.loadCsChecked(selector, lo, hi, this.cpl);
      this.eip = target | 0;
      return;
    }
    const type = (hi >> 8) & 0xf;
    if (type === 0xc || type === 0x4) {
      // Call gate: jump to its target at the same privilege.
      const dpl = (hi >> 13) & 3;
      if (dpl < this.cpl || dpl < (selector & 3)) this.gp(selector & 0xfffc);
      if ((hi & 0x8000) === 0) this.fault(NP, selector & 0xfffc);
      const gateSel = lo >>> 16;
      const gateOff = type === 0xc ? (lo & 0xffff) | (hi & 0xffff0000) : lo & 0xffff;
      if ((gateSel & 0xfffc) === 0) this.gp(0);
      const [clo, chi] = this.readDescriptor(gateSel);
      this.checkCodeTarget(gateSel, chi);
      if (gateOff >>> 0 > X86Cpu.descLimit(clo, chi)) this.gp(0);
      this.loadCsChecked(gateSel, clo, chi, this.cpl);
      this.eip = gateOff;
      return;
    }
    if (type === 0x5 || type === 0x9 || type === 0x1) {
      this.taskSwitch(selector, lo, hi, 'jmp');
      return;
    }
    this.gp(selector & 0xfffc);
  }

  /** A direct far JMP/CALL to a code segment: privilege and presence checks. */
  private checkCodeTarget(selector: number, hi: number): void {
    if ((hi & 0x1800) !== 0x1800) this.gp(selector & 0xfffc);
    const dpl = (hi >> 13) & 3;
    const conforming = (hi & 0x400) !== 0;
    if (conforming ? dpl > this.cpl : (selector & 3) > this.cpl || dpl !== this.cpl) this.gp(selector & 0xfffc);
    if ((hi & 0x8000) === 0) this.fault(NP, selector & 0xfffc);
  }

  private farCall(selector: number, offset: number): void {
    if (!this.protectedMode || this.flags & VM) {
      this.pushFarReturnAddress((v) => this.pushv(v), this.o32 ? 4 : 2);
      this.jumpReal(selector, offset);
      return;
    }
    if ((selector & 0xfffc) === 0) this.gp(0);
    const [lo, hi] = this.readDescriptor(selector);
    if (hi & 0x1000) {
      this.checkCodeTarget(selector, hi);
      const target = this.o32 ? offset >>> 0 : offset & 0xffff;
      if (target > X86Cpu.descLimit(lo, hi)) this.gp(0);
      this.pushFarReturnAddress((v) => this.pushv(v), this.o32 ? 4 : 2);
      this.loadCsChecked(selector, lo, hi, this.cpl);
      this.eip = target | 0;
      return;
    }
    const type = (hi >> 8) & 0xf;
    if (type === 0xc || type === 0x4) {
      this.callGate(selector, lo, hi);
      return;
    }
    if (type === 0x5 || type === 0x9 || type === 0x1) {
      this.taskSwitch(selector, lo, hi, 'call');
      return;
    }
    this.gp(selector & 0xfffc);
  }

  private callGate(selector: number, lo: number, hi: number): void {
    const type = (hi >> 8) & 0xf;
    const dpl = (hi >> 13) & 3;
    if (dpl < this.cpl || dpl < (selector & 3)) this.gp(selector & 0xfffc);
    if ((hi & 0x8000) === 0) this.fault(NP, selector & 0xfffc);
    const gate32 = type === 0xc;
    const codeSel = lo >>> 16;
    const target = gate32 ? (lo & 0xffff) | (hi & 0xffff0000) : lo & 0xffff;
    const paramCount = hi & 0x1f;
    if ((codeSel & 0xfffc) === 0) this.gp(0);
    const [clo, chi] = this.readDescriptor(codeSel);
    const cdpl = (chi >> 13) & 3;
    if ((chi & 0x1800) !== 0x1800 || cdpl > this.cpl) this.gp(codeSel & 0xfffc);
    if ((chi & 0x8000) === 0) this.fault(NP, codeSel & 0xfffc);
    if (target >>> 0 > X86Cpu.descLimit(clo, chi)) this.gp(0);
    const size = gate32 ? 4 : 2;
    const conforming = (chi & 0x400) !== 0;
    if (!conforming && cdpl < this.cpl) {
      // Inner privilege: switch to the stack in the TSS and copy the parameters.
      const [newSs, newEsp] = this.stackFromTss(cdpl);
      const oldSs = this.segSel[SS], oldEsp = this.regs[4], oldCs = this.segSel[CS], oldEip = this.eip;
      const params: number[] = [];
      for (let i = paramCount - 1; i >= 0; i--) params.push(this.peek(i * size, size));
      const [slo, shi] = this.checkNewStack(newSs, cdpl);
      const oldCpl = this.cpl;
      const oldSsBase = this.segBase[SS], oldSsLimit = this.segLimit[SS], oldSsAttributes = this.segAttr[SS];
      this.loadFromDescriptor(SS, newSs, slo, shi);
      this.regs[4] = newEsp;
      this.setCpl(cdpl);
      const push = (v: number) => (gate32 ? this.push32(v) : this.push16(v));
      try {
        push(oldSs);
        push(oldEsp);
        for (const p of params) push(p);
        push(oldCs);
        push(oldEip);
      } catch (e) {
        // A fault pushing on the new stack (not present, past its limit) is raised at the caller's privilege
        // with the caller's stack.
        this.cpl = oldCpl;
        this.setSegmentCache(SS, oldSs, oldSsBase, oldSsLimit, oldSsAttributes);
        this.regs[4] = oldEsp;
        this.updateModes();
        throw e;
      }
      this.setAccessedBit(newSs, shi);
      this.loadCsChecked(codeSel, clo, chi, cdpl);
      this.eip = target;
      return;
    }
    this.pushFarReturnAddress((v) => (gate32 ? this.push32(v) : this.push16(v)), size);
    this.loadCsChecked(codeSel, clo, chi, this.cpl);
    this.eip = target;
  }

  /** SS:ESP for privilege level `dpl` from the current TSS. */
  private stackFromTss(dpl: number): [number, number] {
    const type = this.segAttr[TR] & 0xf;
    const base = this.segBase[TR];
    if (type === 0x9 || type === 0xb) {
      const at = 4 + dpl * 8;
      if (at + 5 > this.segLimit[TR]) this.fault(TS, this.segSel[TR] & 0xfffc);
      return [this.sysRead16((base + at + 4) | 0), this.sysRead32((base + at) | 0)];
    }
    const at = 2 + dpl * 4;
    if (at + 3 > this.segLimit[TR]) this.fault(TS, this.segSel[TR] & 0xfffc);
    return [this.sysRead16((base + at + 2) | 0), this.sysRead16((base + at) | 0)];
  }

  private checkNewStack(ss: number, dpl: number): [number, number] {
    if ((ss & 0xfffc) === 0) this.fault(TS, 0);
    const [lo, hi] = this.readDescriptor(ss, TS);
    const sdpl = (hi >> 13) & 3;
    if ((ss & 3) !== dpl || sdpl !== dpl || (hi & 0x1a00) !== 0x1200) this.fault(TS, ss & 0xfffc);
    if ((hi & 0x8000) === 0) this.fault(SS_VECTOR, ss & 0xfffc);
    return [lo, hi];
  }

  /** RETF/IRET: the checks on the popped CS (privilege, type, presence) and on the return offset. */
  private checkReturnTarget(cs: number, ip: number): [number, number, number] {
    const rpl = cs & 3;
    if ((cs & 0xfffc) === 0) this.gp(0);
    if (rpl < this.cpl) this.gp(cs & 0xfffc);
    const [lo, hi] = this.readDescriptor(cs);
    if ((hi & 0x1800) !== 0x1800) this.gp(cs & 0xfffc);
    const dpl = (hi >> 13) & 3;
    if (hi & 0x400 ? dpl > rpl : dpl !== rpl) this.gp(cs & 0xfffc);
    if ((hi & 0x8000) === 0) this.fault(NP, cs & 0xfffc);
    const target = this.o32 ? ip : ip & 0xffff;
    if (target >>> 0 > X86Cpu.descLimit(lo, hi)) this.gp(0);
    return [lo, hi, target];
  }

  /** The stack segment a return to outer privilege `rpl` pops: a writable data segment at that level. */
  private checkOuterStack(ss: number, rpl: number): [number, number] {
    if ((ss & 0xfffc) === 0) this.gp(0);
    const [lo, hi] = this.readDescriptor(ss);
    if ((ss & 3) !== rpl || ((hi >> 13) & 3) !== rpl || (hi & 0x1a00) !== 0x1200) this.gp(ss & 0xfffc);
    if ((hi & 0x8000) === 0) this.fault(SS_VECTOR, ss & 0xfffc);
    return [lo, hi];
  }

  private switchToOuterStack(ss: number, lo: number, hi: number, esp: number): void {
    this.setAccessedBit(ss, hi);
    this.loadFromDescriptor(SS, ss, lo, hi | 0x100);
    this.updateModes();
    if (this.ss32) this.regs[4] = esp;
    else this.setReg16(4, esp);
    this.nullInaccessibleSegments();
  }

  private farReturn(extra: number): void {
    const size = this.o32 ? 4 : 2;
    if (!this.protectedMode || this.flags & VM) {
      const ip = this.peek(0, size);
      const cs = this.peek(size, size) & 0xffff;
      this.setSegmentReal(CS, cs);
      this.eip = this.o32 ? ip : ip & 0xffff;
      this.espSet(this.regs[4] + 2 * size + extra);
      this.updateModes();
      return;
    }
    const ip = this.peek(0, size);
    const cs = this.peek(size, size) & 0xffff;
    const rpl = cs & 3;
    const [lo, hi, target] = this.checkReturnTarget(cs, ip);
    if (rpl === this.cpl) {
      this.espSet(this.regs[4] + 2 * size + extra);
      this.loadCsChecked(cs, lo, hi, rpl);
      this.eip = target;
      return;
    }
    // Return to an outer privilege level: SS:ESP follow on the stack.
    const newEsp = this.peek(2 * size + extra, size);
    const newSs = this.peek(3 * size + extra, size) & 0xffff;
    const [slo, shi] = this.checkOuterStack(newSs, rpl);
    this.loadCsChecked(cs, lo, hi, rpl);
    this.eip = target;
    this.switchToOuterStack(newSs, slo, shi, newEsp + extra);
  }

  private iret(): void {
    const size = this.o32 ? 4 : 2;
    if (!this.protectedMode) {
      const ip = this.peek(0, size);
      const cs = this.peek(size, size) & 0xffff;
      const fl = this.peek(2 * size, size);
      this.setSegmentReal(CS, cs);
      this.eip = this.o32 ? ip : ip & 0xffff;
      this.espSet(this.regs[4] + 3 * size);
      const keep = this.o32 ? VM | 0xffc00000 : 0xffff0000 | 0;
      this.setEflags((this.getEflags() & keep) | (fl & ~keep));
      this.updateModes();
      return;
    }
    if (this.flags & VM) {
      if (((this.flags & IOPL) >> 12) < 3) this.gp(0);
      const ip = this.peek(0, size);
      const cs = this.peek(size, size) & 0xffff;
      const fl = this.peek(2 * size, size);
      this.setSegmentReal(CS, cs);
      this.eip = this.o32 ? ip : ip & 0xffff;
      this.espSet(this.regs[4] + 3 * size);
      const keep = (this.o32 ? VM | IOPL | 0xffc00000 : IOPL | 0xffff0000) | 0;
      this.setEflags((this.getEflags() & keep) | (fl & ~keep));
      this.updateModes();
      return;
    }
    if (this.flags & NT) {
      this.taskReturn();
      return;
    }
    const ip = this.peek(0, size);
    const cs = this.peek(size, size) & 0xffff;
    const fl = this.peek(2 * size, size);
    if (fl & VM && this.o32 && this.cpl === 0) {
      this.iretToV86(ip, cs, fl);
      return;
    }
    const rpl = cs & 3;
    const [lo, hi, target] = this.checkReturnTarget(cs, ip);
    const oldCpl = this.cpl;
    const newFlags = this.iretFlags(fl, oldCpl);
    if (rpl === oldCpl) {
      this.espSet(this.regs[4] + 3 * size);
      this.loadCsChecked(cs, lo, hi, rpl);
      this.eip = target;
      this.setEflags(newFlags);
      return;
    }
    const newEsp = this.peek(3 * size, size);
    const newSs = this.peek(4 * size, size) & 0xffff;
    const [slo, shi] = this.checkOuterStack(newSs, rpl);
    this.loadCsChecked(cs, lo, hi, rpl);
    this.eip = target;
    this.setEflags(newFlags);
    this.switchToOuterStack(newSs, slo, shi, newEsp);
  }

  /** The EFLAGS value IRET installs: IOPL only changes at CPL 0, IF only when CPL <= IOPL. */
  private iretFlags(popped: number, cpl: number): number {
    const cur = this.getEflags();
    let changeable = STATUS_FLAGS | TF | DF | NT | RF;
    if (this.o32) changeable |= AC | ID;
    if (cpl === 0) changeable |= IOPL;
    if (cpl <= ((cur & IOPL) >> 12)) changeable |= IF;
    if (!this.o32) changeable &= 0xffff;
    return (cur & ~changeable) | (popped & changeable);
  }

  private iretToV86(ip: number, cs: number, fl: number): void {
    const esp = this.peek(12, 4);
    const ss = this.peek(16, 4) & 0xffff;
    const es = this.peek(20, 4) & 0xffff;
    const ds = this.peek(24, 4) & 0xffff;
    const fs = this.peek(28, 4) & 0xffff;
    const gs = this.peek(32, 4) & 0xffff;
    this.setEflags(fl);
    this.setCpl(3);
    for (const [seg, sel] of [[CS, cs], [SS, ss], [ES, es], [DS, ds], [FS, fs], [GS, gs]] as const) this.setSegmentReal(seg, sel);
    this.eip = ip & 0xffff;
    this.regs[4] = esp;
    this.updateModes();
  }

  // ---------------------------------------------------------------------------------------------------
  // Hardware task switching (32-bit TSS; 16-bit TSSs are refused with #TS)

  private taskSwitch(selector: number, lo: number, hi: number, source: 'jmp' | 'call' | 'int' | 'iret'): void {
    let tssSel = selector;
    let tlo = lo, thi = hi;
    if (source === 'jmp' || source === 'call') {
      // The TSS descriptor or task gate named by JMP/CALL must be as privileged as CPL and RPL allow.
      const dpl = (hi >> 13) & 3;
      if (dpl < this.cpl || dpl < (selector & 3)) this.gp(selector & 0xfffc);
    }
    if (((hi >> 8) & 0xf) === 0x5) {
      // Task gate: the TSS selector is in the gate.
      if ((hi & 0x8000) === 0) this.fault(NP, selector & 0xfffc);
      tssSel = lo >>> 16;
      if (tssSel & 4) this.fault(TS, tssSel & 0xfffc);
      [tlo, thi] = this.readDescriptor(tssSel);
    }
    const type = (thi >> 8) & 0xf;
    const wantBusy = source === 'iret';
    if ((thi & 0x1000) !== 0 || (type !== (wantBusy ? 0xb : 0x9))) this.fault(source === 'iret' ? TS : GP, tssSel & 0xfffc);
    if ((thi & 0x8000) === 0) this.fault(NP, tssSel & 0xfffc);
    const newBase = X86Cpu.descBase(tlo, thi);
    const newLimit = X86Cpu.descLimit(tlo, thi);
    if (newLimit < 0x67) this.fault(TS, tssSel & 0xfffc);
    const oldBase = this.segBase[TR];
    const oldSel = this.segSel[TR];
    if ((this.segAttr[TR] & 0xf) !== 0xb || this.segLimit[TR] < 0x67) this.fault(TS, oldSel & 0xfffc);
    // Read the whole new state before changing anything.
    const rd = (off: number) => this.sysRead32((newBase + off) | 0);
    const newCr3 = rd(0x1c), newEip = rd(0x20), newFlags = rd(0x24);
    const newRegs = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => rd(0x28 + 4 * i));
    const newSegs = [0, 1, 2, 3, 4, 5].map((i) => rd(0x48 + 4 * i) & 0xffff);
    const newLdt = rd(0x60) & 0xffff;
    // Save the outgoing task.
    let outFlags = this.getEflags();
    if (source === 'jmp' || source === 'iret') outFlags &= ~NT;
    const wr = (off: number, v: number) => this.sysWrite32((oldBase + off) | 0, v);
    wr(0x20, this.eip);
    wr(0x24, outFlags);
    for (let i = 0; i < 8; i++) wr(0x28 + 4 * i, this.regs[i]);
    for (let i = 0; i < 6; i++) this.sysWrite16((oldBase + 0x48 + 4 * i) | 0, this.segSel[i]);
    if (source === 'jmp' || source === 'iret') this.setBusy(oldSel, false);
    if (source === 'call' || source === 'int') this.sysWrite16(newBase, oldSel);
    if (source !== 'iret') this.setBusy(tssSel, true);
    // Load the incoming task.
    this.setSegmentCache(TR, tssSel, newBase, newLimit, X86Cpu.descAttributes(thi) | 0x2);
    if (this.paging) this.cr3 = newCr3;
    this.flushTlb();
    this.cr0 |= 8;
    this.eip = newEip;
    this.setEflags(source === 'call' || source === 'int' ? newFlags | NT : newFlags);
    for (let i = 0; i < 8; i++) this.regs[i] = newRegs[i];
    if (this.flags & VM) {
      for (let i = 0; i < 6; i++) this.setSegmentReal(i, newSegs[i]);
      this.setCpl(3);
      return;
    }
    this.setCpl(newSegs[CS] & 3);
    // Selectors first, so that a fault while loading leaves the new task's selectors visible.
    for (let i = 0; i < 6; i++) this.segSel[i] = newSegs[i];
    this.loadLdt(newLdt, TS);
    const [clo, chi] = (newSegs[CS] & 0xfffc) === 0 ? this.fault(TS, 0) : this.readDescriptor(newSegs[CS], TS);
    if ((chi & 0x1800) !== 0x1800) this.fault(TS, newSegs[CS] & 0xfffc);
    if ((chi & 0x8000) === 0) this.fault(NP, newSegs[CS] & 0xfffc);
    this.loadCsChecked(newSegs[CS], clo, chi, newSegs[CS] & 3);
    this.loadSegment(SS, newSegs[SS]);
    for (const s of [ES, DS, FS, GS]) this.loadSegment(s, newSegs[s]);
    if (this.eip >>> 0 > this.segLimit[CS]) this.gp(0);
  }

  private setBusy(selector: number, busy: boolean): void {
    const lin = (this.gdtBase + (selector & 0xfff8) + 4) | 0;
    const hi = this.sysRead32(lin);
    this.sysWrite32(lin, busy ? hi | 0x200 : hi & ~0x200);
  }

  /** IRET with NT set: return to the task in the back link. */
  private taskReturn(): void {
    const back = this.sysRead16(this.segBase[TR]);
    if (back & 4) this.fault(TS, back & 0xfffc);
    const [lo, hi] = this.readDescriptor(back, TS);
    this.taskSwitch(back, lo, hi, 'iret');
  }

  private loadLdt(selector: number, vector: number): void {
    if ((selector & 0xfffc) === 0) {
      this.setSegmentCache(LDTR, selector, 0, 0, 0);
      return;
    }
    if (selector & 4) this.fault(vector, selector & 0xfffc);
    const [lo, hi] = this.readDescriptor(selector, vector);
    if ((hi & 0x1f00) !== 0x0200) this.fault(vector, selector & 0xfffc);
    if ((hi & 0x8000) === 0) this.fault(NP, selector & 0xfffc);
    this.loadFromDescriptor(LDTR, selector, lo, hi);
  }

  // ---------------------------------------------------------------------------------------------------
  // Interrupts and exceptions

  /** INT n, INT3, INTO, INT1: software interrupts (the gate's DPL is checked against CPL). */
  private softwareInterrupt(vector: number, isTrapLike: boolean): void {
    if (this.flags & VM && ((this.flags & IOPL) >> 12) < 3 && !isTrapLike) this.gp(0);
    this.softwareInterrupted = true;
    this.deliver(vector, -1, true);
  }

  /**
   * Delivers an interrupt or exception through the IVT (real mode) or IDT. EIP must already hold the return
   * address. `software` applies the gate DPL check of INT n.
   */
  private deliver(vector: number, errorCode: number, software: boolean): void {
    const ext = software ? 0 : 1;
    if (!this.protectedMode) {
      const entry = vector * 4;
      if (entry + 3 > this.idtLimit) this.gp(0);
      const off = this.rd16((this.idtBase + entry) | 0);
      const seg = this.rd16((this.idtBase + entry + 2) | 0);
      const sp = (this.regs[4] - 6) & this.stackMask;
      this.probeWrite(this.segWrite(SS, sp, 6), 6);
      this.push16(this.getEflags());
      this.push16(this.segSel[CS]);
      this.push16(this.eip);
      this.flags &= ~(IF | TF | AC | RF);
      this.setSegmentReal(CS, seg);
      this.eip = off;
      this.updateModes();
      return;
    }
    if (vector * 8 + 7 > this.idtLimit) this.gp(vector * 8 + 2 + ext);
    const lin = (this.idtBase + vector * 8) | 0;
    const lo = this.sysRead32(lin);
    const hi = this.sysRead32((lin + 4) | 0);
    const type = (hi >> 8) & 0x1f;
    if (type !== 0x5 && type !== 0x6 && type !== 0x7 && type !== 0xe && type !== 0xf) this.gp(vector * 8 + 2 + ext);
    if (software && ((hi >> 13) & 3) < this.cpl) this.gp(vector * 8 + 2);
    if ((hi & 0x8000) === 0) this.fault(NP, vector * 8 + 2 + ext);
    if (type === 0x5) {
      this.taskSwitch(vector * 8, lo, hi, 'int');
      if (errorCode >= 0) this.push32(errorCode);
      return;
    }
    const gate32 = (type & 8) !== 0;
    const isInterruptGate = (type & 1) === 0;
    const codeSel = lo >>> 16;
    const target = gate32 ? (lo & 0xffff) | (hi & 0xffff0000) : lo & 0xffff;
    if ((codeSel & 0xfffc) === 0) this.gp(ext);
    const [clo, chi] = this.readDescriptor(codeSel);
    const cdpl = (chi >> 13) & 3;
    if ((chi & 0x1800) !== 0x1800 || cdpl > this.cpl) this.gp((codeSel & 0xfffc) + ext);
    if ((chi & 0x8000) === 0) this.fault(NP, (codeSel & 0xfffc) + ext);
    const conforming = (chi & 0x400) !== 0;
    const oldFlags = this.getEflags();
    const push = (v: number) => (gate32 ? this.push32(v) : this.push16(v));
    if (!conforming && cdpl < this.cpl) {
      const fromV86 = (this.flags & VM) !== 0;
      if (fromV86 && cdpl !== 0) this.gp((codeSel & 0xfffc) + ext);
      const [newSs, newEsp] = this.stackFromTss(cdpl);
      const [slo, shi] = this.checkNewStack(newSs, cdpl);
      const oldSs = this.segSel[SS], oldEsp = this.regs[4], oldCs = this.segSel[CS], oldCpl = this.cpl;
      const oldSsBase = this.segBase[SS], oldSsLimit = this.segLimit[SS], oldSsAttributes = this.segAttr[SS];
      const oldSegs = [this.segSel[ES], this.segSel[DS], this.segSel[FS], this.segSel[GS]];
      this.flags &= ~VM;
      this.setCpl(cdpl);
      this.loadFromDescriptor(SS, newSs, slo, shi);
      this.regs[4] = newEsp;
      this.updateModes();
      try {
        if (fromV86) {
          push(oldSegs[3]);
          push(oldSegs[2]);
          push(oldSegs[1]);
          push(oldSegs[0]);
        }
        push(oldSs);
        push(oldEsp);
        push(oldFlags);
        push(oldCs);
        push(this.eip);
        if (errorCode >= 0) push(errorCode);
      } catch (e) {
        // A fault pushing the frame on the new stack (not present, past its limit) is raised in the
        // interrupted context: INT n rethrows it from there, and the exception it escalates from sees it too.
        if (fromV86) this.flags |= VM;
        this.cpl = oldCpl;
        this.setSegmentCache(SS, oldSs, oldSsBase, oldSsLimit, oldSsAttributes);
        this.regs[4] = oldEsp;
        this.updateModes();
        throw e;
      }
      if (fromV86) for (const s of [ES, DS, FS, GS]) this.setSegmentCache(s, 0, 0, 0, 0);
    } else {
      if (this.flags & VM) this.gp((codeSel & 0xfffc) + ext);
      const size = (gate32 ? 4 : 2) * (errorCode >= 0 ? 4 : 3);
      const sp = (this.regs[4] - size) & this.stackMask;
      this.probeWrite(this.segWrite(SS, sp, size), size);
      push(oldFlags);
      push(this.segSel[CS]);
      push(this.eip);
      if (errorCode >= 0) push(errorCode);
    }
    this.loadCsChecked(codeSel, clo, chi, cdpl);
    if (target >>> 0 > this.segLimit[CS]) this.gp(0);
    this.eip = target;
    this.flags &= ~(TF | NT | RF | VM);
    if (isInterruptGate) this.flags &= ~IF;
  }

  /** Saved around exception delivery so that a fault while delivering leaves the state as it was. */
  private captureTransferState(): number[] {
    const s = [this.regs[4], this.eip, this.getEflags(), this.cpl];
    for (const seg of [CS, SS, ES, DS, FS, GS]) s.push(this.segSel[seg], this.segBase[seg], this.segLimit[seg], this.segAttr[seg]);
    return s;
  }

  private restoreTransferState(s: number[]): void {
    this.regs[4] = s[0];
    this.eip = s[1];
    this.setEflags(s[2]);
    this.cpl = s[3];
    let i = 4;
    for (const seg of [CS, SS, ES, DS, FS, GS]) {
      this.setSegmentCache(seg, s[i], s[i + 1], s[i + 2], s[i + 3]);
      i += 4;
    }
    this.updateModes();
  }

  /** Delivers an exception raised by an instruction, escalating to #DF and triple fault as the SDM says. */
  private raiseException(vector: number, errorCode: number): void {
    let v = vector;
    let err = hasErrorCode(vector) ? (errorCode < 0 ? 0 : errorCode) : -1;
    const saved = this.captureTransferState();
    for (;;) {
      try {
        // RF goes into the pushed EFLAGS image only (delivery clears it).
        if (isFaultClass(v)) this.flags |= RF;
        this.deliver(v, err, false);
        return;
      } catch (e) {
        if (e !== FAULT) throw e;
        this.restoreTransferState(saved);
        const second = FAULT.vector;
        if (v === DF_VECTOR) {
          this.stopReason = 'triple-fault';
          this.exitRequested = this.attention = true;
          return;
        }
        const firstContributory = isContributory(v);
        const secondSerious = isContributory(second) || second === PF_VECTOR;
        if ((firstContributory && isContributory(second)) || (v === PF_VECTOR && secondSerious)) {
          v = DF_VECTOR;
          err = 0;
        } else {
          v = second;
          err = hasErrorCode(second) ? (FAULT.errorCode < 0 ? 0 : FAULT.errorCode) : -1;
        }
      }
    }
  }

  private externalInterrupt(vector: number): void {
    this.halted = false;
    const saved = this.captureTransferState();
    try {
      this.deliver(vector, -1, false);
    } catch (e) {
      if (e !== FAULT) throw e;
      this.restoreTransferState(saved);
      this.raiseException(FAULT.vector, FAULT.errorCode);
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // System instructions

  private requireProtected(): void {
    if (!this.protectedMode || this.flags & VM) this.ud();
  }

  private group6(): void {
    const modrm = this.fetch8();
    const sub = (modrm >> 3) & 7;
    this.requireProtected();
    switch (sub) {
      case 0: case 1: {
        const sel = this.segSel[sub === 0 ? LDTR : TR];
        if (modrm >= 0xc0 && this.o32) this.regs[modrm & 7] = sel;
        else this.writeRM16(modrm, sel, false);
        return;
      }
      case 2: case 3: {
        if (this.cpl !== 0) this.gp(0);
        const sel = this.readRM16(modrm);
        if (sub === 2) {
          this.loadLdt(sel, GP);
          return;
        }
        if ((sel & 0xfffc) === 0 || sel & 4) this.gp(sel & 0xfffc);
        const [lo, hi] = this.readDescriptor(sel);
        if ((hi & 0x1f00) !== 0x0900 && (hi & 0x1f00) !== 0x0100) this.gp(sel & 0xfffc);
        if ((hi & 0x8000) === 0) this.fault(NP, sel & 0xfffc);
        this.setBusy(sel, true);
        this.loadFromDescriptor(TR, sel, lo, hi | 0x200);
        return;
      }
      case 4: case 5: {
        const sel = this.readRM16(modrm);
        this.setStatusFlags(ZF, this.verifySegment(sel, sub === 5) ? ZF : 0);
        return;
      }
      default: this.ud();
    }
  }

  /** VERR/VERW: readable/writable at the current privilege, without faulting. */
  private verifySegment(sel: number, write: boolean): boolean {
    const desc = this.tryReadDescriptor(sel);
    if (!desc) return false;
    const hi = desc[1];
    if ((hi & 0x1000) === 0) return false;
    const isCode = (hi & 0x800) !== 0;
    const conforming = isCode && (hi & 0x400) !== 0;
    const dpl = (hi >> 13) & 3;
    if (!conforming && (dpl < this.cpl || dpl < (sel & 3))) return false;
    if (write) return !isCode && (hi & 0x200) !== 0;
    return !isCode || (hi & 0x200) !== 0;
  }

  private tryReadDescriptor(sel: number): [number, number] | null {
    if ((sel & 0xfffc) === 0) return null;
    const limit = sel & 4 ? this.segLimit[LDTR] : this.gdtLimit;
    if (sel & 4 && (this.segAttr[LDTR] & 0x80) === 0) return null;
    if ((sel & 0xfff8) + 7 > limit) return null;
    return this.readDescriptor(sel);
  }

  private larLsl(lar: boolean): void {
    this.requireProtected();
    const modrm = this.fetch8();
    const sel = this.readRM16(modrm);
    const desc = this.tryReadDescriptor(sel);
    let ok = false;
    if (desc) {
      const [lo, hi] = desc;
      const type = (hi >> 8) & 0xf;
      const dpl = (hi >> 13) & 3;
      const conforming = (hi & 0x1c00) === 0x1c00;
      if (hi & 0x1000) ok = conforming || (dpl >= this.cpl && dpl >= (sel & 3));
      else {
        const allowed = lar ? [1, 2, 3, 4, 5, 9, 0xb, 0xc] : [1, 2, 3, 9, 0xb];
        ok = allowed.includes(type) && dpl >= this.cpl && dpl >= (sel & 3);
      }
      if (ok) {
        const reg = (modrm >> 3) & 7;
        const v = lar ? hi & 0xf0ff00 : X86Cpu.descLimit(lo, hi);
        if (this.o32) this.regs[reg] = v;
        else this.setReg16(reg, v);
      }
    }
    this.setStatusFlags(ZF, ok ? ZF : 0);
  }

  private group7(): void {
    const modrm = this.fetch8();
    const sub = (modrm >> 3) & 7;
    switch (sub) {
      case 0: case 1: {
        if (modrm >= 0xc0) this.ud();
        this.decodeEA(modrm);
        const lin = this.segWrite(this.eaSeg, this.eaOff, 6);
        this.probeWrite(lin, 6);
        const base = sub === 0 ? this.gdtBase : this.idtBase;
        this.wr16(lin, sub === 0 ? this.gdtLimit : this.idtLimit);
        this.wr32((lin + 2) | 0, this.o32 ? base : base & 0xffffff);
        return;
      }
      case 2: case 3: {
        if (modrm >= 0xc0) this.ud();
        if (this.cpl !== 0 || this.flags & VM) this.gp(0);
        this.decodeEA(modrm);
        const lin = this.segRead(this.eaSeg, this.eaOff, 6);
        const limit = this.rd16(lin);
        let base = this.rd32((lin + 2) | 0);
        if (!this.o32) base &= 0xffffff;
        if (sub === 2) {
          this.gdtBase = base;
          this.gdtLimit = limit;
        } else {
          this.idtBase = base;
          this.idtLimit = limit;
        }
        return;
      }
      case 4:
        if (modrm >= 0xc0 && this.o32) this.regs[modrm & 7] = this.cr0;
        else this.writeRM16(modrm, this.cr0 & 0xffff, false);
        return;
      case 6: {
        if (this.cpl !== 0 || (this.protectedMode && this.flags & VM)) this.gp(0);
        const v = this.readRM16(modrm);
        // LMSW can set PE but never clear it, and only touches PE MP EM TS.
        this.setCr0((this.cr0 & ~0xe) | (v & 0xf) | (this.cr0 & 1));
        return;
      }
      case 7: {
        if (modrm >= 0xc0) this.ud();
        if (this.cpl !== 0) this.gp(0);
        this.decodeEA(modrm);
        this.invalidatePage((this.segBase[this.eaSeg] + this.eaOff) | 0);
        return;
      }
      default: this.ud();
    }
  }

  private setCr0(v: number): void {
    if (v < 0 && (v & 1) === 0) this.gp(0); // PG without PE
    if ((v & (CR0_CD | CR0_NW)) === CR0_NW) this.gp(0); // NW without CD
    // Reserved bits are ignored; ET is fixed at 1.
    v = (v & CR0_DEFINED) | CR0_ET;
    const changed = this.cr0 ^ v;
    this.cr0 = v;
    if (changed & (0x80010001 | 0)) {
      this.flushTlb();
      if (changed & 1) {
        this.cpl = v & 1 ? this.segSel[CS] & 3 : 0;
        if ((v & 1) === 0) this.flags &= ~VM;
      }
      this.updateModes();
    } else if (changed & 0x40000) {
      this.updateAccessMask(); // AM
    }
  }

  private movControl(op: number): void {
    const modrm = this.fetch8();
    const n = (modrm >> 3) & 7;
    if (this.cpl !== 0 || (this.protectedMode && this.flags & VM)) this.gp(0);
    const rm = modrm & 7;
    if (op === 0x20) {
      const v = n === 0 ? this.cr0 : n === 2 ? this.cr2 : n === 3 ? this.cr3 : n === 4 ? this.cr4 : this.ud();
      this.regs[rm] = v;
    } else if (op === 0x22) {
      const v = this.regs[rm];
      if (n === 0) this.setCr0(v);
      else if (n === 2) this.cr2 = v;
      else if (n === 3) {
        this.cr3 = v & ~0xfe7;
        this.flushTlb();
      } else if (n === 4) {
        // Bits of features this CPU lacks (VME, PVI, PAE, MCE, PCE, OSFXSR...) are reserved: #GP.
        if (v & ~CR4_DEFINED) this.gp(0);
        if ((v ^ this.cr4) & 0x90) this.flushTlb();
        this.cr4 = v;
        this.updateBreakpoints();
      } else this.ud();
    } else {
      // DR4 and DR5 are DR6 and DR7 unless CR4.DE; with DR7.GD any access is a #DB fault (which clears GD).
      if ((n === 4 || n === 5) && this.cr4 & CR4_DE) this.ud();
      const dr = n === 4 ? 6 : n === 5 ? 7 : n;
      if (this.dr[7] & DR7_GD) {
        this.dr[6] |= DR6_BD;
        this.dr[7] &= ~DR7_GD;
        this.fault(DB);
      }
      if (op === 0x21) this.regs[rm] = this.dr[dr];
      else this.writeDebugRegister(dr, this.regs[rm]);
    }
  }

  private writeDebugRegister(n: number, v: number): void {
    if (n === 6) this.dr[6] = (v & DR6_WRITABLE) | DR6_FIXED;
    else if (n === 7) this.dr[7] = (v & DR7_WRITABLE) | DR7_FIXED;
    else this.dr[n] = v;
    if (n !== 6) this.updateBreakpoints();
  }

  // ---------------------------------------------------------------------------------------------------
  // Debug registers and single-stepping

  /** Decodes DR7 (and CR4.DE for I/O breakpoints) into the enabled breakpoints of each kind. */
  private updateBreakpoints(): void {
    let code = 0, data = 0, io = 0;
    const dr7 = this.dr[7];
    for (let n = 0; n < 4; n++) {
      if (((dr7 >> (2 * n)) & 3) === 0) continue;
      const rw = (dr7 >>> (16 + 4 * n)) & 3;
      if (rw === 0) code |= 1 << n;
      else if (rw === 2) io |= this.cr4 & CR4_DE ? 1 << n : 0; // undefined without CR4.DE
      else data |= 1 << n;
    }
    const watched = data !== 0 || this.dataBreakpoints !== 0;
    this.codeBreakpoints = code;
    this.dataBreakpoints = data;
    this.ioBreakpoints = io;
    // Pages that hold data breakpoints lose their fast TLB entries (translate leaves them out from now on).
    if (watched) this.flushTlb();
    this.attention = true;
  }

  /** Bytes covered by breakpoint n. */
  private breakpointLength(n: number): number {
    return BREAKPOINT_LENGTHS[(this.dr[7] >>> (18 + 4 * n)) & 3];
  }

  /** Whether breakpoint n covers any of the `size` bytes at `address`. */
  private breakpointCovers(n: number, address: number, size: number): boolean {
    const length = this.breakpointLength(n);
    const start = (this.dr[n] & -length) >>> 0;
    const a = address >>> 0;
    return a < start + length && start < a + size;
  }

  private watchesPage(linear: number): boolean {
    for (let n = 0; n < 4; n++) {
      if ((this.dataBreakpoints >> n) & 1 && this.dr[n] >>> 12 === linear >>> 12) return true;
    }
    return false;
  }

  private matchDataBreakpoints(lin: number, size: number, write: boolean): void {
    for (let n = 0; n < 4; n++) {
      // RW 01: writes only; RW 11: reads and writes.
      if ((this.dataBreakpoints >> n) & 1 && (write || ((this.dr[7] >>> (16 + 4 * n)) & 3) === 3) && this.breakpointCovers(n, lin, size)) {
        this.debugHits |= 1 << n;
      }
    }
  }

  private matchIoBreakpoints(port: number, size: number): void {
    for (let n = 0; n < 4; n++) if ((this.ioBreakpoints >> n) & 1 && this.breakpointCovers(n, port, size)) this.debugHits |= 1 << n;
  }

  /**
   * One instruction with the debug checks, while TF, RF or a breakpoint is set (compiled blocks do not run
   * then). Code breakpoints are faults before the instruction (unless RF); single-step (TF at the start of an
   * instruction that completes, except INT n) and data and I/O breakpoints are one #DB trap after it. After MOV
   * SS / POP SS they wait until after the next instruction. Priorities (SDM): these traps come before NMI and
   * INTR, which come before the next instruction's code breakpoint: serviceEvents runs between.
   */
  private stepWithDebug(): void {
    const eip = this.eip;
    const shadowed = this.ssLoaded;
    if (this.codeBreakpoints !== 0 && (this.flags & RF) === 0 && !shadowed) {
      const linear = (this.segBase[CS] + eip) | 0;
      let hits = 0;
      for (let n = 0; n < 4; n++) if ((this.codeBreakpoints >> n) & 1 && this.dr[n] === linear) hits |= 1 << n;
      if (hits !== 0) {
        this.instrStart = eip;
        this.dr[6] = (this.dr[6] & ~DR6_HITS) | hits;
        this.fault(DB);
      }
    }
    const singleStep = (this.flags & TF) !== 0;
    this.ssLoaded = this.softwareInterrupted = false;
    this.debugHits = 0;
    // RF lasts one instruction (IRET may set it again).
    this.flags &= ~RF;
    this.step();
    const traps = (shadowed ? this.heldDebugTraps : 0) | this.debugHits | (singleStep && !this.softwareInterrupted ? DR6_BS : 0);
    this.heldDebugTraps = 0;
    if (traps === 0) return;
    if (this.ssLoaded) {
      this.heldDebugTraps = traps;
      return;
    }
    const hits = traps & DR6_HITS;
    this.dr[6] = (hits !== 0 ? (this.dr[6] & ~DR6_HITS) | hits : this.dr[6]) | (traps & DR6_BS);
    this.raiseException(DB, -1);
  }

  /** RDTSC into EDX:EAX (the count stays far below 2^53, exact in a double). */
  rdtsc(): void {
    if (this.cr4 & 4 && this.cpl !== 0) this.gp(0);
    const tsc = Math.floor(this.clock.nowNs() * TSC_PER_NS) + this.tscOffset;
    this.regs[0] = tsc % 0x100000000 | 0;
    this.regs[2] = Math.floor(tsc / 0x100000000) | 0;
  }

  private readTsc(): bigint {
    return BigInt(Math.floor(this.clock.nowNs() * TSC_PER_NS)) + BigInt(this.tscOffset);
  }

  private rdmsr(index: number): void {
    let v: bigint;
    switch (index) {
      case MSR_TSC: v = this.readTsc(); break;
      case MSR_SYSENTER_CS: v = BigInt(this.sysenterCs); break;
      case MSR_SYSENTER_ESP: v = BigInt(this.sysenterEsp >>> 0); break;
      case MSR_SYSENTER_EIP: v = BigInt(this.sysenterEip >>> 0); break;
      case 0x8b: v = 0n; break; // microcode revision
      case MSR_APIC_BASE: if (this.apic === null) this.gp(0); v = BigInt(this.apic.baseMsr); break;
      case MSR_TSC_DEADLINE: if (this.apic === null) this.gp(0); v = BigInt(this.apic.tscDeadline); break;
      default: this.gp(0);
    }
    this.regs[0] = Number(v & 0xffffffffn) | 0;
    this.regs[2] = Number(v >> 32n) | 0;
  }

  private wrmsr(index: number, hi: number, lo: number): void {
    switch (index) {
      case MSR_TSC: {
        const want = (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
        this.tscOffset = Number(want - BigInt(Math.floor(this.clock.nowNs() * TSC_PER_NS)));
        return;
      }
      case MSR_SYSENTER_CS: this.sysenterCs = lo & 0xffff; return;
      case MSR_SYSENTER_ESP: this.sysenterEsp = lo; return;
      case MSR_SYSENTER_EIP: this.sysenterEip = lo; return;
      case 0x8b: return;
      case MSR_APIC_BASE:
        if (this.apic === null || !this.apic.writeBaseMsr(lo, hi)) this.gp(0);
        return;
      case MSR_TSC_DEADLINE: {
        if (this.apic === null) this.gp(0);
        const tsc = (hi >>> 0) * 0x100000000 + (lo >>> 0);
        this.apic.writeTscDeadline(tsc, (tsc - this.tscOffset) / TSC_PER_NS);
        return;
      }
      default: this.gp(0);
    }
  }

  private cpuid(): void {
    const r = this.regs;
    switch (r[0] >>> 0) {
      case 0:
        r[0] = 1;
        r[3] = 0x756e6547; // "Genu"
        r[2] = 0x49656e69; // "ineI"
        r[1] = 0x6c65746e; // "ntel"
        return;
      case 1:
        r[0] = CPUID_FAMILY_MODEL_STEPPING;
        r[3] = this.apic === null ? 0 : this.apic.initialId << 24;
        // No TSC-deadline bit (ECX 24) though the MSR works: Linux orders its LVT write with MFENCE (SSE2), which a
        // P6-class CPU lacks; like QEMU's qemu32 model, the guest then uses the one-shot APIC timer.
        r[1] = 0;
        r[2] = CPUID_FEATURES | (this.apic?.globallyEnabled ? CPUID_EDX_APIC : 0);
        return;
      default:
        r[0] = r[1] = r[2] = r[3] = 0;
    }
  }

  private sysenter(): void {
    if (!this.protectedMode) this.gp(0);
    const cs = this.sysenterCs & 0xfffc;
    if (cs === 0) this.gp(0);
    this.flags &= ~(VM | IF | RF);
    this.setCpl(0);
    this.setSegmentCache(CS, cs, 0, 0xffffffff, 0xc09b);
    this.setSegmentCache(SS, cs + 8, 0, 0xffffffff, 0xc093);
    this.regs[4] = this.sysenterEsp;
    this.eip = this.sysenterEip;
    this.updateModes();
  }

  private sysexit(): void {
    if (!this.protectedMode || this.cpl !== 0) this.gp(0);
    const cs = this.sysenterCs & 0xfffc;
    if (cs === 0) this.gp(0);
    this.setCpl(3);
    this.setSegmentCache(CS, (cs + 16) | 3, 0, 0xffffffff, 0xc0fb);
    this.setSegmentCache(SS, (cs + 24) | 3, 0, 0xffffffff, 0xc0f3);
    this.regs[4] = this.regs[1];
    this.eip = this.regs[2];
    this.updateModes();
  }

  // ---------------------------------------------------------------------------------------------------
  // x87 glue

  private fpuInstruction(op: number): void {
    if (this.cr0 & 0xc) this.fault(NM);
    const modrm = this.fetch8();
    let address = 0;
    if (modrm < 0xc0) {
      this.decodeEA(modrm);
      address = (this.segBase[this.eaSeg] + this.eaOff) | 0;
      // The widest x87 memory operand (FSAVE/FRSTOR, 108 bytes) bounds the segment check.
      this.segRead(this.eaSeg, this.eaOff, 1);
    }
    if (this.fpu.pendingException() && !X87.isNonWaiting(op, modrm)) {
      this.fpuError();
      return;
    }
    this.fpu.execute(op, modrm, address, this.o32);
  }

  private fpuWait(): void {
    if ((this.cr0 & 0xa) === 0xa) this.fault(NM);
    if (this.fpu.pendingException()) this.fpuError();
  }

  /** An unmasked x87 exception: #MF with CR0.NE, else FERR# to the interrupt controller (IRQ 13). */
  fpuError(): void {
    if (this.cr0 & 0x20) this.fault(16);
    this.onFerr(true);
  }

  /** For the FPU: the AX register (FNSTSW AX) and EFLAGS (FCOMI, FCMOV). */
  setAx(v: number): void {
    this.setReg16(0, v);
  }

  fpuSetFlags(mask: number, values: number): void {
    this.setStatusFlags(mask, values);
  }

  fpuCondition(cc: number): boolean {
    return this.condition(cc);
  }

  /** For the FPU's last instruction and operand pointers and the FSTENV/FSAVE layout. */
  get fpuRealMode(): boolean {
    return !this.protectedMode || (this.flags & VM) !== 0;
  }

  get fpuCs(): number {
    return this.segSel[CS];
  }

  get fpuIp(): number {
    return this.instrStart;
  }

  get fpuDs(): number {
    return this.segSel[this.eaSeg];
  }

  get fpuDataOffset(): number {
    return this.eaOff;
  }

  // ---------------------------------------------------------------------------------------------------
  // Run loop and pins

  setIntr(level: boolean): void {
    this.intrLine = level;
    if (level) {
      this.attention = true;
      if ((this.flags & IF) !== 0) this.halted = false;
    }
  }

  raiseNmi(): void {
    this.nmiPending = true;
    this.halted = false;
    this.attention = true;
  }

  requestExit(): void {
    this.exitRequested = true;
    this.attention = true;
  }

  /** Runs up to `maxInstructions`; see the class comment. Returns the number executed. */
  run(maxInstructions: number): number {
    this.stopReason = 'none';
    this.exitRequested = false;
    this.attention = true;
    let n = 0;
    // The block that ran last, while its successor may be reached through its link.
    let last: CompiledBlock | null = null;
    while (n < maxInstructions) {
      try {
        while (n < maxInstructions) {
          if (this.attention) {
            last = null;
            if (this.serviceEvents()) {
              this.instructionCount += n;
              this.runProgress = 0;
              return n;
            }
            if (this.debugStepping) {
              this.stepWithDebug();
              n++;
              continue;
            }
          }
          if (this.jit !== null) {
            const eip = this.eip;
            if (last !== null && last.nextEip === eip && last.nextEpoch === this.linkEpoch) {
              const block: CompiledBlock = last.next!;
              this.fetchEipLo = last.nextFetchLo;
              this.fetchEipHi = last.nextFetchHi;
              this.fetchDelta = last.nextFetchDelta;
              last = block;
              this.runProgress = n;
              n += block.run();
              continue;
            }
            if (eip < this.fetchEipLo || eip >= this.fetchEipHi) {
              // Entering another page (a far jump, an interrupt, a return): map it now, so that its block runs
              // instead of one interpreted instruction doing the mapping.
              this.instrStart = eip;
              this.mapFetchWindow();
            }
            if (eip >= this.fetchEipLo && eip < this.fetchEipHi) {
              const block = this.jit.lookup(this.fetchDelta + eip, eip, (this.cs32 ? MODE_CS32 : 0) | this.flatData);
              if (block !== undefined && block.lastByteEip >>> 0 <= this.segLimit[CS]) {
                if (last !== null) {
                  last.next = block;
                  last.nextEip = eip;
                  last.nextEpoch = this.linkEpoch;
                  last.nextFetchLo = this.fetchEipLo;
                  last.nextFetchHi = this.fetchEipHi;
                  last.nextFetchDelta = this.fetchDelta;
                }
                last = block;
                this.runProgress = n;
                n += block.run();
                continue;
              }
            }
          }
          last = null;
          this.runProgress = n;
          this.step();
          n++;
        }
      } catch (e) {
        if (e !== FAULT) throw e;
        last = null;
        this.eip = this.instrStart;
        this.raiseException(FAULT.vector, FAULT.errorCode);
        n++;
        this.attention = true;
      }
    }
    this.instructionCount += n;
    this.runProgress = 0;
    return n;
  }

  /**
   * Instructions executed so far, counting the current run() call up to the start of the block or instruction
   * now running: a device reading it during an instruction gets the same value on every run of the same guest.
   */
  executedInstructions(): number {
    return this.instructionCount + this.runProgress;
  }

  /**
   * Between instructions, when something may need attention: interrupt shadow, NMI, INTR, HLT, exit
   * requests. Returns true when run() must return. Clears `attention` once nothing is left to watch.
   */
  private serviceEvents(): boolean {
    if (this.exitRequested) {
      if (this.stopReason === 'none') this.stopReason = 'exit-request';
      return true;
    }
    // RF only holds back code breakpoints for one instruction: with none armed (the return from every page
    // fault, whose image carries RF) it is dropped here instead of stepping the next instruction interpreted.
    if ((this.flags & RF) !== 0 && this.codeBreakpoints === 0) this.flags &= ~RF;
    this.debugStepping = (this.flags & (TF | RF)) !== 0 || (this.codeBreakpoints | this.dataBreakpoints | this.ioBreakpoints | this.heldDebugTraps) !== 0;
    if (this.interruptShadow) {
      this.interruptShadow = false;
      // Look again before the instruction after the shadowed one.
      return false;
    }
    this.ssLoaded = false;
    if (this.nmiPending && !this.nmiBlocked) {
      this.nmiPending = false;
      this.externalInterrupt(2);
    } else if (this.intrLine && (this.flags & IF) !== 0) {
      this.externalInterrupt(this.interrupts.acknowledge() & 0xff);
    }
    if (this.halted) {
      this.stopReason = 'halt';
      return true;
    }
    // A pending INTR stays interesting while IF is clear (STI, POPF, IRET may set it without telling us).
    this.attention = this.intrLine || this.nmiPending || this.exitRequested || this.debugStepping;
    return false;
  }

  // ---------------------------------------------------------------------------------------------------
  // State

  saveState(): VersionedState {
    return CPU_STATE.save({
      registers: this.getRegisters(), dr: Array.from(this.dr, (v) => v >>> 0), cpl: this.cpl, halted: this.halted,
      intr: this.intrLine, nmiPending: this.nmiPending, nmiBlocked: this.nmiBlocked,
      interruptShadow: this.interruptShadow, ssLoaded: this.ssLoaded, heldDebugTraps: this.heldDebugTraps >>> 0,
      tscOffset: this.tscOffset, sysenterCs: this.sysenterCs, sysenterEsp: this.sysenterEsp >>> 0, sysenterEip: this.sysenterEip >>> 0,
      fpu: this.fpu.saveFields(),
    });
  }

  checkState(state: VersionedState): void {
    CPU_STATE.restore(this.id, state);
  }

  /** Restored last (after memory and devices): drops the TLB and every compiled block, which RAM may no longer match. */
  restoreState(state: VersionedState): void {
    const s = CPU_STATE.restore(this.id, state);
    this.setRegisters(s.registers);
    s.dr.forEach((v, i) => (this.dr[i] = v));
    this.updateBreakpoints();
    this.cpl = s.cpl;
    this.updateModes();
    ({
      halted: this.halted, intr: this.intrLine, nmiPending: this.nmiPending, nmiBlocked: this.nmiBlocked,
      interruptShadow: this.interruptShadow, ssLoaded: this.ssLoaded, heldDebugTraps: this.heldDebugTraps, tscOffset: this.tscOffset,
      sysenterCs: this.sysenterCs, sysenterEsp: this.sysenterEsp, sysenterEip: this.sysenterEip,
    } = s);
    this.fpu.loadFields(s.fpu);
    this.deliveringVector = -1;
    this.attention = true;
    this.jit?.clear();
    this.flushTlb();
  }
}
