/**
 * The CPU fuzzer's long mode: `npm run fuzz:cpu -- --seconds N [--seed S] [--x87] [--sequences K] [--units U] [--states R]`.
 * Runs batches with seeds S, S+1, ... until the time is up; prints each mismatch shrunk to a minimal sequence
 * (and saves it as /tmp/tsvm-fuzz-<seed>.S), then the throughput.
 */
import { ORACLE } from '../user-program.js';
import { ENGINES, describe, findMismatches, generateBatch, saveProgram, shrink } from './differential.js';

function parse(argv: string[]): { seconds: number; seed: number; x87: boolean; sequences: number; units: number; states: number } {
  const options = { seconds: 60, seed: Date.now() % 1_000_000, x87: false, sequences: 40, units: 48, states: 8 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--x87') options.x87 = true;
    else if (arg === '--seconds' || arg === '--seed' || arg === '--sequences' || arg === '--units' || arg === '--states') {
      const value = Number(argv[++i]);
      const least = arg === '--seconds' || arg === '--seed' ? 0 : 1;
      if (!Number.isInteger(value) || value < least) {
        console.error(`fuzz-cpu: ${arg} needs an integer of at least ${least}`);
        process.exit(2);
      }
      options[arg.slice(2) as 'seconds' | 'seed' | 'sequences' | 'units' | 'states'] = value;
    } else {
      console.error(`fuzz-cpu: unknown argument ${arg} (use --seconds N, --seed S, --x87, --sequences K, --units U, --states R)`);
      process.exit(2);
    }
  }
  return options;
}

const options = parse(process.argv.slice(2));
if (!ORACLE) {
  console.error('fuzz-cpu: no oracle: this host cannot run 32-bit programs and qemu-i386 is not installed');
  process.exit(2);
}
console.log(`fuzz-cpu: oracle ${ORACLE.name}; seed ${options.seed}; ${options.sequences} sequences of ${options.units} units from ${options.states} initial states per batch${options.x87 ? '; x87 on' : ''}`);
const start = Date.now();
let batches = 0, units = 0, instructions = 0, failures = 0, errors = 0;
const seen = new Set<string>();
for (let seed = options.seed; Date.now() - start < options.seconds * 1000; seed++) {
  // Every third batch dumps after every 8th unit only, so that compiled blocks span several units.
  const dumpEvery = seed % 3 === 2 ? 8 : 1;
  const batch = generateBatch(seed, options.sequences, { unitsPerSequence: options.units, statesPerSequence: options.states, dumpEvery, x87: options.x87 });
  let mismatches;
  try {
    mismatches = findMismatches(batch);
  } catch (e) {
    // The oracle rejected the program or wrote something else than expected: a generator bug.
    console.log(`seed ${seed}: ${(e as Error).message}`);
    errors++;
    continue;
  }
  batches++;
  for (const s of batch) for (const u of s.units) {
    units += s.states.length;
    instructions += s.states.length * u.instructions;
  }
  for (const m of mismatches) {
    failures++;
    const shrunk = shrink(batch[m.sequence]!, m);
    const text = describe(shrunk.sequence, shrunk.mismatch);
    const key = shrunk.sequence.units.map((u) => u.lines.join(';')).join('|') + m.engine;
    if (seen.has(key)) continue;
    seen.add(key);
    const path = `/tmp/tsvm-fuzz-${seed}-${m.engine.replace(/\W+/g, '-')}.S`;
    saveProgram(path, shrunk.sequence);
    console.log(`\nseed ${seed}, sequence ${m.sequence}: ${text}\n  (program: ${path})`);
  }
}
const seconds = (Date.now() - start) / 1000;
// Instructions count the generated ones once per initial state (loop bodies once, dumps not at all).
console.log(`\nfuzz-cpu: ${batches} batches, ${units} units, ${instructions} instructions in ${seconds.toFixed(0)} s` +
  ` (${(units / seconds).toFixed(0)} units/s, ${(instructions / seconds).toFixed(0)} instructions/s, each on the oracle and ${Object.keys(ENGINES).length} tsvm engines);` +
  ` ${failures} mismatching engine runs${errors ? `, ${errors} batches the oracle rejected` : ''}`);
process.exit(failures || errors ? 1 : 0);
