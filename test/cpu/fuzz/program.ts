import { DF, STATUS, applyEffects } from './flags.js';
import { BUFFER_BYTES, hex, type Sequence } from './generator.js';

/**
 * The test program. Each sequence is one piece of code run once per initial state: load the state (buf,
 * registers, EFLAGS), run the units with a dump after each, then write the records and buf to stdout.
 *
 * The dump is inline and touches neither flags nor registers: eight `movl %reg, rec+...` and `pushfl;
 * popl rec+...` into the unit's fixed record slot. No call or REP instruction interrupts the code, so compiled
 * blocks span many units (a call per dump would start a new block at every return address) and flag
 * elision, register locals and Jcc fusing work across them as in ordinary code.
 */
export const RECORD_FIELDS = ['eax', 'ecx', 'edx', 'ebx', 'esp', 'ebp', 'esi', 'edi', 'eflags'] as const;
export const RECORD_BYTES = 4 * RECORD_FIELDS.length;
const EFLAGS_FIELD = 8;
/** Stack space below and above each run's initial ESP: pushes and pops need not balance. */
const STACK_BELOW = 12288, STACK_ABOVE = 4096;
/** An initial state in the program's tables: buf, then the eight registers, then EFLAGS. */
const STATE_BYTES = BUFFER_BYTES + 9 * 4;

/** The units after which the state is dumped. */
export function dumpedUnits(seq: Sequence): number[] {
  return seq.units.flatMap((_, u) => ((u + 1) % seq.dumpEvery === 0 || u === seq.units.length - 1 ? [u] : []));
}

/** Bytes one run of a sequence writes: a record per dump, then buf. */
export const runBytes = (seq: Sequence) => dumpedUnits(seq).length * RECORD_BYTES + BUFFER_BYTES;

const RUNTIME = `
# Appends buf to the records and writes them (EDX: the records' length).
end_run:
  cld
  movl $buf, %esi
  leal rec(%edx), %edi
  movl $${BUFFER_BYTES / 4}, %ecx
  rep movsl
  addl $${BUFFER_BYTES}, %edx
  movl $4, %eax
  movl $1, %ebx
  movl $rec, %ecx
  int $0x80
  ret
`;

function dump(unit: number): string[] {
  const at = (field: number) => `rec+${unit * RECORD_BYTES + field * 4}`;
  const names = ['%eax', '%ecx', '%edx', '%ebx', '%esp', '%ebp', '%esi', '%edi'];
  return [...names.map((r, i) => `  movl ${r}, ${at(i)}`), '  pushfl', `  popl ${at(EFLAGS_FIELD)}`];
}

export function programSource(sequences: readonly Sequence[]): string {
  const text: string[] = ['.text', '.globl _start', '_start:'];
  // buf straddles a page boundary: accesses that cross it take the TLB's split paths.
  const data: string[] = ['.data', 'run: .long 0', '.balign 4096', `.space ${4096 - BUFFER_BYTES / 2}`, `buf: .space ${BUFFER_BYTES}`, '.balign 4096'];
  let maxDumps = 0;
  sequences.forEach((seq, s) => {
    maxDumps = Math.max(maxDumps, dumpedUnits(seq).length);
    // The stack area is cleared for every run: pops past the pushes read it, and earlier runs left words there
    // that differ between the oracle and tsvm (EFLAGS images with IF, tsvm's interrupt frames of int $0x80).
    text.push(`# sequence ${s}`, '  movl $0, run', `seq${s}:`, '  movl $stack_top, %esp', '  cld', '  movl $stack, %edi',
      `  movl $${(STACK_BELOW + STACK_ABOVE) / 4}, %ecx`, '  xorl %eax, %eax', '  rep stosl',
      '  imull $' + STATE_BYTES + ', run, %esi', `  addl $states${s}, %esi`, '  movl $buf, %edi', `  movl $${BUFFER_BYTES / 4}, %ecx`,
      '  rep movsl', '  pushl 32(%esi)', '  popfl');
    // ESI points at the state's registers after the copy: load it last.
    for (const r of [0, 1, 2, 3, 5, 7, 6]) text.push(`  movl ${4 * r}(%esi), %${RECORD_FIELDS[r]}`);
    const dumps = dumpedUnits(seq);
    seq.units.forEach((unit, u) => {
      text.push(`# unit ${u}`, ...unit.lines);
      if (dumps.includes(u)) text.push(...dump(dumps.indexOf(u)));
    });
    text.push(`  movl $${dumps.length * RECORD_BYTES}, %edx`, '  call end_run', '  incl run', `  cmpl $${seq.states.length}, run`, `  jb seq${s}`);
    data.push(`states${s}:`);
    for (const state of seq.states) {
      const words = [...state.registers, (state.eflags | 2) >>> 0].map(hex);
      data.push(`  .byte ${Array.from(state.buffer, hex).join(',')}`, `  .long ${words.join(',')}`);
    }
  });
  text.push('  movl $1, %eax', '  xorl %ebx, %ebx', '  int $0x80', RUNTIME);
  data.push('.balign 4096', `rec: .space ${maxDumps * RECORD_BYTES + BUFFER_BYTES}`);
  const bss = ['.bss', '.balign 16', `stack: .space ${STACK_BELOW}`, `stack_top: .space ${STACK_ABOVE}`];
  return [...text, ...data, ...bss].join('\n') + '\n';
}

/** Per dump, its unit and the EFLAGS bits to compare (DF and the status flags the SDM defines there); null if a unit reads an undefined flag. */
export function dumpMasks(seq: Sequence): { unit: number; flags: number }[] | null {
  const masks: number[] = [];
  let undef = 0;
  for (const unit of seq.units) {
    const after = applyEffects(undef, unit.effects);
    if (after === null) return null;
    undef = after;
    masks.push((STATUS | DF) & ~undef);
  }
  return dumpedUnits(seq).map((unit) => ({ unit, flags: masks[unit]! }));
}

export interface FieldDifference {
  readonly field: string;
  readonly oracle: number;
  readonly tsvm: number;
}

/**
 * Compares one run's output starting at `offset`: the unit of the first dump that differs and its differing
 * fields, or unit = units.length when only buf at the end differs; null if all match.
 */
export function compareRun(oracle: Buffer, tsvm: Buffer, offset: number, dumps: readonly { unit: number; flags: number }[], units: number): { unit: number; differences: FieldDifference[] } | null {
  for (let d = 0; d <= dumps.length; d++) {
    const base = offset + d * RECORD_BYTES;
    const fields = d < dumps.length ? RECORD_FIELDS.length : BUFFER_BYTES / 4;
    const differences: FieldDifference[] = [];
    for (let i = 0; i < fields; i++) {
      let a = oracle.readUInt32LE(base + i * 4), b = tsvm.readUInt32LE(base + i * 4);
      if (d < dumps.length && i === EFLAGS_FIELD) {
        a = (a & dumps[d]!.flags) >>> 0;
        b = (b & dumps[d]!.flags) >>> 0;
      }
      if (a !== b) differences.push({ field: d < dumps.length ? RECORD_FIELDS[i]! : `buf+${i * 4}`, oracle: a, tsvm: b });
    }
    if (differences.length) return { unit: d < dumps.length ? dumps[d]!.unit : units, differences };
  }
  return null;
}
