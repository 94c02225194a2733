import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { ORACLE, buildProgram, runEmulated } from '../user-program.js';
import { SequenceGenerator, hex, type GeneratorOptions, type Sequence } from './generator.js';
import { compareRun, dumpMasks, programSource, runBytes, type FieldDifference } from './program.js';
import { Random } from './random.js';

/**
 * The differential tester: a batch of random sequences runs on the oracle (the host CPU or qemu-i386) and on
 * tsvm's engines; the state dumps must match. A mismatch is shrunk by delta debugging over the failing
 * sequence's units (keeping the initial state it failed from).
 *
 * Engines: the interpreter; compiled blocks at threshold 1 (every block compiled on first entry); at threshold
 * 3 (the interpreter runs the first passes, so blocks also start at loop heads and after instructions left to
 * the interpreter, entered with live state).
 */
export const ENGINES = { interpreter: false, 'compiled blocks': 1, 'compiled blocks (threshold 3)': 3 } as const;
export type Engine = keyof typeof ENGINES;
const ALL_ENGINES = Object.keys(ENGINES) as Engine[];

export interface Mismatch {
  readonly engine: Engine;
  readonly sequence: number;
  /** Which of the sequence's initial states. */
  readonly state: number;
  /** The unit whose dump differs; the number of units when only buf at the end of the run differs. */
  readonly unit: number;
  /** The differing fields, or null when tsvm stopped before the end of this run. */
  readonly differences: readonly FieldDifference[] | null;
}

export function generateBatch(seed: number, sequences: number, options: GeneratorOptions): Sequence[] {
  const generator = new SequenceGenerator(new Random(seed), options);
  return Array.from({ length: sequences }, () => generator.sequence());
}

/** Runs the batch everywhere and returns the first mismatch per engine (interpreter first). */
export function findMismatches(sequences: readonly Sequence[], engines: readonly Engine[] = ALL_ENGINES): Mismatch[] {
  const masks = sequences.map((s) => dumpMasks(s));
  if (masks.some((m) => m === null)) throw new Error('a sequence reads flags the instruction before it left undefined');
  const { elf, flat } = buildProgram(programSource(sequences));
  let expected: Buffer;
  try {
    expected = runOracle(elf);
  } finally {
    rmSync(dirname(elf), { recursive: true, force: true });
  }
  const total = sequences.reduce((n, s) => n + s.states.length * runBytes(s), 0);
  if (expected.length !== total) throw new Error(`the oracle wrote ${expected.length} bytes, not ${total}`);
  const found: Mismatch[] = [];
  for (const engine of engines) {
    const { output } = runEmulated(flat, ENGINES[engine], 20 * total + 10_000_000);
    const actual = Buffer.from(output, 'latin1');
    let offset = 0;
    outer: for (let s = 0; s < sequences.length; s++) {
      const bytes = runBytes(sequences[s]!);
      for (let k = 0; k < sequences[s]!.states.length; k++, offset += bytes) {
        if (offset + bytes > actual.length) {
          found.push({ engine, sequence: s, state: k, unit: 0, differences: null });
          break outer;
        }
        const difference = compareRun(expected, actual, offset, masks[s]!, sequences[s]!.units.length);
        if (difference) {
          found.push({ engine, sequence: s, state: k, ...difference });
          break outer;
        }
      }
    }
  }
  return found;
}

function runOracle(elf: string): Buffer {
  if (!ORACLE) throw new Error('no oracle for 32-bit programs');
  const [cmd, ...args] = ORACLE.command.length ? [...ORACLE.command, elf] : [elf];
  const result = spawnSync(cmd!, args, { maxBuffer: 1 << 30, timeout: 60_000 });
  if (result.status !== 0) throw new Error(`the oracle failed (${result.signal ?? 'status ' + result.status}): ${result.stderr.toString().trim()}`);
  return result.stdout;
}

/**
 * Delta debugging (ddmin) over the failing sequence's units, up to the failing one: drops chunks of units while
 * the same engine still disagrees with the oracle. Candidates that read undefined flags are skipped.
 */
export function shrink(sequence: Sequence, mismatch: Mismatch): { sequence: Sequence; mismatch: Mismatch } {
  const engine = mismatch.engine;
  const states = [sequence.states[mismatch.state]!];
  const attempt = (units: Sequence['units']): Mismatch | null => {
    const candidate = { ...sequence, states, units };
    if (units.length === 0 || !dumpMasks(candidate)) return null;
    try {
      return findMismatches([candidate], [engine])[0] ?? null;
    } catch {
      return null; // the oracle rejected the candidate
    }
  };
  let units: Sequence['units'] = sequence.units.slice(0, mismatch.unit + 1);
  let last = attempt(units);
  if (!last) last = attempt((units = sequence.units));
  if (!last) return { sequence, mismatch }; // not reproducible alone (depends on an earlier sequence)
  let chunks = 2;
  while (units.length >= 2) {
    const size = Math.ceil(units.length / chunks);
    let reduced = false;
    for (let start = 0; start < units.length; start += size) {
      const candidate = [...units.slice(0, start), ...units.slice(start + size)];
      const result = attempt(candidate);
      if (result) {
        units = result.differences === null ? candidate : candidate.slice(0, result.unit + 1);
        last = result;
        chunks = Math.max(chunks - 1, 2);
        reduced = true;
        break;
      }
    }
    if (!reduced) {
      if (size === 1) break;
      chunks = Math.min(chunks * 2, units.length);
    }
  }
  return { sequence: { ...sequence, states, units }, mismatch: last };
}

const REGISTER_NAMES = ['eax', 'ecx', 'edx', 'ebx', 'esp', 'ebp', 'esi', 'edi'];

/** A shrunk mismatch as a readable report: initial state, the units as assembly, the differing fields. */
export function describe(sequence: Sequence, mismatch: Mismatch): string {
  const lines = [`tsvm (${mismatch.engine}) differs from the oracle (${ORACLE?.name}) after unit ${mismatch.unit}:`];
  const state = sequence.states[mismatch.state]!;
  lines.push('  initial state: ' + state.registers.map((v, r) => (r === 4 ? '' : `${REGISTER_NAMES[r]}=${hex(v)} `)).join('') + `eflags=${hex(state.eflags | 2)}`);
  lines.push('  buf: ' + Buffer.from(state.buffer).toString('hex'));
  sequence.units.forEach((unit, u) => {
    lines.push(`  # unit ${u}`, ...unit.lines.map((l) => '  ' + l));
  });
  if (mismatch.differences === null) lines.push('  tsvm stopped before the end of the run (fault, halt or budget)');
  else {
    if (mismatch.unit === sequence.units.length) lines.push('  (the registers match; buf differs at the end of the run)');
    for (const d of mismatch.differences) lines.push(`  ${d.field}: oracle ${hex(d.oracle)}, tsvm ${hex(d.tsvm)}`);
  }
  return lines.join('\n');
}

/** Writes the shrunk sequence as a complete program (assemble with `as --32`, link at 0x1000000). */
export function saveProgram(path: string, sequence: Sequence): void {
  writeFileSync(path, programSource([sequence]));
}
