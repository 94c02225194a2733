import { AF, CF, CONDITIONS, DF, NO_FLAGS, OF, PF, SF, STATUS, ZF, applyEffects, doubleShiftEffect, effect, shiftEffect, type FlagEffect, type ShiftOp } from './flags.js';
import type { Random } from './random.js';
import { x87Unit } from './x87-generator.js';

/**
 * Random instruction sequences for the differential tester. A sequence starts from a known state (registers,
 * EFLAGS, a 128-byte data buffer `buf`) and is a list of units; the program dumps the machine state after each
 * unit. A unit is one to a few instructions, or a small loop or branch: several instructions between dumps let
 * compiled blocks drop flags a later instruction replaces, and branches exercise their Jcc fusing.
 * Every memory operand lies inside `buf` and every ESP change is a push or pop, so a unit can be dropped while
 * shrinking without the program faulting; divisions are built so they never raise #DE.
 */
export const BUFFER_BYTES = 128;

export interface Unit {
  /** Assembly lines (AT&T syntax); labels are numeric and local to the unit. */
  readonly lines: readonly string[];
  /** What each instruction does to the flags, in the order they run (a loop body is listed twice). */
  readonly effects: readonly FlagEffect[];
  /** Instructions in the unit's text. */
  readonly instructions: number;
}

/** A starting point: EAX, ECX, EDX, EBX, (ESP: set by the program), EBP, ESI, EDI; EFLAGS; buf's content. */
export interface InitialState {
  readonly registers: readonly number[];
  readonly eflags: number;
  readonly buffer: Uint8Array;
}

/** Units run from each of several initial states (the same code, so compiled blocks are reused). */
export interface Sequence {
  readonly states: readonly InitialState[];
  readonly units: readonly Unit[];
  /** The state is dumped after every this many units (and after the last): 1 locates a difference best; more lets compiled blocks span units. */
  readonly dumpEvery: number;
}

export interface GeneratorOptions {
  readonly unitsPerSequence: number;
  readonly statesPerSequence: number;
  readonly dumpEvery: number;
  readonly x87: boolean;
}

type Width = 8 | 16 | 32;
const WIDTHS: readonly Width[] = [8, 16, 32];
const SUFFIX = { 8: 'b', 16: 'w', 32: 'l' } as const;
const R32 = ['%eax', '%ecx', '%edx', '%ebx', '%esp', '%ebp', '%esi', '%edi'];
const R16 = ['%ax', '%cx', '%dx', '%bx', '%sp', '%bp', '%si', '%di'];
const R8 = ['%al', '%cl', '%dl', '%bl', '%ah', '%ch', '%dh', '%bh'];
const EAX = 0, ECX = 1, EDX = 2, EBX = 3, ESP = 4, EBP = 5, ESI = 6, EDI = 7;
const NAMES = { 8: R8, 16: R16, 32: R32 } as const;
/** The 32-bit register an 8-bit register number belongs to (AH is part of EAX). */
const full = (width: Width, index: number) => (width === 8 ? index & 3 : index);

export const hex = (v: number) => '0x' + (v >>> 0).toString(16);
/** An immediate as a signed decimal of its width, so the assembler picks the sign-extended imm8 form when it fits. */
const imm = (v: number, width: Width) => '$' + (width === 32 ? v | 0 : (v << (32 - width)) >> (32 - width));
/** A memory operand `by` bytes further on. */
function displaced(operand: string, by: number): string {
  const [, seg = '', disp = '', registers = ''] = /^(%[a-z]s:)?([^(]*)(\(.*\))?$/.exec(operand)!;
  return `${seg}${disp ? `${disp}+${by}` : by}${registers}`;
}
const mask = (v: number, width: Width) => (width === 32 ? v >>> 0 : v & ((1 << width) - 1));

/** Builds one unit: instructions with their flag effects, in conditional or looping parts. */
export class UnitBuilder {
  readonly lines: string[] = [];
  readonly effects: FlagEffect[] = [];
  instructions = 0;
  private skippable = false;

  constructor(private readonly undefinedAtStart: number) {}

  /** Flags undefined at this point (as if everything emitted so far ran once). */
  get undefinedNow(): number {
    return applyEffects(this.undefinedAtStart, this.effects) ?? STATUS;
  }

  emit(line: string, fx: FlagEffect = NO_FLAGS): void {
    this.lines.push('  ' + line);
    this.effects.push(this.skippable ? { ...fx, maySkip: true } : fx);
    this.instructions++;
  }

  label(n: number): void {
    this.lines.push(`${n}:`);
  }

  /** Instructions a branch may jump over. */
  conditional(body: () => void): void {
    const outer = this.skippable;
    this.skippable = true;
    body();
    this.skippable = outer;
  }

  /** A loop body: its flag effects are listed twice, so a flag it reads must be defined on every iteration. */
  loopBody(body: () => void): void {
    const start = this.effects.length;
    body();
    this.effects.push(...this.effects.slice(start));
  }
}

/** A family of instructions; false when it cannot be generated under the current register constraints. */
type Family = (u: UnitBuilder) => boolean;
type FamilyName = 'alu2' | 'alu1' | 'shift' | 'doubleShift' | 'multiply' | 'divide' | 'bcd' | 'bits' | 'exchange' | 'moves'
  | 'conditionCodes' | 'flagOps' | 'stack' | 'strings';

export class SequenceGenerator {
  /** 32-bit registers that must not be written (bit per register number): ESP always, loop counters. */
  private avoid = 1 << ESP;

  constructor(private readonly rng: Random, private readonly options: GeneratorOptions) {}

  sequence(): Sequence {
    const states = Array.from({ length: this.options.statesPerSequence }, () => this.state());
    const units: Unit[] = [];
    let undef = 0;
    while (units.length < this.options.unitsPerSequence) {
      const u = new UnitBuilder(undef);
      this.avoid = 1 << ESP;
      const parts = this.rng.weighted<number>([[1, 6], [2, 3], [3, 1], [this.rng.between(4, 8), 1]]);
      for (let i = 0; i < parts; i++) this.top(u);
      const after = applyEffects(undef, u.effects);
      if (after === null || u.instructions === 0) continue;
      undef = after;
      units.push({ lines: u.lines, effects: u.effects, instructions: u.instructions });
    }
    return { states, units, dumpEvery: this.options.dumpEvery };
  }

  private state(): InitialState {
    const rng = this.rng;
    const registers = Array.from({ length: 8 }, () => rng.operand());
    const buffer = new Uint8Array(BUFFER_BYTES);
    const words = new DataView(buffer.buffer);
    for (let i = 0; i < BUFFER_BYTES; i += 4) words.setUint32(i, rng.operand(), true);
    return { registers, eflags: (rng.u32() & STATUS) | (rng.chance(0.2) ? DF : 0), buffer };
  }

  // --- helpers

  private canWrite(...regs: number[]): boolean {
    return regs.every((r) => !((this.avoid >> r) & 1));
  }

  /** A register name of `width`; `write`: one the unit may change. */
  private reg(width: Width, write: boolean): string {
    return NAMES[width][this.regIndex(width, write)]!;
  }

  private regIndex(width: Width, write: boolean, except = -1): number {
    for (;;) {
      const i = this.rng.below(8);
      if (i === except) continue;
      if (write && !this.canWrite(full(width, i))) continue;
      return i;
    }
  }

  private width(): Width {
    return this.rng.pick(WIDTHS);
  }

  /** An operand value: the register's current content (nothing emitted), or an edge value loaded first. */
  private preload(u: UnitBuilder, reg: string, width: Width): void {
    const index = NAMES[width].indexOf(reg);
    if (index < 0 || !this.canWrite(full(width, index)) || !this.rng.chance(0.3)) return;
    u.emit(`mov${SUFFIX[width]} ${imm(mask(this.rng.operand(), width), width)}, ${reg}`);
  }

  /**
   * A memory operand of `size` bytes inside buf; base and index registers are loaded just before, and stay
   * out of bounds for writes until the current family's instruction is emitted.
   */
  private mem(u: UnitBuilder, size: number): string {
    const rng = this.rng;
    const seg = rng.chance(0.1) ? rng.pick(['%ss:', '%es:', '%ds:']) : '';
    const offset = rng.below(BUFFER_BYTES - size + 1);
    const form = rng.below(5);
    if (form < 2) return `${seg}buf+${offset}`;
    const base = this.regIndex(32, true);
    this.avoid |= 1 << base;
    if (form === 2) {
      const disp = rng.chance(0.4) ? 0 : rng.between(-offset, BUFFER_BYTES - size - offset);
      u.emit(`leal buf+${offset - disp}, ${R32[base]}`);
      return `${seg}${disp === 0 ? '' : disp}(${R32[base]})`;
    }
    const index = this.regIndex(32, true);
    this.avoid |= 1 << index;
    const scale = rng.pick([1, 2, 4, 8]);
    const k = rng.between(-4, 4);
    u.emit(`movl $${k}, ${R32[index]}`);
    if (form === 3) return `${seg}buf+${offset - k * scale}(,${R32[index]},${scale})`;
    u.emit(`leal buf+${offset - k * scale}, ${R32[base]}`);
    return `${seg}(${R32[base]},${R32[index]},${scale})`;
  }

  /** Makes `flags` defined before an instruction that reads them. */
  private ensureDefined(u: UnitBuilder, flags: number): void {
    const missing = flags & u.undefinedNow;
    if (!missing) return;
    const rng = this.rng;
    const choice = rng.below(4);
    if (missing === CF && choice === 0) u.emit(rng.pick(['stc', 'clc']), effect(0, CF));
    else if (!(missing & OF) && choice === 1 && this.canWrite(EAX)) {
      u.emit(`movb $${hex(rng.u32() & 0xff)}, %ah`);
      u.emit('sahf', effect(0, STATUS & ~OF));
    } else if (choice === 2) {
      u.emit(`pushl $${hex((rng.u32() & STATUS) | (rng.chance(0.2) ? DF : 0) | 2)}`);
      u.emit('popfl', effect(0, STATUS));
    } else u.emit(`cmpl $${hex(rng.operand())}, ${R32[rng.below(8)]}`, effect(0, STATUS));
  }

  // --- unit structure

  private static readonly SIMPLE: readonly (readonly [FamilyName, number])[] = [
    ['alu2', 8], ['alu1', 3], ['shift', 5], ['doubleShift', 2], ['multiply', 3], ['divide', 2], ['bcd', 2],
    ['bits', 3], ['exchange', 3], ['moves', 4], ['conditionCodes', 3], ['flagOps', 1], ['stack', 2], ['strings', 3],
  ];

  /** Families that leave ESP as it was (every family honours `avoid`, so loop counters stay intact). */
  private static readonly NESTED = SequenceGenerator.SIMPLE.filter(([name]) => name !== 'stack');

  private top(u: UnitBuilder): void {
    const rng = this.rng;
    if (this.options.x87 && rng.chance(0.15)) {
      x87Unit(u, rng);
      return;
    }
    if (rng.chance(0.2)) this.control(u);
    else this.simple(u, false);
  }

  /** One instruction family's output; `nested`: inside a loop, call or ENTER/LEAVE, where the stack must stay put. */
  private simple(u: UnitBuilder, nested: boolean): void {
    const choices = nested ? SequenceGenerator.NESTED : SequenceGenerator.SIMPLE;
    for (;;) if (this.family(u, this.rng.weighted(choices))) return;
  }

  /** Runs a family; registers it reserves for its memory operand are free again afterwards. */
  private family(u: UnitBuilder, name: FamilyName): boolean {
    const saved = this.avoid;
    const done = (this[name] as Family).call(this, u);
    this.avoid = saved;
    return done;
  }

  private control(u: UnitBuilder): void {
    const rng = this.rng;
    const cond = () => rng.pick(CONDITIONS);
    switch (rng.below(8)) {
      case 0: { // forward branch over one instruction
        if (rng.chance(0.7)) this.simple(u, false);
        const c = cond();
        this.ensureDefined(u, c.reads);
        u.emit(`${rng.chance(0.3) ? '{disp32} ' : ''}j${c.name} 1f`, effect(c.reads, 0));
        u.conditional(() => this.simple(u, false));
        u.label(1);
        return;
      }
      case 1: { // if/else
        this.family(u, 'alu2');
        const c = cond();
        this.ensureDefined(u, c.reads);
        u.emit(`j${c.name} 1f`, effect(c.reads, 0));
        u.conditional(() => {
          this.simple(u, false);
          u.emit('jmp 2f');
        });
        u.label(1);
        u.conditional(() => this.simple(u, false));
        u.label(2);
        return;
      }
      case 2: { // LOOP/LOOPE/LOOPNE, with JECXZ guarding a zero count; with an address-size prefix they count CX
        const n = rng.between(0, 5);
        const cx = rng.chance(0.25);
        const prefix = cx ? 'addr16 ' : '';
        u.emit(`movl $${hex(cx ? (rng.u32() & 0xffff0000) | n : n)}, %ecx`);
        u.emit(cx ? 'jcxz 2f' : 'jecxz 2f');
        this.avoid |= 1 << ECX;
        u.conditional(() => {
          u.label(1);
          u.loopBody(() => {
            const parts = rng.between(1, 3);
            for (let i = 0; i < parts; i++) this.simple(u, true);
            const kind = rng.pick(['loop', 'loope', 'loopne']);
            if (kind !== 'loop') this.ensureDefined(u, ZF);
            u.emit(`${prefix}${kind} 1b`, effect(kind === 'loop' ? 0 : ZF, 0));
          });
        });
        u.label(2);
        this.avoid &= ~(1 << ECX);
        return;
      }
      case 3: { // a counted loop closed by DEC/SUB/CMP and a conditional jump
        const counter = rng.pick([EBX, ESI, EDI, EBP, ECX]);
        const n = rng.between(1, 5);
        const up = rng.chance(0.4);
        u.emit(`movl $${up ? 0 : n}, ${R32[counter]}`);
        this.avoid |= 1 << counter;
        u.label(1);
        u.loopBody(() => {
          const parts = rng.between(1, 3);
          for (let i = 0; i < parts; i++) this.simple(u, true);
          if (up) {
            u.emit(`incl ${R32[counter]}`, effect(0, STATUS & ~CF));
            u.emit(`cmpl $${n}, ${R32[counter]}`, effect(0, STATUS));
            u.emit(`j${rng.pick(['b', 'l', 'ne'])} 1b`, effect(SF | OF | CF | ZF, 0));
          } else {
            if (rng.chance(0.5)) u.emit(`decl ${R32[counter]}`, effect(0, STATUS & ~CF));
            else u.emit(`subl $1, ${R32[counter]}`, effect(0, STATUS));
            const c = rng.pick(CONDITIONS.filter((x) => x.name === 'ne' || x.name === 'g' || x.name === 'a'));
            u.emit(`j${c.name} 1b`, effect(c.reads, 0));
          }
        });
        this.avoid &= ~(1 << counter);
        return;
      }
      case 4: { // a local call, direct or through a register or memory; RET may release arguments
        const how = rng.below(3);
        if (how === 0) u.emit('call 1f');
        else if (how === 1) {
          const r = this.regIndex(32, true);
          u.emit(`leal 1f, ${R32[r]}`);
          u.emit(`call *${R32[r]}`);
        } else {
          u.emit('movl $1f, buf+124');
          u.emit('call *buf+124');
        }
        u.emit('jmp 2f');
        u.label(1);
        this.simple(u, true);
        u.emit(rng.pick(['ret', 'ret', `ret $${rng.pick([2, 4, 8])}`]));
        u.label(2);
        return;
      }
      case 7: { // an indirect jump over an instruction
        const r = this.regIndex(32, true);
        u.emit(`leal 1f, ${R32[r]}`);
        if (rng.chance(0.5)) u.emit(`jmp *${R32[r]}`);
        else {
          u.emit(`movl ${R32[r]}, buf+120`);
          u.emit('jmp *buf+120');
        }
        u.conditional(() => this.simple(u, false));
        u.label(1);
        return;
      }
      case 5: { // JECXZ over an instruction
        u.emit(`movl $${rng.chance(0.5) ? 0 : rng.operand()}, %ecx`);
        u.emit('jecxz 1f');
        u.conditional(() => this.simple(u, false));
        u.label(1);
        return;
      }
      default: { // SETcc/CMOVcc right after the instruction that sets the flags (fused compare in compiled code)
        this.family(u, 'alu2');
        this.family(u, 'conditionCodes');
        return;
      }
    }
  }

  // --- instruction families (each returns false when it cannot run under the current `avoid`)

  alu2(u: UnitBuilder): boolean {
    const rng = this.rng;
    const op = rng.pick(['add', 'adc', 'sub', 'sbb', 'and', 'or', 'xor', 'cmp', 'test']);
    const w = this.width();
    const s = SUFFIX[w];
    const fx = op === 'adc' || op === 'sbb' ? effect(CF, STATUS)
      : op === 'and' || op === 'or' || op === 'xor' || op === 'test' ? effect(0, STATUS & ~AF, AF) : effect(0, STATUS);
    const write = op !== 'cmp' && op !== 'test';
    const value = () => imm(mask(rng.chance(0.5) ? rng.between(-128, 127) : rng.operand(), w), w);
    let line: string;
    switch (rng.below(7)) {
      case 0: line = `${op}${s} ${this.reg(w, false)}, ${this.reg(w, write)}`; break;
      case 1: line = `${op === 'test' ? '' : '{load} '}${op}${s} ${this.reg(w, false)}, ${this.reg(w, write)}`; break;
      case 2: { const m = this.mem(u, w / 8); line = `${op}${s} ${this.reg(w, false)}, ${m}`; break; }
      case 3: { const m = this.mem(u, w / 8); line = `${op}${s} ${m}, ${this.reg(w, write)}`; break; }
      case 4: { const m = this.mem(u, w / 8); line = `${op}${s} ${value()}, ${m}`; break; }
      case 5: {
        if (write && !this.canWrite(EAX)) return false;
        line = `${op}${s} ${value()}, ${NAMES[w][0]}`;
        break;
      }
      default: {
        if (w === 8 && op !== 'test' && rng.chance(0.3)) {
          // 0x82: the 8-bit immediate group's alias of 0x80, valid outside 64-bit mode.
          const ext = ['add', 'or', 'adc', 'sbb', 'and', 'sub', 'xor', 'cmp'].indexOf(op);
          const r = this.regIndex(8, write);
          const v = rng.u32() & 0xff;
          line = `.byte 0x82, ${hex(0xc0 | (ext << 3) | r)}, ${hex(v)}  # ${op}b $${hex(v)}, ${R8[r]}`;
        } else line = `${op}${s} ${value()}, ${this.reg(w, write)}`;
      }
    }
    this.ensureDefined(u, fx.reads);
    u.emit(line, fx);
    return true;
  }

  alu1(u: UnitBuilder): boolean {
    const rng = this.rng;
    const op = rng.pick(['inc', 'dec', 'neg', 'not']);
    const w = this.width();
    const target = rng.chance(0.3) ? this.mem(u, w / 8) : this.reg(w, true);
    this.preload(u, target, w);
    u.emit(`${op}${SUFFIX[w]} ${target}`, op === 'not' ? NO_FLAGS : op === 'neg' ? effect(0, STATUS) : effect(0, STATUS & ~CF));
    return true;
  }

  private count(width: Width): number {
    return this.rng.pick([0, 1, 1, 2, width - 1, width, width + 1, 31, 32, 33, 63, 64, 255, this.rng.below(256)]);
  }

  shift(u: UnitBuilder): boolean {
    const rng = this.rng;
    const op = rng.pick<ShiftOp>(['shl', 'sal', 'shr', 'sar', 'rol', 'ror', 'rcl', 'rcr']);
    const ext = { rol: 0, ror: 1, rcl: 2, rcr: 3, shl: 4, sal: 4, shr: 5, sar: 7 }[op];
    const w = this.width();
    const s = SUFFIX[w];
    const form = rng.below(5);
    let count = 1, line: string;
    if (form === 0) {
      const target = rng.chance(0.3) ? this.mem(u, w / 8) : this.reg(w, true);
      line = `${op}${s} ${target}`;
    } else if (form === 1) {
      // The imm8 encoding (C0/C1) with a count of 1, which assemblers replace by D0/D1; /6 is SHL's alias.
      const r = this.regIndex(w, true);
      count = rng.chance(0.7) ? 1 : this.count(w);
      const e = op === 'shl' && rng.chance(0.3) ? 6 : ext;
      const bytes = [...(w === 16 ? [0x66] : []), w === 8 ? 0xc0 : 0xc1, 0xc0 | (e << 3) | r, count].map(hex).join(', ');
      line = `.byte ${bytes}  # ${e === 6 ? '(/6) ' : ''}${op}${s} $${count}, ${NAMES[w][r]}`;
    } else if (form === 2 || !this.canWrite(ECX)) {
      count = this.count(w);
      const target = rng.chance(0.3) ? this.mem(u, w / 8) : this.reg(w, true);
      this.preload(u, target, w);
      line = `${op}${s} $${count}, ${target}`;
    } else {
      count = this.count(w);
      this.avoid |= 1 << ECX; // CL holds the count
      const target = rng.chance(0.3) ? this.mem(u, w / 8) : this.reg(w, true);
      this.preload(u, target, w);
      u.emit(`movb $${count}, %cl`);
      line = `${op}${s} %cl, ${target}`;
    }
    const fx = shiftEffect(op, w, count);
    this.ensureDefined(u, fx.reads);
    u.emit(line, fx);
    return true;
  }

  doubleShift(u: UnitBuilder): boolean {
    const rng = this.rng;
    const op = rng.pick(['shld', 'shrd']);
    const w = rng.pick<Width>([16, 32]);
    let count = this.count(w);
    if (w === 16 && (count & 31) > 16) count &= 15; // larger counts leave a 16-bit result undefined
    const byCl = rng.chance(0.5) && this.canWrite(ECX);
    if (byCl) this.avoid |= 1 << ECX;
    const target = rng.chance(0.3) ? this.mem(u, w / 8) : this.reg(w, true);
    const source = this.reg(w, false);
    if (byCl) u.emit(`movb $${count}, %cl`);
    u.emit(`${op}${SUFFIX[w]} ${byCl ? '%cl' : '$' + count}, ${source}, ${target}`, doubleShiftEffect(count));
    return true;
  }

  multiply(u: UnitBuilder): boolean {
    const rng = this.rng;
    const fx = effect(0, CF | OF, SF | ZF | AF | PF);
    const w = this.width();
    const s = SUFFIX[w];
    const form = rng.below(4);
    const source = () => {
      if (rng.chance(0.3)) return this.mem(u, w / 8);
      const r = this.reg(w, false);
      this.preload(u, r, w);
      return r;
    };
    if (form === 0 || w === 8) {
      if (!this.canWrite(EAX, EDX)) return false;
      const src = source();
      this.preload(u, NAMES[w][0]!, w);
      u.emit(`${rng.pick(['mul', 'imul'])}${s} ${src}`, fx);
    } else if (form === 1) {
      const src = source();
      u.emit(`imul${s} ${src}, ${this.reg(w, true)}`, fx);
    } else {
      const src = source();
      const value = form === 2 ? rng.between(-128, 127) : mask(rng.operand(), w);
      u.emit(`imul${s} ${imm(value, w)}, ${src}, ${this.reg(w, true)}`, fx);
    }
    return true;
  }

  /** DIV/IDIV with a dividend built from a chosen quotient and remainder, so the quotient always fits. */
  divide(u: UnitBuilder): boolean {
    if (!this.canWrite(EAX, EDX)) return false;
    const rng = this.rng;
    const w = this.width();
    const signed = rng.chance(0.5);
    const bits = BigInt(w);
    const wrap = (v: bigint) => BigInt.asUintN(w, v);
    let d = BigInt(mask(rng.operand(), w));
    if (signed) d = BigInt.asIntN(w, d);
    if (d === 0n) d = 1n;
    let q = BigInt(mask(rng.operand(), w));
    if (signed) q = BigInt.asIntN(w, q);
    const absD = d < 0n ? -d : d;
    let r = BigInt(Math.floor(Number(absD - 1n) * (rng.u32() / 2 ** 32)));
    if (r >= absD) r = absD - 1n;
    if (signed && q * d < 0n) r = -r;
    if (signed && q * d === 0n && rng.chance(0.5)) r = -r;
    const dividend = BigInt.asUintN(2 * w, q * d + r);
    const op = signed ? 'idiv' : 'div';
    const s = SUFFIX[w];
    let divisor: string;
    const saved = this.avoid;
    this.avoid |= (1 << EAX) | (1 << EDX);
    if (rng.chance(0.3)) {
      divisor = this.mem(u, w / 8);
      u.emit(`mov${s} $${hex(Number(wrap(d)))}, ${divisor}`);
    } else {
      divisor = this.reg(w, true);
      u.emit(`mov${s} $${hex(Number(wrap(d)))}, ${divisor}`);
    }
    this.avoid = saved;
    if (w === 8) u.emit(`movw $${hex(Number(dividend))}, %ax`);
    else {
      const low = Number(dividend & ((1n << bits) - 1n)), high = Number(dividend >> bits);
      u.emit(`mov${s} $${hex(low)}, ${NAMES[w][EAX]}`);
      u.emit(`mov${s} $${hex(high)}, ${NAMES[w][EDX]}`);
    }
    u.emit(`${op}${s} ${divisor}`, effect(0, 0, STATUS));
    return true;
  }

  bcd(u: UnitBuilder): boolean {
    if (!this.canWrite(EAX)) return false;
    const rng = this.rng;
    const op = rng.pick(['daa', 'das', 'aaa', 'aas', 'aam', 'aad']);
    if (rng.chance(0.5)) u.emit(`movw $${hex(rng.u32() & 0xffff)}, %ax`);
    if (op === 'daa' || op === 'das') {
      this.ensureDefined(u, CF | AF);
      u.emit(op, effect(CF | AF, CF | AF | SF | ZF | PF, OF));
    } else if (op === 'aaa' || op === 'aas') {
      this.ensureDefined(u, AF);
      u.emit(op, effect(AF, AF | CF, OF | SF | ZF | PF));
    } else {
      // AAM 0 raises #DE: the base is never 0.
      const base = rng.pick([10, 10, 16, 1, 2, 7, 255, op === 'aad' ? 0 : 3, rng.between(1, 255)]);
      u.emit(base === 10 && rng.chance(0.5) ? op : `${op} $${base}`, effect(0, SF | ZF | PF, OF | AF | CF));
    }
    return true;
  }

  bits(u: UnitBuilder): boolean {
    const rng = this.rng;
    const w = rng.pick<Width>([16, 32]);
    const s = SUFFIX[w];
    const kind = rng.below(5);
    if (kind === 0) {
      // BSF/BSR leave the destination undefined for a zero source: set a bit first.
      const source = rng.chance(0.3) ? this.mem(u, w / 8) : this.reg(w, true);
      u.emit(`or${s} $${hex(1 << rng.below(w))}, ${source}`, effect(0, STATUS & ~AF, AF));
      u.emit(`${rng.pick(['bsf', 'bsr'])}${s} ${source}, ${this.reg(w, true)}`, effect(0, ZF, STATUS & ~ZF));
      return true;
    }
    if (kind === 1) {
      u.emit(`bswap ${this.reg(32, true)}`);
      return true;
    }
    const op = rng.pick(['bt', 'bts', 'btr', 'btc']);
    const fx = effect(0, CF, OF | SF | AF | PF);
    const write = op !== 'bt';
    if (kind === 2) u.emit(`${op}${s} $${rng.below(256)}, ${this.reg(w, write)}`, fx);
    else if (kind === 3) u.emit(`${op}${s} $${rng.below(256)}, ${this.mem(u, w / 8)}`, fx);
    else if (rng.chance(0.5)) u.emit(`${op}${s} ${this.reg(w, false)}, ${this.reg(w, write)}`, fx);
    else {
      // A register bit offset addresses memory relative to the operand: keep it within buf.
      const r = this.regIndex(w, true, ESP);
      u.emit(`mov${s} $${rng.between(-512, 511)}, ${NAMES[w][r]}`);
      u.emit(`${op}${s} ${NAMES[w][r]}, buf+64`, fx);
    }
    return true;
  }

  exchange(u: UnitBuilder): boolean {
    const rng = this.rng;
    const w = this.width();
    const s = SUFFIX[w];
    switch (rng.below(5)) {
      case 4: {
        if (!this.canWrite(EAX, EDX)) return false;
        this.avoid |= (1 << EAX) | (1 << EDX);
        const target = this.mem(u, 8);
        if (rng.chance(0.4)) {
          // The equal case: EDX:EAX = the memory operand, so ECX:EBX is stored.
          u.emit(`movl ${target}, %eax`);
          u.emit(`movl ${displaced(target, 4)}, %edx`);
        }
        // qemu-i386 7.2 computes the other flags from stale lazy state when the flags were last set by an
        // operation (pushf then shows garbage, IOPL included, and qemu aborts): start from POPF's flags.
        u.emit(`pushl $${hex((rng.u32() & STATUS) | 2)}`);
        u.emit('popfl', effect(0, STATUS));
        u.emit(`cmpxchg8b ${target}`, effect(0, ZF));
        return true;
      }
      case 0: u.emit(`xchg${s} ${this.reg(w, true)}, ${this.reg(w, true)}`); return true;
      case 1: { const m = this.mem(u, w / 8); u.emit(`xchg${s} ${this.reg(w, true)}, ${m}`); return true; }
      case 2: {
        if (!this.canWrite(EAX)) return false;
        const target = rng.chance(0.4) ? this.mem(u, w / 8) : this.reg(w, true);
        if (rng.chance(0.4) && this.canWrite(EAX)) u.emit(`mov${s} ${target}, ${NAMES[w][EAX]}`); // the equal case: the store happens
        u.emit(`cmpxchg${s} ${this.reg(w, true)}, ${target}`, effect(0, STATUS));
        return true;
      }
      default: {
        // XADD with the same register as both operands is a known defect fixed elsewhere.
        const src = this.regIndex(w, true);
        const target = rng.chance(0.4) ? this.mem(u, w / 8) : NAMES[w][this.regIndex(w, true, src)]!;
        if (w === 8 && target.startsWith('%') && (NAMES[8].indexOf(target) & 3) === (src & 3)) return false;
        u.emit(`xadd${s} ${NAMES[w][src]}, ${target}`, effect(0, STATUS));
        return true;
      }
    }
  }

  moves(u: UnitBuilder): boolean {
    const rng = this.rng;
    switch (rng.below(6)) {
      case 0: {
        const [op, from, to] = rng.pick([['movzbl', 8, 32], ['movzbw', 8, 16], ['movzwl', 16, 32], ['movsbl', 8, 32], ['movsbw', 8, 16], ['movswl', 16, 32]] as const);
        const src = rng.chance(0.3) ? this.mem(u, from / 8) : this.reg(from, false);
        u.emit(`${op} ${src}, ${this.reg(to, true)}`);
        return true;
      }
      case 1: {
        const op = rng.pick(['cbtw', 'cwtl', 'cwtd', 'cltd']);
        if (!this.canWrite(EAX, EDX)) return false;
        this.preload(u, op === 'cbtw' ? '%al' : op === 'cltd' || op === 'cwtl' ? '%eax' : '%ax', op === 'cbtw' ? 8 : op === 'cwtd' ? 16 : 32);
        u.emit(op);
        return true;
      }
      case 2: { // LEA computes an address without touching memory: any registers, 16- and 32-bit addressing
        const w = rng.pick<Width>([16, 32]);
        const disp = rng.pick([0, rng.between(-128, 127), rng.operand() | 0]);
        let address: string;
        if (rng.chance(0.25)) {
          const [b, i] = rng.pick([['%bx', '%si'], ['%bx', '%di'], ['%bp', '%si'], ['%bp', '%di'], ['%si', ''], ['%di', ''], ['%bx', ''], ['%bp', '']]);
          address = `${(disp << 16) >> 16}(${b}${i ? ',' + i : ''})`;
        } else {
          const base = rng.chance(0.8) ? R32[rng.below(8)] : '';
          const index = rng.chance(0.6) ? R32[rng.pick([0, 1, 2, 3, 5, 6, 7])] : '';
          address = base || index ? `${disp}(${base}${index ? `,${index},${rng.pick([1, 2, 4, 8])}` : ''})` : `${disp}`;
        }
        u.emit(`lea${SUFFIX[w]} ${address}, ${this.reg(w, true)}`);
        return true;
      }
      case 3: {
        const w = this.width();
        const s = SUFFIX[w];
        const form = rng.below(4);
        if (form === 0) { const m = this.mem(u, w / 8); u.emit(`mov${s} ${this.reg(w, false)}, ${m}`); }
        else if (form === 1) { const m = this.mem(u, w / 8); u.emit(`mov${s} ${m}, ${this.reg(w, true)}`); }
        else if (form === 2) { const m = this.mem(u, w / 8); u.emit(`mov${s} ${imm(mask(rng.operand(), w), w)}, ${m}`); }
        else {
          // The moffs forms (A0-A3): accumulator to or from an absolute address.
          if (!this.canWrite(EAX)) return false;
          const at = `buf+${rng.below(BUFFER_BYTES - w / 8 + 1)}`;
          u.emit(rng.chance(0.5) ? `mov${s} ${at}, ${NAMES[w][0]}` : `mov${s} ${NAMES[w][0]}, ${at}`);
        }
        return true;
      }
      case 4: {
        if (!this.canWrite(EAX, EBX)) return false;
        const index = rng.below(BUFFER_BYTES);
        u.emit(`leal buf+${rng.below(BUFFER_BYTES - index)}, %ebx`);
        u.emit(`movb $${index}, %al`);
        u.emit('xlatb');
        return true;
      }
      default: {
        const w = this.width();
        u.emit(`mov${SUFFIX[w]} ${this.reg(w, false)}, ${this.reg(w, true)}`);
        return true;
      }
    }
  }

  conditionCodes(u: UnitBuilder): boolean {
    const rng = this.rng;
    const c = rng.pick(CONDITIONS);
    let line: string;
    if (rng.chance(0.4)) line = `set${c.name} ${rng.chance(0.3) ? this.mem(u, 1) : this.reg(8, true)}`;
    else {
      const w = rng.pick<Width>([16, 32]);
      const src = rng.chance(0.3) ? this.mem(u, w / 8) : this.reg(w, false);
      line = `cmov${c.name}${SUFFIX[w]} ${src}, ${this.reg(w, true)}`;
    }
    this.ensureDefined(u, c.reads);
    u.emit(line, effect(c.reads, 0));
    return true;
  }

  flagOps(u: UnitBuilder): boolean {
    const rng = this.rng;
    switch (rng.below(6)) {
      case 0:
        if (!this.canWrite(EAX)) return false;
        this.ensureDefined(u, STATUS & ~OF);
        u.emit('lahf', effect(STATUS & ~OF, 0));
        return true;
      case 1:
        if (!this.canWrite(EAX)) return false;
        u.emit(`movb $${hex(rng.u32() & 0xff)}, %ah`);
        u.emit('sahf', effect(0, STATUS & ~OF));
        return true;
      case 2: {
        const op = rng.pick(['clc', 'stc', 'cmc']);
        if (op === 'cmc') this.ensureDefined(u, CF);
        u.emit(op, effect(op === 'cmc' ? CF : 0, CF));
        return true;
      }
      case 3: u.emit(rng.pick(['cld', 'std'])); return true;
      case 4: {
        const w = rng.chance(0.7) ? 'l' : 'w';
        u.emit(`push${w} $${hex((rng.u32() & STATUS) | (rng.chance(0.3) ? DF : 0) | 2)}`);
        u.emit(`popf${w}`, effect(0, STATUS));
        return true;
      }
      default: {
        // EFLAGS as PUSHF stores them; IF, IOPL and the reserved bits differ between user mode and the bare CPU.
        const r = this.reg(32, true);
        this.ensureDefined(u, STATUS);
        u.emit('pushfl', effect(STATUS, 0));
        u.emit(`popl ${r}`);
        u.emit(`andl $${hex(STATUS | DF)}, ${r}`, effect(0, STATUS & ~AF, AF));
        return true;
      }
    }
  }

  stack(u: UnitBuilder): boolean {
    const rng = this.rng;
    const w = rng.pick<Width>([16, 32, 32]);
    const s = SUFFIX[w];
    switch (rng.below(8)) {
      case 0: u.emit(`push${s} ${this.reg(w, false)}`); return true;
      case 1: u.emit(`push${s} ${imm(mask(rng.chance(0.5) ? rng.between(-128, 127) : rng.operand(), w), w)}`); return true;
      case 2: { const m = this.mem(u, w / 8); u.emit(`push${s} ${m}`); return true; }
      case 3: u.emit(`pop${s} ${NAMES[w][this.regIndex(w, true, ESP)]}`); return true;
      case 4: { const m = this.mem(u, w / 8); u.emit(`pop${s} ${m}`); return true; }
      case 5: {
        const op = rng.pick(['pushal', 'pushaw', 'popal', 'popaw', 'pushl %esp', 'pushw %sp']);
        if (op.startsWith('popa') && !this.canWrite(EAX, ECX, EDX, EBX, EBP, ESI, EDI)) return false;
        u.emit(op);
        return true;
      }
      case 6: { // ENTER (nesting level 0 or 1: deeper levels read the caller's frames)/LEAVE around an instruction that must leave EBP alone
        if (!this.canWrite(EBP)) return false;
        u.emit(`enter $${rng.pick([0, 4, 8, 0x12])}, $${rng.below(2)}`);
        this.avoid |= 1 << EBP;
        this.simple(u, true);
        u.emit('leave');
        return true;
      }
      default: {
        const a = this.reg(32, false);
        u.emit(`pushl ${a}`);
        this.simple(u, true);
        u.emit(`popl ${this.reg(32, true)}`);
        return true;
      }
    }
  }

  /** MOVS/STOS/LODS/CMPS/SCAS, with or without REP/REPE/REPNE, both directions, small counts incl. 0. */
  strings(u: UnitBuilder): boolean {
    if (!this.canWrite(ECX, ESI, EDI, EAX)) return false;
    const rng = this.rng;
    const op = rng.pick(['movs', 'stos', 'lods', 'cmps', 'scas']);
    const size = rng.pick([1, 2, 4]);
    const compares = op === 'cmps' || op === 'scas';
    const prefix = rng.pick(compares ? ['', 'repe ', 'repne ', 'rep '] : ['', 'rep ', 'rep ', 'repne ']);
    const count = prefix ? rng.pick([0, 1, 2, 3, 5, 7]) : 1;
    const span = 7 * 4;
    const start = () => rng.between(span, BUFFER_BYTES - span - size);
    u.emit(rng.pick(['cld', 'std']));
    u.emit(`leal buf+${start()}, %esi`);
    u.emit(`leal buf+${start()}, %edi`);
    if (prefix) u.emit(`movl $${count}, %ecx`);
    if (op === 'scas' && rng.chance(0.5)) u.emit(`movl -${rng.below(8)}(%edi), %eax`); // a likely match
    // A segment override applies to the source (DS:ESI); all segments are flat here, CS included (readable).
    const override = op !== 'stos' && op !== 'scas' && rng.chance(0.2) ? rng.pick(['cs', 'ss', 'es', 'ds']) + ' ' : '';
    u.emit(`${override}${prefix}${op}${SUFFIX[(size * 8) as Width]}`, compares && count > 0 ? effect(0, STATUS) : NO_FLAGS);
    return true;
  }
}
