import { lockAllowed } from '../lock-prefix.js';
import { CS, DS, ES, FS, GS, SS } from '../registers.js';

/**
 * Translates a run of guest instructions (a block: straight-line code up to the first control transfer, an
 * instruction it does not handle, or the end of the 4 KiB page) into a JavaScript function that V8 compiles to
 * machine code. Operands, widths and addressing are decided once here instead of on every execution.
 *
 * The generated code works on the interpreter's state and calls its helpers (memory access through the TLB,
 * segment checks, lazy flags, the stack, multiply/shift helpers), so both always agree. An instruction the
 * compiler does not handle ends the block with a call to the interpreter's `step()`.
 *
 * Faults: before each instruction that can fault, the block stores its EIP in `instrStart`; helpers throw
 * before changing state, and the run loop restarts the instruction there, exactly as for the interpreter.
 */

/**
 * Block-shaping mode bits. MODE_CS32: the code segment's default operand and address size is 32 bits.
 * MODE_FLAT: DS, ES and SS are flat (base 0, 4 GiB, read/write) and the stack is 32-bit, so offsets through
 * them are linear addresses with no check to make.
 */
export const MODE_CS32 = 1, MODE_FLAT = 2;

/**
 * A compiled block, and the block that last followed it (its link): the run loop goes from a block to its link
 * without translating EIP or searching the cache, as long as nothing that decides where EIP leads changed in
 * between (the CPU's `linkEpoch`: TLB flushes, CS, CPL and data-segment modes, dropped code).
 */
export class CompiledBlock {
  next: CompiledBlock | null = null;
  /** EIP the link was made for, the CPU's linkEpoch then, and the fetch window of the link's page. */
  nextEip = 0;
  nextEpoch = -1;
  nextFetchLo = 0;
  nextFetchHi = 0;
  nextFetchDelta = 0;

  constructor(
    /** Runs the block; returns the number of instructions executed (EIP is left at the next one). */
    readonly run: () => number,
    /** EIP of the first instruction (the same physical bytes reached through another CS base do not match). */
    readonly eip: number,
    /** EIP of the last byte of the block, for the CS limit check on entry. */
    readonly lastByteEip: number,
    /** RAM index of the first instruction. */
    readonly start: number,
    /** The RAM bytes the block was compiled from lie in [codeStart, codeEnd). */
    readonly codeStart: number,
    readonly codeEnd: number,
    readonly mode: number,
  ) {}
}

/** The interpreter object the generated code runs against (see X86Cpu; its members are reached by name). */
export type BlockHost = object;

/** The arrays a block closes over: registers, guest RAM and the TLB (X86Cpu's fields of those names). */
interface BlockHostState {
  regs: Int32Array;
  ram: Uint8Array;
  ram32: Int32Array;
  ram16: Uint16Array;
  tlbRead: Int32Array;
  tlbWrite: Int32Array;
}

type BlockFactory = (c: BlockHost, r: Int32Array, r16: Uint16Array, r8: Uint8Array, ram: Uint8Array, ram32: Int32Array, ram16: Uint16Array,
  tlbRead: Int32Array, tlbWrite: Int32Array, countFallback?: (bytes: string) => void) => () => number;

/** Instructions in one block at most. */
const MAX_INSTRUCTIONS = 256;
/** Instructions a block runs before a backward jump returns to the run loop (interrupts, timers). */
const LOOP_INSTRUCTIONS = 4096;

const REG8 = (n: number) => (n < 4 ? n << 2 : ((n - 4) << 2) + 1);

/** JS expressions reading / writing a general register of a width. */
function readReg(width: number, n: number): string {
  return width === 32 ? `r[${n}]` : width === 16 ? `r16[${n << 1}]` : `r8[${REG8(n)}]`;
}

function writeReg(width: number, n: number, value: string): string {
  return `${readReg(width, n)} = ${value};`;
}

function hex(v: number): string {
  return v < 0 ? `(${v})` : '0x' + v.toString(16);
}

/** Decoding state of one instruction. */
interface Insn {
  eip: number;
  /** RAM index of its first byte (prefixes included). */
  start: number;
  next: number;
  o32: boolean;
  a32: boolean;
  seg: number;
  rep: number;
  lock: boolean;
}

class Decoder {
  pos: number;
  constructor(private readonly ram: Uint8Array, start: number, private readonly limit: number) {
    this.pos = start;
  }
  /** True when `n` more bytes are inside the page. */
  has(n: number): boolean {
    return this.pos + n <= this.limit;
  }
  u8(): number {
    if (this.pos >= this.limit) throw PAGE_END;
    return this.ram[this.pos++];
  }
  s8(): number {
    return (this.u8() << 24) >> 24;
  }
  u16(): number {
    const lo = this.u8();
    return lo | (this.u8() << 8);
  }
  s32(): number {
    const b0 = this.u8(), b1 = this.u8(), b2 = this.u8();
    return b0 | (b1 << 8) | (b2 << 16) | (this.u8() << 24);
  }
  inPage(pos: number): boolean {
    return pos >= this.limit - 4096 && pos < this.limit;
  }

  /** The next byte without consuming it (-1 at the page end). */
  peek(): number {
    return this.peekAt(0);
  }
  /** The byte `ahead` bytes after the next one, without consuming anything (-1 past the page end). */
  peekAt(ahead: number): number {
    return this.pos + ahead < this.limit ? this.ram[this.pos + ahead] : -1;
  }
  bytesAt(start: number, n: number): Uint8Array {
    return this.ram.subarray(start, Math.min(start + n, this.limit));
  }
  imm(o32: boolean): number {
    return o32 ? this.s32() : this.u16();
  }
}

/**
 * One-byte opcodes that change no flags and leave the locals a, b, x alone, so a following Jcc can still use
 * the operands of the flag-setting instruction before them (the 0x0F map is treated as not transparent).
 */
const TRANSPARENT = new Set<number>([
  0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f, 0x68, 0x6a,
  0x88, 0x89, 0x8a, 0x8b, 0x8d, 0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0xa0, 0xa1, 0xa2, 0xa3,
  0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf, 0xc6, 0xc7,
  0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7c, 0x7d, 0x7e, 0x7f,
]);

/** Marks the statement that records an instruction's flags (all six status flags, nothing read). */
const FLAGS = '/*flags*/';
/** Statements after which the flags may be read: helpers that use them, the interpreter, block exits. */
const READS_FLAGS = /\breturn\b|\bcontinue\b|^case |^k = |c\.(condition|inc|dec|shift|shiftDouble|step|mulDiv|imul|getCF|setLazyKeepCF|setStatusFlags)\(/;

/** Marks a statement calling a CPU helper that reads or writes the register file itself. */
const USES_REGISTERS = '/*regs*/';

/**
 * Keeps the general registers the block uses only as whole 32-bit values in JS locals (r0..r7), which V8
 * can hold in machine registers: they are loaded on entry, stored back around helpers that use the register
 * file, and stored once in the block's `finally` however it is left (a return or a fault). Registers also
 * used through their 8- or 16-bit parts stay in the register file.
 */
function cacheRegisters(lines: string[]): { lines: string[]; prologue: string; epilogue: string } {
  const code = lines.join('\n');
  const partial = new Set<number>();
  for (const m of code.matchAll(/r16\[(\d+)\]/g)) partial.add(Number(m[1]) >> 1);
  for (const m of code.matchAll(/r8\[(\d+)\]/g)) partial.add(Number(m[1]) >> 2);
  const cached = new Set<number>();
  for (const m of code.matchAll(/\br\[(\d)\]/g)) if (!partial.has(Number(m[1]))) cached.add(Number(m[1]));
  const dirty = [...cached].filter((k) => new RegExp(`\\br\\[${k}\\] = `).test(code));
  if (cached.size === 0) return { lines, prologue: '', epilogue: '' };
  const store = dirty.map((k) => `r[${k}] = r${k};`).join(' ');
  const load = [...cached].map((k) => `r${k} = r[${k}];`).join(' ');
  const out = lines.map((line) => {
    const l = line.replace(/\br\[(\d)\]/g, (all, k: string) => (cached.has(Number(k)) ? `r${k}` : all));
    if (!l.startsWith(USES_REGISTERS)) return l;
    // What the helper leaves in the register file stands: the locals take it before the finally stores them.
    // Helpers (push, pop, mulDiv...) fault before they change a register, so a fault needs nothing more.
    const statement = l.slice(USES_REGISTERS.length);
    const ret = statement.search(/\breturn\b/);
    if (ret < 0) return `${store} ${statement} ${load}`;
    // The one that returns is the instruction left to the interpreter (c.step()), which may fault after moving
    // elements: a REP string instruction keeps the progress it made, so the locals take it then too.
    return `${store} try { ${statement.slice(0, ret)} } catch (err) { ${load} throw err; } ${load} ${statement.slice(ret)}`;
  });
  return { lines: out, prologue: `let ${[...cached].map((k) => `r${k} = r[${k}]`).join(', ')};`, epilogue: store };
}

/** Thrown by the decoder when an instruction runs past the page: the block ends before it. */
const PAGE_END = new Error('page end');

/** A memory operand: the segment and a JS expression for the offset. */
interface MemOperand {
  seg: number;
  offset: string;
}

/** How an instruction passes control on. */
type Control =
  | { kind: 'next' }
  | { kind: 'jcc'; cond: string; target: number }
  | { kind: 'jmp'; target: number }
  /** The instruction's code set EIP itself (calls, returns, indirect jumps). */
  | { kind: 'exit' }
  /** Left to the interpreter. */
  | { kind: 'fallback' };

/** One decoded instruction: its code, its successor, and how control goes on. */
interface Step {
  eip: number;
  /** RAM index of the first byte and one past the last. */
  pos: number;
  end: number;
  next: number;
  lines: string[];
  control: Control;
}

/**
 * Generates the code of one block: the instructions reachable from its start inside the 4 KiB page
 * (following both ways of conditional branches and direct jumps, up to MAX_INSTRUCTIONS). Jump targets inside
 * the block become `case` labels of a switch in a loop, so loops and if/else inside a page run without
 * returning to the run loop; every other transfer leaves the block with EIP set.
 */
class BlockBuilder {
  private lines: string[] = [];
  /** The last flag-setting operation, while its operands are still in the locals a, b, x. */
  private lastFlags: { kind: 'add' | 'sub' | 'sbb' | 'logic' | 'incdec'; width: number } | null = null;
  /** Whether this instruction's carry-in (ADC, SBB) is in the local k, taken from the previous operation's locals. */
  private carryInLocal = false;
  private control: Control = { kind: 'next' };
  private handled = true;
  private readonly startPos: number;

  constructor(private readonly d: Decoder, private readonly mode: number, private readonly startEip: number, private readonly countFallbacks: boolean,
    /** Whether another block already starts at a RAM index: this one leaves to it there instead of copying it. */
    private readonly blockStartsAt: (pos: number) => boolean) {
    this.startPos = d.pos;
  }

  private eipAt(pos: number): number {
    return (this.startEip + (pos - this.startPos)) | 0;
  }

  /** RAM index of EIP `eip` if it lies in the page, else -1. */
  private posOf(eip: number): number {
    const pos = this.startPos + (eip - this.startEip);
    return this.d.inPage(pos) ? pos : -1;
  }

  /** Decodes and generates one instruction; null when it runs past the page. */
  private step(pos: number): Step | null {
    this.d.pos = pos;
    this.lines = [];
    this.control = { kind: 'next' };
    this.handled = false;
    const before = this.lastFlags;
    const eip = this.eipAt(pos);
    let insn: Insn | null = null;
    try {
      insn = this.prefixes(pos, eip);
      if (insn && !this.instruction(insn, before) && this.control.kind === 'next') this.control = { kind: 'exit' };
    } catch (e) {
      if (e !== PAGE_END) throw e;
      return null;
    }
    if (!insn || !this.handled) {
      this.lastFlags = null;
      return { eip, pos, end: pos + 1, next: eip, lines: [], control: { kind: 'fallback' } };
    }
    return { eip, pos, end: this.d.pos, next: insn.next, lines: this.lines, control: this.control };
  }

  build(): { body: string; lastByteEip: number; codeStart: number; codeEnd: number } | null {
    // Pass 1: find the instructions and the jump targets inside the block.
    const steps = new Map<number, Step | null>();
    const leaders = new Set<number>([this.startPos]);
    const work = [this.startPos];
    while (work.length > 0 && steps.size < MAX_INSTRUCTIONS) {
      const pos = work.pop()!;
      if (steps.has(pos)) continue;
      this.lastFlags = null;
      const step = this.step(pos);
      steps.set(pos, step);
      if (step === null) continue;
      const c = step.control;
      if (c.kind === 'next' || c.kind === 'jcc') {
        const next = this.posOf(step.next);
        if (next >= 0 && !this.blockStartsAt(next)) work.push(next);
      }
      if (c.kind === 'jcc' || c.kind === 'jmp') {
        const target = this.posOf(c.target);
        if (target >= 0 && !this.blockStartsAt(target)) {
          leaders.add(target);
          work.push(target);
        }
      }
    }
    if (steps.get(this.startPos) === null) return null;
    const order = [...steps.keys()].filter((p) => steps.get(p) !== null || p === this.startPos).sort((x, y) => x - y);
    // A fall-through to anything but the next instruction in address order (overlapping code) needs a label.
    order.forEach((pos, i) => {
      const step = steps.get(pos);
      if (step && (step.control.kind === 'next' || step.control.kind === 'jcc') && order[i + 1] !== step.end && steps.has(step.end)) leaders.add(step.end);
    });
    const labels = new Map<number, number>();
    for (const pos of order) if (leaders.has(pos)) labels.set(pos, labels.size);

    // Pass 2: generate, in address order, with flag knowledge flowing along fall-through paths.
    const out: string[] = [];
    let pending = 0; // instructions executed since the last `n +=` on this path
    let lastByteEip = this.startEip;
    let end = this.startPos;
    const codeStart = order[0];
    let internalJumps = false;
    const exitTo = (targetEip: number, fromPos: number, faultEip: number): void => {
      const target = this.posOf(targetEip);
      const label = target >= 0 && steps.get(target) ? labels.get(target) : undefined;
      if (label === undefined) {
        out.push(`s = ${hex(faultEip)};`, `c.nearJump(${hex(targetEip)});`, `return n + ${pending};`);
        return;
      }
      internalJumps = true;
      // Backward jumps bound the time spent in the block; every jump leaves it when the run loop has
      // something to do (an interrupt, or a write into compiled code: this block may be stale).
      const leave = target <= fromPos ? `n >= ${LOOP_INSTRUCTIONS} || c.attention` : 'c.attention';
      out.push(`n += ${pending};`, `if (${leave}) { c.eip = ${hex(targetEip)}; return n; }`, `pc = ${label};`, 'continue;');
    };
    this.lastFlags = null;
    for (let i = 0; i < order.length; i++) {
      const pos = order[i];
      const label = labels.get(pos);
      if (label !== undefined) {
        if (pending > 0) out.push(`n += ${pending};`);
        pending = 0;
        out.push(`case ${label}:`);
        this.lastFlags = null;
      }
      const step = steps.get(pos) === null ? null : this.step(pos);
      if (step === null) {
        // The instruction crosses the page: the interpreter takes it from here.
        out.push(`c.eip = ${hex(this.eipAt(pos))};`, `return n + ${pending};`);
        lastByteEip = Math.max(lastByteEip, this.eipAt(pos) - 1);
        continue;
      }
      end = Math.max(end, step.end);
      lastByteEip = Math.max(lastByteEip, step.control.kind === 'fallback' ? step.eip : step.next - 1);
      if (step.control.kind === 'fallback') {
        if (this.countFallbacks) {
          const bytes = Array.from(this.d.bytesAt(pos, 3), (b) => b.toString(16).padStart(2, '0')).join(' ');
          out.push(`countFallback('${bytes}');`);
        }
        out.push(`c.eip = ${hex(step.eip)};`, `s = ${hex(step.eip)};`, `${USES_REGISTERS}c.step(); return n + ${pending + 1};`);
        pending = 0;
        continue;
      }
      out.push(...step.lines);
      pending++;
      const c = step.control;
      if (c.kind === 'exit') {
        out.push(`return n + ${pending};`);
        pending = 0;
        continue;
      }
      if (c.kind === 'jmp') {
        exitTo(c.target, pos, step.eip);
        pending = 0;
        continue;
      }
      if (c.kind === 'jcc') {
        out.push(`if (${c.cond}) {`);
        exitTo(c.target, pos, step.eip);
        out.push('}');
      }
      if (order[i + 1] !== step.end) {
        // The next instruction is not in this block (or not right after): go there.
        exitTo(step.next, pos, step.eip);
        pending = 0;
      }
    }
    this.lines = out;
    this.dropDeadFlagRecords();
    // Without jumps inside the block, the labels go and the code runs straight.
    const cached = cacheRegisters(this.lines.filter((l) => l !== '' && (internalJumps || !l.startsWith('case '))));
    const code = cached.lines.join('\n');
    const main = internalJumps ? `let n = 0, pc = ${labels.get(this.startPos)};\nfor (;;) {\nswitch (pc) {\n${code}\n}\n}` : `let n = 0;\n${code}`;
    // A fault unwinds the block with the faulting EIP for the CPU; the registers go back however it ends.
    const restore = cached.epilogue === '' ? '' : ` finally {\n${cached.epilogue}\n}`;
    const body = `${cached.prologue}\nlet s = 0;\ntry {\n${main}\n} catch (err) {\nc.instrStart = s;\nthrow err;\n}${restore}`;
    return { body, lastByteEip, codeStart, codeEnd: end };
  }

  /**
   * A flag record that a later one in the block replaces before anything reads flags or leaves the block is
   * not written. (A fault in between then pushes EFLAGS without it; the restarted code still computes the
   * same results, since the overwriting instruction comes before every reader.)
   */
  private dropDeadFlagRecords(): void {
    let live = true;
    for (let i = this.lines.length - 1; i >= 0; i--) {
      const line = this.lines[i];
      if (line.startsWith(FLAGS)) {
        if (!live) this.lines[i] = '';
        live = false;
      } else if (READS_FLAGS.test(line)) live = true;
    }
  }

  private emit(...code: string[]): void {
    this.lines.push(...code);
  }

  private prefixes(start: number, eip: number): Insn | null {
    const cs32 = (this.mode & MODE_CS32) !== 0;
    const insn: Insn = { eip, start, next: 0, o32: cs32, a32: cs32, seg: -1, rep: 0, lock: false };
    for (let n = 0; n < 14; n++) {
      const b = this.d.u8();
      switch (b) {
        case 0x26: insn.seg = ES; continue;
        case 0x2e: insn.seg = CS; continue;
        case 0x36: insn.seg = SS; continue;
        case 0x3e: insn.seg = DS; continue;
        case 0x64: insn.seg = FS; continue;
        case 0x65: insn.seg = GS; continue;
        case 0x66: insn.o32 = !cs32; continue;
        case 0x67: insn.a32 = !cs32; continue;
        case 0xf0: insn.lock = true; continue;
        case 0xf2: insn.rep = 2; continue;
        case 0xf3: insn.rep = 1; continue;
      }
      this.d.pos--;
      return insn;
    }
    return null;
  }

  private modrmMemory(insn: Insn, modrm: number): MemOperand {
    const mod = modrm >> 6, rm = modrm & 7;
    let seg = DS;
    let offset: string;
    if (insn.a32) {
      const parts: string[] = [];
      if (rm === 4) {
        const sib = this.d.u8();
        const base = sib & 7, index = (sib >> 3) & 7, scale = sib >> 6;
        if (base === 5 && mod === 0) parts.push(hex(this.d.s32()));
        else {
          parts.push(`r[${base}]`);
          if (base === 4 || base === 5) seg = SS;
        }
        if (index !== 4) parts.push(scale ? `(r[${index}] << ${scale})` : `r[${index}]`);
      } else if (rm === 5 && mod === 0) {
        parts.push(hex(this.d.s32()));
      } else {
        parts.push(`r[${rm}]`);
        if (rm === 5) seg = SS;
      }
      if (mod === 1) parts.push(hex(this.d.s8()));
      else if (mod === 2) parts.push(hex(this.d.s32()));
      offset = parts.length === 1 && parts[0].startsWith('r[') ? parts[0] : `((${parts.join(' + ')}) | 0)`;
    } else {
      const w = (n: number) => `r16[${n << 1}]`;
      const parts: string[] = [];
      switch (rm) {
        case 0: parts.push(w(3), w(6)); break;
        case 1: parts.push(w(3), w(7)); break;
        case 2: parts.push(w(5), w(6)); seg = SS; break;
        case 3: parts.push(w(5), w(7)); seg = SS; break;
        case 4: parts.push(w(6)); break;
        case 5: parts.push(w(7)); break;
        case 6:
          if (mod === 0) parts.push(hex(this.d.u16()));
          else { parts.push(w(5)); seg = SS; }
          break;
        default: parts.push(w(3)); break;
      }
      if (mod === 1) parts.push(hex(this.d.s8()));
      else if (mod === 2) parts.push(hex(this.d.u16()));
      offset = parts.length === 1 && mod !== 0 ? parts[0] : `((${parts.join(' + ')}) & 0xffff)`;
      if (parts.length === 1) offset = parts[0];
    }
    return { seg: insn.seg >= 0 ? insn.seg : seg, offset };
  }

  /** Code loading operand `rm` (register or memory) of `width` into local `target`; memory reads may fault. */
  private loadRm(insn: Insn, modrm: number, width: number, target: string): MemOperand | null {
    if (modrm >= 0xc0) {
      this.emit(`${target} = ${readReg(width, modrm & 7)};`);
      return null;
    }
    const m = this.modrmMemory(insn, modrm);
    this.faultPoint(insn);
    this.readMemory(width, this.linear(m.seg, m.offset, width >> 3, false), target);
    return m;
  }

  /**
   * target = the `width`-bit value at linear address `address` (left in l). Aligned words, dwords and bytes of pages
   * in the TLB are read inline; everything else goes through the CPU's access functions.
   */
  private readMemory(width: number, address: string, target: string): void {
    if (address !== 'l') this.emit(`l = ${address};`);
    if (width === 32) this.emit('e = tlbRead[l >>> 12];', `${target} = (e & am) === am && (l & 3) === 0 ? ram32[(e & -4096 | l & 4095) >> 2] : c.rd32(l);`);
    else if (width === 8) this.emit('e = tlbRead[l >>> 12];', `${target} = (e & am) === am ? ram[e & -4096 | l & 4095] : c.rd8(l);`);
    else this.emit('e = tlbRead[l >>> 12];', `${target} = (e & am) === am && (l & 1) === 0 ? ram16[(e & -4096 | l & 4095) >> 1] : c.rd16(l);`);
  }

  /** The `width`-bit `value` (an expression without side effects) to linear address `address` (left in l). */
  private writeMemory(width: number, address: string, value: string): void {
    if (address !== 'l') this.emit(`l = ${address};`);
    if (width === 32) this.emit('e = tlbWrite[l >>> 12];', `if ((e & am) === am && (l & 3) === 0) ram32[(e & -4096 | l & 4095) >> 2] = ${value}; else c.wr32(l, ${value});`);
    else if (width === 8) this.emit('e = tlbWrite[l >>> 12];', `if ((e & am) === am) ram[e & -4096 | l & 4095] = ${value}; else c.wr8(l, ${value});`);
    else this.emit('e = tlbWrite[l >>> 12];', `if ((e & am) === am && (l & 1) === 0) ram16[(e & -4096 | l & 4095) >> 1] = ${value}; else c.wr16(l, ${value});`);
  }

  /** Read-modify-write operand: checks writability first so a faulting write changes nothing. Leaves `l`. */
  private loadRmw(insn: Insn, modrm: number, width: number, target: string): MemOperand | null {
    if (modrm >= 0xc0) {
      this.emit(`${target} = ${readReg(width, modrm & 7)};`);
      return null;
    }
    const m = this.modrmMemory(insn, modrm);
    this.faultPoint(insn);
    if (this.flat && (m.seg === DS || m.seg === SS || m.seg === ES)) {
      // Writable through the TLB means readable too; anything else takes the CPU's checks.
      this.emit(`l = ${m.offset};`, 'e = tlbWrite[l >>> 12];', `if ((e & am) !== am || (l & 4095) > ${4096 - (width >> 3)}) c.probeWrite(l, ${width >> 3});`);
    }
    else this.emit(`l = c.rmwAddress(${m.seg}, ${m.offset}, ${width >> 3});`);
    this.readMemory(width, 'l', target);
    return m;
  }

  /** Stores `value` to the operand loaded by loadRmw (memory address in `l`), or to a register. */
  private storeRmw(modrm: number, width: number, value: string): void {
    if (modrm >= 0xc0) this.emit(writeReg(width, modrm & 7, value));
    else this.writeMemory(width, 'l', value);
  }

  private storeRm(insn: Insn, modrm: number, width: number, value: string): void {
    if (modrm >= 0xc0) {
      this.emit(writeReg(width, modrm & 7, value));
      return;
    }
    const m = this.modrmMemory(insn, modrm);
    this.faultPoint(insn);
    this.writeMemory(width, this.linear(m.seg, m.offset, width >> 3, true), value);
  }

  private faultPoint(insn: Insn): void {
    this.emit(`s = ${hex(insn.eip)};`);
  }

  /**
   * x = a OP b with the lazy-flags record. ADC and SBB add the carry-in from k (see carryIn) or from the CPU's
   * record; their record is an ADD or SUB one, whose CF and OF formulas hold with a carry-in too.
   */
  private aluOp(op: number, width: number): void {
    const carry = this.carryInLocal ? 'k' : 'c.getCF()';
    switch (op) {
      case 0: this.emit('x = (a + b) | 0;', `${FLAGS}c.setLazy(0, a, b, x, ${width});`); this.lastFlags = { kind: 'add', width }; return;
      case 5: case 7: this.emit('x = (a - b) | 0;', `${FLAGS}c.setLazy(1, a, b, x, ${width});`); this.lastFlags = { kind: 'sub', width }; return;
      case 2: this.emit(`x = (a + b + ${carry}) | 0;`, `${FLAGS}c.setLazy(0, a, b, x, ${width});`); this.lastFlags = { kind: 'add', width }; return;
      // Not 'sub': a Jcc after SBB cannot compare a with b.
      case 3: this.emit(`x = (a - b - ${carry}) | 0;`, `${FLAGS}c.setLazy(1, a, b, x, ${width});`); this.lastFlags = { kind: 'sbb', width }; return;
      case 1: this.emit('x = a | b;', `${FLAGS}c.setLazy(2, a, b, x, ${width});`); break;
      case 4: this.emit('x = a & b;', `${FLAGS}c.setLazy(2, a, b, x, ${width});`); break;
      case 6: this.emit('x = a ^ b;', `${FLAGS}c.setLazy(2, a, b, x, ${width});`); break;
    }
    this.lastFlags = { kind: 'logic', width };
  }

  /**
   * The CF the previous operation left, from its locals a, b, x (still intact: only TRANSPARENT instructions
   * keep `flags`), or null when it is not known here.
   */
  private carryIn(flags: BlockBuilder['lastFlags']): string | null {
    if (flags === null || flags.kind === 'incdec') return null;
    if (flags.kind === 'logic') return '0';
    const s = 32 - flags.width;
    const out = flags.kind === 'add' ? '(a & b) | ((a | b) & ~x)' : '(~a & b) | ((~a | b) & x)';
    return `((${out}) << ${s}) >>> 31`;
  }

  /** A condition code as a JS boolean expression: from the last operation's operands when known. */
  private condition(cc: number): string {
    const f = this.lastFlags;
    const negate = (cc & 1) !== 0;
    let e: string | null = null;
    if (f) {
      const s = 32 - f.width;
      const sx = (v: string) => (s === 0 ? v : `(${v} << ${s})`);
      const ux = (v: string) => (f.width === 32 ? `(${v} >>> 0)` : f.width === 16 ? `(${v} & 0xffff)` : `(${v} & 0xff)`);
      switch (cc >> 1) {
        case 2: e = `${sx('x')} === 0`; break; // Z
        case 4: e = `${sx('x')} < 0`; break; // S
        case 1: if (f.kind === 'sub') e = `${ux('a')} < ${ux('b')}`; else if (f.kind === 'logic') e = 'false'; break; // B
        case 3: if (f.kind === 'sub') e = `${ux('a')} <= ${ux('b')}`; else if (f.kind === 'logic') e = `${sx('x')} === 0`; break; // BE
        case 6: if (f.kind === 'sub') e = `${sx('a')} < ${sx('b')}`; else if (f.kind === 'logic') e = `${sx('x')} < 0`; break; // L
        case 7: if (f.kind === 'sub') e = `${sx('a')} <= ${sx('b')}`; else if (f.kind === 'logic') e = `${sx('x')} <= 0`; break; // LE
      }
    }
    if (e === null) return negate ? `!c.condition(${cc & ~1})` : `c.condition(${cc})`;
    return negate ? `!(${e})` : e;
  }

  /** A near jump target, checked against the CS limit. */
  private jumpTo(insn: Insn, target: string): void {
    this.faultPoint(insn);
    this.emit(`c.nearJump(${target});`);
  }

  private relTarget(insn: Insn, disp: number): number {
    return insn.o32 ? (insn.next + disp) | 0 : (insn.next + disp) & 0xffff;
  }

  private get flat(): boolean {
    return (this.mode & MODE_FLAT) !== 0;
  }

  /** The linear address of seg:offset for an access of `size` bytes (code that may fault). */
  private linear(seg: number, offset: string, size: number, write: boolean): string {
    if (this.flat && (seg === DS || seg === SS || seg === ES)) return offset;
    return `c.seg${write ? 'Write' : 'Read'}(${seg}, ${offset}, ${size})`;
  }

  private push(insn: Insn, value: string): void {
    this.faultPoint(insn);
    if (this.flat && insn.o32) {
      this.emit(`v = ${value};`);
      this.writeMemory(32, '(r[4] - 4) | 0', 'v');
      this.emit('r[4] = l;');
    }
    else this.emit(`v = ${value};`, `${USES_REGISTERS}c.push${insn.o32 ? 32 : 16}(v);`);
  }

  /** Pops into the local v. */
  private pop(insn: Insn): void {
    this.faultPoint(insn);
    if (this.flat && insn.o32) {
      this.readMemory(32, 'r[4]', 'v');
      this.emit('r[4] = (r[4] + 4) | 0;');
    }
    else this.emit(`${USES_REGISTERS}v = c.pop${insn.o32 ? 32 : 16}();`);
  }

  /**
   * Emits one instruction; returns false when it transfers control (the block ends). Sets `handled` unless it
   * leaves the instruction to the interpreter. `flagsBefore` is the previous instruction's flag record, kept
   * for the instructions that neither change flags nor use the locals a, b, x.
   */
  private instruction(insn: Insn, flagsBefore: BlockBuilder['lastFlags']): boolean {
    this.lastFlags = null;
    const d = this.d;
    // LOCK where it is not allowed: the interpreter raises #UD.
    if (insn.lock && !lockAllowed(d.peek(), d.peekAt(1), d.peek() === 0x0f ? d.peekAt(2) : d.peekAt(1))) return false;
    this.handled = true;
    const op = d.u8();
    const w = insn.o32 ? 32 : 16;
    const fin = () => { insn.next = (insn.eip + (d.pos - insn.start)) | 0; };
    if (TRANSPARENT.has(op) || (op === 0x0f && (d.peek() & 0xf0) === 0x80)) this.lastFlags = flagsBefore;
    // ADC and SBB (0x10-0x1d, group 1 /2 and /3) take the carry before their operand loads clobber a, b, x.
    const group1 = op === 0x80 || op === 0x81 || op === 0x83 ? (d.peek() >> 3) & 7 : -1;
    const carry = (op >= 0x10 && op < 0x1e && (op & 7) < 6) || group1 === 2 || group1 === 3 ? this.carryIn(flagsBefore) : null;
    this.carryInLocal = carry !== null;
    if (carry !== null) this.emit(`k = ${carry};`);

    if (op < 0x40 && (op & 7) < 6) {
      const alu = op >> 3;
      const form = op & 7;
      if (form === 4 || form === 5) {
        const width = form === 4 ? 8 : w;
        const imm = width === 8 ? d.u8() : insn.o32 ? d.s32() : d.u16();
        fin();
        this.emit(`a = ${readReg(width, 0)};`, `b = ${hex(imm)};`);
        this.aluOp(alu, width);
        if (alu !== 7) this.emit(writeReg(width, 0, 'x'));
        return true;
      }
      const width = form & 1 ? w : 8;
      const modrm = d.u8();
      const reg = (modrm >> 3) & 7;
      if (form < 2) {
        // r/m OP= reg
        if (alu === 7) this.loadRm(insn, modrm, width, 'a');
        else this.loadRmw(insn, modrm, width, 'a');
        fin();
        this.emit(`b = ${readReg(width, reg)};`);
        this.aluOp(alu, width);
        if (alu !== 7) this.storeRmw(modrm, width, 'x');
        return true;
      }
      // reg OP= r/m
      this.loadRm(insn, modrm, width, 'b');
      fin();
      this.emit(`a = ${readReg(width, reg)};`);
      this.aluOp(alu, width);
      if (alu !== 7) this.emit(writeReg(width, reg, 'x'));
      return true;
    }

    if (op >= 0x40 && op < 0x50) {
      fin();
      const reg = op & 7;
      // CF stays: from the previous operation's locals when known, before they are overwritten.
      const carry = this.carryIn(flagsBefore);
      const lazyOp = op < 0x48 ? 0 : 1;
      if (carry !== null) this.emit(`k = ${carry};`);
      this.emit(`a = ${readReg(w, reg)};`, `x = (a ${op < 0x48 ? '+' : '-'} 1) | 0;`,
        carry !== null ? `${FLAGS}c.setLazyWithCF(${lazyOp}, a, 1, x, ${w}, k);` : `c.setLazyKeepCF(${lazyOp}, a, 1, x, ${w});`, writeReg(w, reg, 'x'));
      this.lastFlags = { kind: 'incdec', width: w };
      return true;
    }
    if (op >= 0x50 && op < 0x58) {
      fin();
      this.push(insn, readReg(w, op & 7));
      return true;
    }
    if (op >= 0x58 && op < 0x60) {
      fin();
      this.pop(insn);
      this.emit(writeReg(w, op & 7, 'v'));
      return true;
    }
    if (op >= 0x70 && op < 0x80) {
      const disp = d.s8();
      fin();
      this.conditionalJump(insn, op & 15, disp);
      return true;
    }
    if (op >= 0x91 && op < 0x98) {
      fin();
      this.emit(`v = ${readReg(w, 0)};`, writeReg(w, 0, readReg(w, op & 7)), writeReg(w, op & 7, 'v'));
      return true;
    }
    if (op >= 0xb0 && op < 0xb8) {
      const imm = d.u8();
      fin();
      this.emit(writeReg(8, op & 7, hex(imm)));
      return true;
    }
    if (op >= 0xb8 && op < 0xc0) {
      const imm = d.imm(insn.o32);
      fin();
      this.emit(writeReg(w, op & 7, hex(imm)));
      return true;
    }

    switch (op) {
      case 0x0f: return this.instruction0f(insn, fin);
      case 0x68: case 0x6a: {
        const imm = op === 0x68 ? d.imm(insn.o32) : d.s8();
        fin();
        this.push(insn, hex(imm));
        return true;
      }
      case 0x69: case 0x6b: {
        const modrm = d.u8();
        this.loadRm(insn, modrm, w, 'a');
        const imm = op === 0x69 ? d.imm(insn.o32) : d.s8();
        fin();
        this.emit(`b = ${hex(imm)};`);
        this.imul(w, (modrm >> 3) & 7);
        this.lastFlags = null;
        return true;
      }
      case 0x80: case 0x81: case 0x83: {
        const width = op === 0x80 ? 8 : w;
        const modrm = d.u8();
        const alu = (modrm >> 3) & 7;
        if (alu === 7) this.loadRm(insn, modrm, width, 'a');
        else this.loadRmw(insn, modrm, width, 'a');
        let imm = op === 0x81 ? d.imm(insn.o32) : op === 0x80 ? d.u8() : d.s8();
        if (width === 16) imm &= 0xffff;
        fin();
        this.emit(`b = ${hex(imm)};`);
        this.aluOp(alu, width);
        if (alu !== 7) this.storeRmw(modrm, width, 'x');
        return true;
      }
      case 0x84: case 0x85: {
        const width = op === 0x84 ? 8 : w;
        const modrm = d.u8();
        this.loadRm(insn, modrm, width, 'a');
        fin();
        this.emit(`b = ${readReg(width, (modrm >> 3) & 7)};`);
        this.aluOp(4, width);
        return true;
      }
      case 0x86: case 0x87: {
        const width = op === 0x86 ? 8 : w;
        const modrm = d.u8();
        const reg = (modrm >> 3) & 7;
        this.loadRmw(insn, modrm, width, 'a');
        fin();
        this.emit(`v = ${readReg(width, reg)};`);
        this.storeRmw(modrm, width, 'v');
        this.emit(writeReg(width, reg, 'a'));
        return true;
      }
      case 0x88: case 0x89: {
        const width = op === 0x88 ? 8 : w;
        const modrm = d.u8();
        const reg = (modrm >> 3) & 7;
        this.storeRm(insn, modrm, width, readReg(width, reg));
        fin();
        return true;
      }
      case 0x8a: case 0x8b: {
        const width = op === 0x8a ? 8 : w;
        const modrm = d.u8();
        this.loadRm(insn, modrm, width, 'v');
        fin();
        this.emit(writeReg(width, (modrm >> 3) & 7, 'v'));
        return true;
      }
      case 0x8d: {
        const modrm = d.u8();
        if (modrm >= 0xc0) break;
        const m = this.modrmMemory(insn, modrm);
        fin();
        this.emit(writeReg(w, (modrm >> 3) & 7, m.offset));
        return true;
      }
      case 0x90:
        if (insn.rep === 2) break;
        fin();
        return true;
      case 0x98:
        fin();
        this.emit(insn.o32 ? 'r[0] = r16[0] << 16 >> 16;' : 'r16[0] = r8[0] << 24 >> 24;');
        return true;
      case 0x99:
        fin();
        this.emit(insn.o32 ? 'r[2] = r[0] >> 31;' : 'r16[4] = (r16[0] << 16) >> 31;');
        return true;
      case 0xa0: case 0xa1: case 0xa2: case 0xa3: {
        const off = insn.a32 ? d.s32() : d.u16();
        fin();
        const width = op & 1 ? w : 8;
        const seg = insn.seg >= 0 ? insn.seg : DS;
        this.faultPoint(insn);
        if (op < 0xa2) {
          this.readMemory(width, this.linear(seg, hex(off), width >> 3, false), 'v');
          this.emit(writeReg(width, 0, 'v'));
        } else this.writeMemory(width, this.linear(seg, hex(off), width >> 3, true), readReg(width, 0));
        return true;
      }
      case 0xa8: case 0xa9: {
        const width = op === 0xa8 ? 8 : w;
        const imm = width === 8 ? d.u8() : d.imm(insn.o32);
        fin();
        this.emit(`a = ${readReg(width, 0)};`, `b = ${hex(imm)};`);
        this.aluOp(4, width);
        return true;
      }
      case 0xc0: case 0xc1: case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        const width = op & 1 ? w : 8;
        const modrm = d.u8();
        this.loadRmw(insn, modrm, width, 'a');
        const count = op <= 0xc1 ? d.u8() & 31 : op <= 0xd1 ? 1 : -1;
        fin();
        const sub = (modrm >> 3) & 7;
        if (count === 0) return true;
        this.lastFlags = null;
        if (count > 0 && count < width && sub >= 4) {
          // Constant SHL/SHR/SAR inline (a holds the operand zero-extended): CF is the last bit out; OF as the
          // interpreter defines it.
          const s = 32 - width, mask = width === 32 ? '' : ` & ${hex((1 << width) - 1)}`;
          if (sub === 5) this.emit(`b = (a >>> ${count - 1}) & 1;`, `x = a >>> ${count};`, `${FLAGS}c.setResultFlags(x, ${width}, b, ${width === 32 ? 'a < 0' : `(a & ${hex(1 << (width - 1))}) !== 0`});`);
          else if (sub === 7) this.emit(`b = ((a << ${s}) >> ${s + count - 1}) & 1;`, `x = ((a << ${s}) >> ${s + count})${mask};`, `${FLAGS}c.setResultFlags(x, ${width}, b, false);`);
          else this.emit(`b = (a >>> ${width - count}) & 1;`, `x = (a << ${count})${mask};`, `${FLAGS}c.setResultFlags(x, ${width}, b, ((x >>> ${width - 1}) & 1) !== b);`);
          this.storeRmw(modrm, width, 'x');
          return true;
        }
        if (count > 0 && width === 32 && sub <= 1) {
          // Constant 32-bit ROL/ROR inline: only CF and OF change (the earlier record keeps the other flags).
          if (sub === 0) this.emit(`x = (a << ${count}) | (a >>> ${32 - count});`, 'c.setStatusFlags(0x801, (x & 1) | ((((x >>> 31) ^ x) & 1) << 11));');
          else this.emit(`x = (a >>> ${count}) | (a << ${32 - count});`, 'c.setStatusFlags(0x801, (x >>> 31) | ((((x >>> 31) ^ (x >>> 30)) & 1) << 11));');
          this.storeRmw(modrm, width, 'x');
          return true;
        }
        if (count > 0) {
          this.storeRmw(modrm, width, `c.shift(${sub}, a, ${count}, ${width})`);
          return true;
        }
        // Count in CL (read through ECX, so that ECX can stay a JS local); a zero count changes nothing, so the
        // flag record here is conditional and never counts as replacing an earlier one.
        this.emit('b = r[1] & 31;', 'if (b !== 0) {');
        if (width === 32 && sub >= 4) {
          if (sub === 5) this.emit('v = (a >>> (b - 1)) & 1;', 'x = a >>> b;', 'c.setResultFlags(x, 32, v, a < 0);');
          else if (sub === 7) this.emit('v = (a >> (b - 1)) & 1;', 'x = a >> b;', 'c.setResultFlags(x, 32, v, false);');
          else this.emit('v = (a >>> (32 - b)) & 1;', 'x = a << b;', 'c.setResultFlags(x, 32, v, (x >>> 31) !== v);');
          this.storeRmw(modrm, width, 'x');
        } else this.storeRmw(modrm, width, `c.shift(${sub}, a, b, ${width})`);
        this.emit('}');
        return true;
      }
      case 0xc2: case 0xc3: {
        const n = op === 0xc2 ? d.u16() : 0;
        fin();
        this.pop(insn);
        this.emit('c.nearJump(v);');
        if (n) this.emit(`${USES_REGISTERS}c.releaseStack(${n});`);
        return false;
      }
      case 0xc9: {
        if (!this.flat || !insn.o32) break;
        fin();
        this.faultPoint(insn);
        this.readMemory(32, readReg(32, 5), 'v');
        this.emit(`${readReg(32, 4)} = (l + 4) | 0;`, writeReg(32, 5, 'v'));
        return true;
      }
      case 0xa4: case 0xa5: case 0xaa: case 0xab: case 0xac: case 0xad: case 0xae: case 0xaf: {
        // Single string operations in flat 32-bit code (REP forms stay with the interpreter).
        if (insn.rep !== 0 || !insn.a32 || !this.flat || (insn.seg >= 0 && insn.seg !== DS && insn.seg !== ES && insn.seg !== SS)) break;
        const width = op & 1 ? w : 8;
        const size = width >> 3;
        fin();
        this.faultPoint(insn);
        this.emit(`b = c.flags & 0x400 ? ${-size} : ${size};`);
        const si = readReg(32, 6), di = readReg(32, 7);
        if (op === 0xa4 || op === 0xa5) {
          this.readMemory(width, si, 'v');
          this.writeMemory(width, di, 'v');
          this.emit(`${si} = (${si} + b) | 0;`, `${di} = (${di} + b) | 0;`);
        } else if (op === 0xaa || op === 0xab) {
          this.writeMemory(width, di, readReg(width, 0));
          this.emit(`${di} = (${di} + b) | 0;`);
        } else if (op === 0xac || op === 0xad) {
          this.readMemory(width, si, 'v');
          this.emit(writeReg(width, 0, 'v'), `${si} = (${si} + b) | 0;`);
        } else {
          this.readMemory(width, di, 'v');
          this.emit(`${di} = (${di} + b) | 0;`, `a = ${readReg(width, 0)};`, 'b = v;');
          this.aluOp(7, width);
        }
        return true;
      }
      case 0xc6: case 0xc7: {
        const width = op === 0xc6 ? 8 : w;
        const modrm = d.u8();
        if ((modrm & 0x38) !== 0) break;
        if (modrm >= 0xc0) {
          const imm = width === 8 ? d.u8() : d.imm(insn.o32);
          fin();
          this.emit(writeReg(width, modrm & 7, hex(imm)));
          return true;
        }
        const m = this.modrmMemory(insn, modrm);
        const imm = width === 8 ? d.u8() : d.imm(insn.o32);
        fin();
        this.faultPoint(insn);
        this.writeMemory(width, this.linear(m.seg, m.offset, width >> 3, true), hex(imm));
        return true;
      }
      case 0xe8: {
        const disp = d.imm(insn.o32);
        fin();
        const target = this.relTarget(insn, insn.o32 ? disp : (disp << 16) >> 16);
        this.faultPoint(insn);
        this.emit(`c.checkNearTarget(${hex(target)});`);
        this.push(insn, hex(insn.next));
        // A call is a jump after the push: into the block when the callee is in it.
        this.control = { kind: 'jmp', target };
        return false;
      }
      case 0xe9: case 0xeb: {
        const disp = op === 0xeb ? d.s8() : insn.o32 ? d.s32() : (d.u16() << 16) >> 16;
        fin();
        this.control = { kind: 'jmp', target: this.relTarget(insn, disp) };
        return false;
      }
      case 0xf6: case 0xf7: {
        const width = op === 0xf6 ? 8 : w;
        const modrm = d.u8();
        const sub = (modrm >> 3) & 7;
        if (sub === 0 || sub === 1) {
          this.loadRm(insn, modrm, width, 'a');
          const imm = width === 8 ? d.u8() : d.imm(insn.o32);
          fin();
          this.emit(`b = ${hex(imm)};`);
          this.aluOp(4, width);
          return true;
        }
        if (sub === 2 || sub === 3) {
          this.loadRmw(insn, modrm, width, 'b');
          fin();
          if (sub === 2) this.storeRmw(modrm, width, '~b');
          else {
            this.emit('a = 0;');
            this.aluOp(5, width);
            this.lastFlags = null;
            this.storeRmw(modrm, width, 'x');
          }
          return true;
        }
        this.loadRm(insn, modrm, width, 'a');
        fin();
        this.faultPoint(insn);
        this.emit(`${USES_REGISTERS}c.mulDiv(${sub}, a, ${width});`);
        this.lastFlags = null;
        return true;
      }
      case 0xfe: case 0xff: {
        const width = op === 0xfe ? 8 : w;
        const modrm = d.u8();
        const sub = (modrm >> 3) & 7;
        if (sub === 0 || sub === 1) {
          this.loadRmw(insn, modrm, width, 'a');
          fin();
          this.storeRmw(modrm, width, `c.${sub === 0 ? 'inc' : 'dec'}(a, ${width})`);
          this.lastFlags = null;
          return true;
        }
        if (op === 0xfe) break;
        if (sub === 2) {
          this.loadRm(insn, modrm, w, 'v');
          fin();
          this.faultPoint(insn);
          this.emit('c.checkNearTarget(v);', 'x = v;');
          this.push(insn, hex(insn.next));
          this.emit('c.eip = x;');
          return false;
        }
        if (sub === 4) {
          this.loadRm(insn, modrm, w, 'v');
          fin();
          this.jumpTo(insn, 'v');
          return false;
        }
        if (sub === 6) {
          this.loadRm(insn, modrm, w, 'v');
          fin();
          this.push(insn, 'v');
          return true;
        }
        break;
      }
    }
    this.handled = false;
    return false;
  }

  /** reg = a * b (signed, truncated); CF = OF = the product did not fit. */
  private imul(width: number, reg: number): void {
    if (width === 32) {
      // The double product is exact whenever the true product fits in 32 bits, and outside that range otherwise.
      this.emit('x = Math.imul(a, b);', 'v = a * b !== x ? 1 : 0;', `${FLAGS}c.setResultFlags(x, 32, v, v !== 0);`, writeReg(32, reg, 'x'));
    } else this.emit(writeReg(width, reg, `c.imul(a, b, ${width})`));
  }

  /** Jcc: the block builder generates the jump. */
  private conditionalJump(insn: Insn, cc: number, disp: number): void {
    this.control = { kind: 'jcc', cond: this.condition(cc), target: this.relTarget(insn, disp) };
  }

  private instruction0f(insn: Insn, fin: () => void): boolean {
    const d = this.d;
    const op = d.u8();
    const w = insn.o32 ? 32 : 16;
    if (op >= 0x80 && op < 0x90) {
      const disp = insn.o32 ? d.s32() : (d.u16() << 16) >> 16;
      fin();
      this.conditionalJump(insn, op & 15, disp);
      return true;
    }
    if (op >= 0x90 && op < 0xa0) {
      const modrm = d.u8();
      if (modrm >= 0xc0) {
        fin();
        this.emit(writeReg(8, modrm & 7, `${this.condition(op & 15)} ? 1 : 0`));
        return true;
      }
      const m = this.modrmMemory(insn, modrm);
      fin();
      this.faultPoint(insn);
      this.emit(`v = ${this.condition(op & 15)} ? 1 : 0;`);
      this.writeMemory(8, this.linear(m.seg, m.offset, 1, true), 'v');
      return true;
    }
    if (op >= 0x40 && op < 0x50) {
      const modrm = d.u8();
      this.loadRm(insn, modrm, w, 'v');
      fin();
      this.emit(`if (${this.condition(op & 15)}) ${writeReg(w, (modrm >> 3) & 7, 'v')}`);
      return true;
    }
    switch (op) {
      case 0x18: case 0x19: case 0x1a: case 0x1b: case 0x1c: case 0x1d: case 0x1e: case 0x1f: {
        // Hint NOPs (NOP r/m, PREFETCHh, ENDBR32): only their length matters.
        const modrm = d.u8();
        if (modrm < 0xc0) this.modrmMemory(insn, modrm);
        fin();
        return true;
      }
      case 0xc8: case 0xc9: case 0xca: case 0xcb: case 0xcc: case 0xcd: case 0xce: case 0xcf: {
        if (!insn.o32) break;
        fin();
        const reg = readReg(32, op & 7);
        this.emit(`v = ${reg};`, writeReg(32, op & 7, '(v << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)'));
        return true;
      }
      case 0xa4: case 0xa5: case 0xac: case 0xad: {
        // SHLD/SHRD through the interpreter's helper.
        const modrm = d.u8();
        this.loadRmw(insn, modrm, w, 'a');
        const count = op & 1 ? -1 : d.u8() & 31;
        fin();
        if (count === 0) return true;
        this.emit(`b = ${count < 0 ? 'r[1] & 31' : count};`, 'if (b !== 0) {');
        this.storeRmw(modrm, w, `c.shiftDouble(${op < 0xa8}, a, ${readReg(w, (modrm >> 3) & 7)}, b, ${w})`);
        this.emit('}');
        return true;
      }
      case 0xb0: case 0xb1: {
        // CMPXCHG: flags as CMP accumulator, destination.
        const width = op === 0xb0 ? 8 : w;
        const modrm = d.u8();
        this.loadRmw(insn, modrm, width, 'b');
        fin();
        this.emit(`a = ${readReg(width, 0)};`);
        this.aluOp(7, width);
        this.emit('if (x === 0) {');
        this.storeRmw(modrm, width, readReg(width, (modrm >> 3) & 7));
        this.emit('} else {');
        this.storeRmw(modrm, width, 'b');
        this.emit(writeReg(width, 0, 'b'), '}');
        this.lastFlags = null;
        return true;
      }
      case 0x31:
        fin();
        this.faultPoint(insn);
        this.emit(`${USES_REGISTERS}c.rdtsc();`);
        return true;
      case 0xb6: case 0xb7: case 0xbe: case 0xbf: {
        const modrm = d.u8();
        const src = op & 1 ? 16 : 8;
        this.loadRm(insn, modrm, src, 'v');
        fin();
        const value = op < 0xb8 ? 'v' : src === 8 ? '((v << 24) >> 24)' : '((v << 16) >> 16)';
        this.emit(writeReg(w, (modrm >> 3) & 7, value));
        return true;
      }
      case 0xaf: {
        const modrm = d.u8();
        const reg = (modrm >> 3) & 7;
        this.loadRm(insn, modrm, w, 'b');
        fin();
        this.emit(`a = ${readReg(w, reg)};`);
        this.imul(w, reg);
        this.lastFlags = null;
        return true;
      }
    }
    this.handled = false;
    return false;
  }

}

/**
 * Compiles the block whose first instruction is at RAM index `start` (EIP `eip`), not crossing `pageEnd`.
 * Returns null when not even one instruction fits in the page.
 */
export function compileBlock(host: BlockHost, ram: Uint8Array, start: number, pageEnd: number, eip: number, mode: number,
  blockStartsAt: (pos: number) => boolean, countFallback?: (bytes: string) => void): CompiledBlock | null {
  const decoder = new Decoder(ram, start, pageEnd);
  const built = new BlockBuilder(decoder, mode, eip, countFallback !== undefined, blockStartsAt).build();
  if (!built) return null;
  const h = host as BlockHostState;
  const regs = h.regs;
  const factory = new Function('c', 'r', 'r16', 'r8', 'ram', 'ram32', 'ram16', 'tlbRead', 'tlbWrite', 'countFallback',
    `return function block() {\nconst am = c.accessMask;\nlet a = 0, b = 0, x = 0, v = 0, l = 0, e = 0, k = 0;\n${built.body}\n};`) as BlockFactory;
  const run = factory(host, regs, new Uint16Array(regs.buffer), new Uint8Array(regs.buffer), h.ram, h.ram32, h.ram16, h.tlbRead, h.tlbWrite, countFallback);
  return new CompiledBlock(run, eip, built.lastByteEip, start, built.codeStart, built.codeEnd, mode);
}
