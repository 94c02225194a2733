import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HAVE_BINUTILS } from '../../src/cpu/x86/testing/assemble.js';
import { HEX_ROUTINES, ORACLE, buildProgram, runEmulated, runNative } from './user-program.js';

/**
 * The x87 against the oracle, bit for bit: each case sets the control word, loads 80-bit operands, runs one
 * instruction and prints the 80-bit result (FSTP m80) and the status word. The status bits compared are the
 * exception flags but DE, C0, C2, C3 and TOP: QEMU's x87 (the oracle when the host cannot run 32-bit code)
 * does not report denormal operands (DE), rounding up (C1) or stack faults (SF, C1); the unit tests cover
 * those. All exceptions stay masked: an unmasked one would end the program with SIGFPE.
 */

const skip = !HAVE_BINUTILS ? 'GNU binutils (as, ld, objcopy) are not installed'
  : !ORACLE ? 'no oracle: this host cannot run 32-bit programs and qemu-i386 (qemu-user) is not installed' : false;

/** Exception flags but DE, C0, C2, C3, TOP. */
const STATUS_MASK = 0x7d3d;
const C0 = 0x100, C1 = 0x200, C2 = 0x400, C3 = 0x4000;

const DUMP = `
dump:                   # prints the three dwords at res in hex, then a newline
  pushal
  leal line, %edi
  leal res, %esi
  movl $3, %ebp
2: movl (%esi), %eax
  addl $4, %esi
  call hex
  movb $' ', (%edi)
  incl %edi
  decl %ebp
  jnz 2b
  movb $'\\n', -1(%edi)
  leal line, %ecx
  call write_stdout
  popal
  ret
${HEX_ROUTINES}
.data
line: .space 64
res: .space 16
cw: .word 0
mem: .space 16
`;

type F80 = [se: number, hi: number, lo: number];

const VALUES: Record<string, F80> = {
  '+0': [0x0000, 0, 0],
  '-0': [0x8000, 0, 0],
  '+1': [0x3fff, 0x80000000, 0],
  '-1.5': [0xbfff, 0xc0000000, 0],
  '3': [0x4000, 0xc0000000, 0],
  'pi': [0x4000, 0xc90fdaa2, 0x2168c235],
  '-x': [0xc00a, 0xdeadbeef, 0x12345679],
  'y': [0x3ff0, 0x8000ffff, 0xffffffff],
  'ones': [0x3fff, 0xffffffff, 0xffffffff],
  'tie53': [0x3fff, 0x80000000, 0x00000400],
  'tie24': [0x3fff, 0x80000080, 0],
  '+max': [0x7ffe, 0xffffffff, 0xffffffff],
  '-minN': [0x8001, 0x80000000, 0],
  '+den': [0x0000, 0x40000000, 0x00000001],
  '-den': [0x8000, 0x00000000, 0x00000003],
  '+inf': [0x7fff, 0x80000000, 0],
  '-inf': [0xffff, 0x80000000, 0],
  '+qnan': [0x7fff, 0xc0000000, 0x00000007],
  '-qnan': [0xffff, 0xc0001234, 0],
  '+snan': [0x7fff, 0x80000000, 0x00000009],
  '-snan': [0xffff, 0xa0000000, 0],
  'big': [0x403e, 0xb504f333, 0xf9de6484],
  'tiny': [0x0040, 0x80000001, 0x80000000],
};

/** Control words: every rounding mode at 64-bit precision, and every precision at nearest and toward zero. */
const CONTROL_WORDS = [0x037f, 0x077f, 0x0b7f, 0x0f7f, 0x007f, 0x027f, 0x0c7f, 0x0e7f];

const hex = (v: number) => '0x' + (v >>> 0).toString(16);

class Program {
  private readonly data: string[] = [];
  readonly cases: string[] = [];
  readonly names: string[] = [];
  private readonly labels = new Map<string, string>();

  /** The label of an 80-bit constant in the data section. */
  operand([se, hi, lo]: F80): string {
    const key = `${se},${hi},${lo}`;
    let label = this.labels.get(key);
    if (!label) {
      label = `v${this.labels.size}`;
      this.labels.set(key, label);
      this.data.push(`${label}: .long ${hex(lo)}, ${hex(hi)}\n  .word ${hex(se)}`);
    }
    return label;
  }

  /** Sets the control word, runs `body`, prints ST(0) (popped) and the status word taken right after `body`. */
  add(name: string, control: number, body: string, popResult = true, statusMask = STATUS_MASK): void {
    this.names.push(name);
    this.cases.push(`  finit\n  movw $${hex(control)}, cw\n  fldcw cw\n${body}\n  fnstsw %ax\n  andl $${hex(statusMask)}, %eax\n` +
      `  movl $0, res+8\n${popResult ? '  fstpt res\n' : '  movl $0, res\n  movl $0, res+4\n'}  movw %ax, res+10\n  fnclex\n  call dump`);
  }

  source(): string {
    return `.text\n.globl _start\n_start:\n${this.cases.join('\n')}\n  movl $1, %eax\n  xorl %ebx, %ebx\n  int $0x80\n${DUMP}\n${this.data.join('\n')}\n`;
  }
}

function compare(name: string, program: Program): void {
  const { elf, flat } = buildProgram(program.source());
  const expected = runNative(elf).split('\n');
  for (const [engine, jit] of [['interpreter', false], ['compiled blocks', 1]] as const) {
    const got = runEmulated(flat, jit);
    assert.ok(got.exited, `${name} (${engine}): the program did not reach exit (output so far: ${got.output.slice(-200)})`);
    const actual = got.output.split('\n');
    const failures: string[] = [];
    for (let i = 0; i < expected.length - 1; i++) {
      if (actual[i] !== expected[i]) failures.push(`${program.names[i]}: oracle ${expected[i]}, tsvm ${actual[i]}`);
    }
    if (failures.length) assert.fail(`${name} (${engine}): ${failures.length} cases differ:\n${failures.slice(0, 30).join('\n')}`);
    assert.equal(actual.length, expected.length);
  }
}

const NAMES = Object.keys(VALUES);
const load = (p: Program, v: string) => `  fldt ${p.operand(VALUES[v]!)}`;

test('x87 arithmetic: every pair of special and ordinary operands, each rounding mode and precision', { skip }, () => {
  const p = new Program();
  for (const control of CONTROL_WORDS) {
    for (const a of NAMES) for (const b of NAMES) {
      for (const op of ['faddp', 'fsubp', 'fmulp', 'fdivp', 'fsubrp', 'fdivrp']) {
        p.add(`${op} ${a} ${b} cw=${hex(control)}`, control, `${load(p, a)}\n${load(p, b)}\n  ${op} %st, %st(1)`);
      }
    }
  }
  compare('x87 arithmetic', p);
});

test('x87 one-operand operations, compares, FXAM and constants', { skip }, () => {
  const p = new Program();
  for (const control of CONTROL_WORDS) {
    for (const a of NAMES) {
      // FSQRT leaves C2 undefined; QEMU sets it for negative operands. QEMU applies precision control to
      // FRNDINT, which the SDM (8.1.5.2) says only the basic arithmetic and FSQRT follow.
      for (const op of ['fsqrt', 'frndint', 'fchs', 'fabs']) if (op !== 'frndint' || (control & 0x300) === 0x300) p.add(`${op} ${a} cw=${hex(control)}`, control, `${load(p, a)}\n  ${op}`, true, op === 'fsqrt' ? STATUS_MASK & ~C2 : STATUS_MASK);
      p.add(`fxtract ${a} cw=${hex(control)}`, control, `${load(p, a)}\n  fxtract\n  fstp %st(1)`);
      p.add(`fxtract/exp ${a} cw=${hex(control)}`, control, `${load(p, a)}\n  fxtract\n  fstp %st(0)`);
      p.add(`fld+fst ${a} cw=${hex(control)}`, control, `${load(p, a)}\n  fld %st(0)\n  fstp %st(1)`);
    }
    for (const op of ['fld1', 'fldl2t', 'fldl2e', 'fldpi', 'fldlg2', 'fldln2', 'fldz']) p.add(`${op} cw=${hex(control)}`, control, `  ${op}`);
  }
  for (const a of NAMES) {
    // FXAM reports the sign in C1, also of an empty register's contents.
    p.add(`fxam ${a}`, 0x37f, `${load(p, a)}\n  fxam`, true, STATUS_MASK | C1);
    p.add(`fxam empty ${a}`, 0x37f, `${load(p, a)}\n  ffree %st(0)\n  fxam`, false, STATUS_MASK | C1);
    p.add(`ftst ${a}`, 0x37f, `${load(p, a)}\n  ftst`);
    for (const b of NAMES) {
      for (const op of ['fcompp', 'fucompp']) p.add(`${op} ${a} ${b}`, 0x37f, `${load(p, b)}\n${load(p, a)}\n  ${op}`, false);
      for (const op of ['fcomip', 'fucomip']) {
        // ZF, PF, CF come back as an integer in ST(0) (QEMU leaves OF, SF, AF, which the SDM says are cleared).
        p.add(`${op} ${a} ${b}`, 0x37f, `  movl $0x8d5, %eax\n  pushl %eax\n  popfl\n${load(p, b)}\n${load(p, a)}\n  ${op} %st(1), %st\n  pushfl\n  popl %eax\n  andl $0x45, %eax\n  movl %eax, mem\n  fstp %st(0)\n  fildl mem`);
      }
    }
  }
  compare('x87 unary', p);
});

test('x87 FSCALE, FPREM, FPREM1 over operand pairs', { skip }, () => {
  const p = new Program();
  const extra: Record<string, F80> = { '7': [0x4001, 0xe0000000, 0], '-70000': [0xc00f, 0x88b80000, 0], '1e40': [0x4083, 0xeb194f8e, 0x1ae525fd], '2^-1000': [0x3c17, 0x80000000, 0] };
  const names = [...NAMES, ...Object.keys(extra)];
  const value = (n: string) => extra[n] ?? VALUES[n]!;
  for (const control of [0x37f, 0xf7f, 0x07f]) {
    for (const a of names) for (const b of names) {
      // QEMU rounds FPREM's remainder to the precision control, which the SDM (8.1.5.2) does not list.
      for (const op of control === 0x07f ? ['fscale'] : ['fscale', 'fprem', 'fprem1']) {
        // FPREM's quotient bits are compared (C1 too); QEMU 7.2's FPREM1 quotient bits are not the SDM's
        // (3 rem 1 leaves C3 clear), so only the remainder and the other bits are compared there.
        const mask = op === 'fprem' ? STATUS_MASK | C1 : op === 'fprem1' ? STATUS_MASK & ~(C0 | C3) : STATUS_MASK;
        p.add(`${op} ${a} ${b} cw=${hex(control)}`, control, `  fldt ${p.operand(value(b))}\n  fldt ${p.operand(value(a))}\n  ${op}`, true, mask);
      }
    }
  }
  compare('x87 scale/remainder', p);
});

test('x87 memory formats: FST/FIST/FISTTP/FBSTP from 80-bit values, FLD/FILD/FBLD of edge patterns, in each rounding mode', { skip }, () => {
  const p = new Program();
  const storeAndReload = [
    ['fsts mem', '  flds mem'], ['fstl mem', '  fldl mem'], ['fists mem', '  filds mem'], ['fistl mem', '  fildl mem'],
    ['fistpll mem\n  fldz', '  fildll mem'], ['fbstp mem\n  fldz', '  fbld mem'],
    ['fisttps mem\n  fldz', '  filds mem'], ['fisttpl mem\n  fldz', '  fildl mem'], ['fisttpll mem\n  fldz', '  fildll mem'],
  ];
  // Integer range edges as 80-bit values: 32767.5, -32768.5, 2^31 - 0.5, 10^18 - 1/16, 10^18, -2^63 and the next value below.
  const edges: Record<string, F80> = {
    '32767.5': [0x400d, 0xffff0000, 0], '-32768.5': [0xc00e, 0x80010000, 0], '2^31-0.5': [0x401d, 0xffffffff, 0],
    '1e18-1/16': [0x403a, 0xde0b6b3a, 0x763fffff], '1e18': [0x403a, 0xde0b6b3a, 0x76400000], '-2^63': [0xc03e, 0x80000000, 0],
    '-2^63-1': [0xc03e, 0x80000000, 1],
  };
  const value = (n: string) => edges[n] ?? VALUES[n]!;
  for (const control of [0x37f, 0x77f, 0xb7f, 0xf7f]) {
    for (const a of [...NAMES, ...Object.keys(edges)]) {
      for (const [store, reload] of storeAndReload) {
        // What was stored comes back through the matching (exact) load.
        p.add(`${store} ${a} cw=${hex(control)}`, control, `  movl $0x5a5a5a5a, mem\n  movl $0x5a5a5a5a, mem+4\n  movl $0x5a5a5a5a, mem+8\n  fldt ${p.operand(value(a))}\n  ${store}\n${reload}`);
      }
    }
  }
  const patterns: [string, string][] = [
    ['flds', '.long 0x7f800001'], ['flds', '.long 0xffc00005'], ['flds', '.long 0x00000003'], ['flds', '.long 0x807fffff'],
    ['flds', '.long 0x3f800000'], ['fldl', '.long 0x00000001, 0x80000000'], ['fldl', '.long 0x00000002, 0x7ff00000'],
    ['fldl', '.long 0x12345678, 0xfff81234'], ['fldl', '.long 0xffffffff, 0x000fffff'],
    ['fldt', '.long 0, 0x80000000\n  .word 0x0000'], ['fldt', '.long 0, 0x40000000\n  .word 0x3fff'], ['fldt', '.long 0, 0\n  .word 0x7fff'],
    ['fbld', '.long 0x12345678, 0x90123456\n  .word 0x8099'], ['fildll', '.long 0, 0x80000000'],
  ];
  // Arithmetic with memory operands: single, double, int32 and int16, including signaling NaNs and denormals.
  const memoryOperands: [string, string][] = [
    ['s', '.long 0x7f800001'], ['s', '.long 0xffc00005'], ['s', '.long 0x00000003'], ['s', '.long 0x40490fdb'],
    ['l', '.long 0x00000001, 0x80000000'], ['l', '.long 0x12345678, 0x7ff01234'], ['l', '.long 0x54442d18, 0x400921fb'],
    ['il', '.long 0x80000000'], ['is', '.word 0x7fff'],
  ];
  // Not a NaN register with a NaN memory operand: QEMU quiets the memory SNaN before choosing between the two
  // NaNs; the SDM's rules (table 4-7) choose between the operands as they are.
  const nanOperand = (bytes: string) => /0x7f80|0xffc0|0x7ff0/.test(bytes);
  for (const [suffix, bytes] of memoryOperands) {
    const label = `operand${p.cases.length}`;
    for (const a of ['+1', '-x', '+qnan', '-snan', '+den', '+0', '+inf']) {
      if (nanOperand(bytes) && a.includes('nan')) continue;
      for (const op of ['fadd', 'fmul', 'fsubr', 'fdiv', 'fcomp']) {
        const mnemonic = suffix.startsWith('i') ? `fi${op.slice(1)}${suffix.slice(1)}` : `${op}${suffix}`;
        p.add(`${mnemonic} ${a} ${bytes}`, 0x37f, `  jmp 1f\n${label}${op}${a.replace(/[^a-z0-9]/g, '_')}: ${bytes}\n1:\n  fldz\n${load(p, a)}\n  ${mnemonic} ${label}${op}${a.replace(/[^a-z0-9]/g, '_')}`);
      }
    }
  }
  patterns.forEach(([op, bytes], i) => {
    p.add(`${op} pattern ${i}`, 0x37f, `  jmp 1f\npattern${i}: ${bytes}\n  .long 0\n1: ${op} pattern${i}`);
  });
  compare('x87 memory formats', p);
});

/** An 80-bit value printed by `dump` ("lo hi sw:se") as a number line position: ulps apart = difference. */
function parseResult(line: string): { ordinal: bigint; status: number; se: number } {
  const [lo, hi, last] = line.split(' ').map((w) => parseInt(w, 16));
  const se = last! & 0xffff;
  // The exponent above the 63 fraction bits (not the explicit integer bit): one step across a power of two is one ulp.
  const magnitude = (BigInt(se & 0x7fff) << 63n) | (BigInt(hi! & 0x7fffffff) << 32n) | BigInt(lo!);
  return { ordinal: se & 0x8000 ? -magnitude : magnitude, status: last! >>> 16, se };
}

/**
 * Runs approximate cases: each result within `ulps` of the oracle's (and of the same class: a NaN, an
 * infinity or a zero must match exactly), the status bits under `statusMask` equal.
 */
function compareApproximate(name: string, program: Program, ulps: (caseName: string) => bigint, statusMask: number): void {
  const { elf, flat } = buildProgram(program.source());
  const expected = runNative(elf).split('\n');
  for (const [engine, jit] of [['interpreter', false], ['compiled blocks', 1]] as const) {
    const got = runEmulated(flat, jit);
    assert.ok(got.exited, `${name} (${engine}): the program did not reach exit`);
    const actual = got.output.split('\n');
    assert.equal(actual.length, expected.length, `${name} (${engine}): ${actual.length - 1} results, the oracle printed ${expected.length - 1}`);
    const failures: string[] = [];
    for (let i = 0; i < expected.length - 1; i++) {
      const want = parseResult(expected[i]!), have = parseResult(actual[i]!);
      // NaNs, infinities and zeros (with their signs) must match exactly.
      const special = (want.se & 0x7fff) === 0x7fff || (have.se & 0x7fff) === 0x7fff || want.ordinal === 0n || have.ordinal === 0n;
      const distance = want.ordinal > have.ordinal ? want.ordinal - have.ordinal : have.ordinal - want.ordinal;
      const allowed = special ? 0n : ulps(program.names[i]!);
      if (distance > allowed || (special && want.se !== have.se) || (want.status & statusMask) !== (have.status & statusMask)) {
        failures.push(`${program.names[i]}: oracle ${expected[i]}, tsvm ${actual[i]} (${distance} ulps)`);
      }
    }
    if (failures.length) assert.fail(`${name} (${engine}): ${failures.length} cases differ:\n${failures.slice(0, 30).join('\n')}`);
  }
}

test('x87 transcendentals: F2XM1, FYL2X, FYL2XP1, FPATAN within 1 ulp of the oracle, flags equal', { skip }, () => {
  const p = new Program();
  const v = (x: number): F80 => {
    // A double as an 80-bit value (exact).
    const f = new DataView(new ArrayBuffer(8));
    f.setFloat64(0, x, true);
    const bits = f.getBigUint64(0, true);
    if (x === 0) return [Object.is(x, -0) ? 0x8000 : 0, 0, 0];
    const exp = Number((bits >> 52n) & 0x7ffn), frac = bits & 0xfffffffffffffn;
    const sig = ((1n << 52n) | frac) << 11n;
    return [(x < 0 ? 0x8000 : 0) | (exp - 1023 + 16383), Number(sig >> 32n), Number(sig & 0xffffffffn)];
  };
  const named: Record<string, F80> = { ...VALUES };
  for (const x of ['0.5', '-0.5', '0.25', '-0.3', '1e-5', '-2.5e-10', '0.999', '-0.9', '0.1', '-0.2', '1e-20', '1.0000001', '10', '1e40', '0.7', '-0.29']) named[x] = v(Number(x));
  const f2xm1Args = ['+0', '-0', '+1', '0.5', '-0.5', '0.25', '-0.3', '1e-5', '-2.5e-10', '0.999', '-0.9', '0.1', '1e-20', '+den', '-den', 'tiny', '+qnan', '-snan', 'y', '0.7', '-0.29'];
  const logX = ['0.5', '3', 'pi', '+1', '2^-1000', 'big', '1.0000001', '+den', '10', '+max', 'y', '+inf', '+0', '-1.5', '+qnan', '-snan'];
  const logY = ['+1', '-1.5', '3', '0.1', '1e40', '+0', '-inf', 'tiny', '-qnan', '+snan'];
  const xp1X = ['0.1', '-0.2', '1e-5', '-2.5e-10', '0.25', '-0.29', '1e-20', '+den', '+0', '-0', 'tiny'];
  const atan = ['+1', '-1.5', '3', '-0.5', 'tiny', 'big', '+0', '-0', '+inf', '-inf', '1e-20', '+den', '+qnan', '-snan', '1e40'];
  named['2^-1000'] = v(2 ** -1000);
  for (const control of [0x37f, 0x77f, 0xb7f, 0xf7f]) {
    for (const a of f2xm1Args) p.add(`f2xm1 ${a} cw=${hex(control)}`, control, `  fldt ${p.operand(named[a]!)}\n  f2xm1`);
    for (const x of logX) for (const y of logY) p.add(`fyl2x ${y} ${x} cw=${hex(control)}`, control, `  fldt ${p.operand(named[y]!)}\n  fldt ${p.operand(named[x]!)}\n  fyl2x`);
    for (const x of xp1X) for (const y of logY) p.add(`fyl2xp1 ${y} ${x} cw=${hex(control)}`, control, `  fldt ${p.operand(named[y]!)}\n  fldt ${p.operand(named[x]!)}\n  fyl2xp1`);
    for (const x of atan) for (const y of atan) p.add(`fpatan ${y} ${x} cw=${hex(control)}`, control, `  fldt ${p.operand(named[y]!)}\n  fldt ${p.operand(named[x]!)}\n  fpatan`);
  }
  compareApproximate('x87 transcendentals', p, () => 1n, STATUS_MASK);
});

test('x87 FSIN, FCOS, FSINCOS, FPTAN: close to the oracle (QEMU computes them in double precision); |x| >= 2^63 leaves x and sets C2', { skip }, () => {
  const p = new Program();
  const args: Record<string, F80> = {
    ...VALUES,
    '0.5': [0x3ffe, 0x80000000, 0], '-1.25': [0xbfff, 0xa0000000, 0], '2^-40': [0x3fd7, 0x80000000, 0],
    '100': [0x4005, 0xc8000000, 0], '-2^70': [0xc045, 0x80000000, 0],
  };
  // Finite operands only: QEMU's double-based versions lose NaN payloads and IE, and take infinities
  // (invalid operands, SDM) and 2^63 (out of range, SDM) as out of range and in range respectively.
  const names = ['+0', '-0', '+1', '-1.5', '3', '0.5', '-1.25', '2^-40', '100', 'y'];
  for (const a of names) {
    for (const op of ['fsin', 'fcos', 'fptan']) p.add(`${op} ${a}`, 0x37f, `  fldt ${p.operand(args[a]!)}\n  ${op}${op === 'fptan' ? '\n  fstp %st(0)' : ''}`);
    p.add(`fsincos/sin ${a}`, 0x37f, `  fldt ${p.operand(args[a]!)}\n  fsincos\n  fstp %st(0)`);
    p.add(`fsincos/cos ${a}`, 0x37f, `  fldt ${p.operand(args[a]!)}\n  fsincos`);
  }
  for (const op of ['fsin', 'fcos', 'fptan', 'fsincos']) p.add(`${op} out of range`, 0x37f, `  fldt ${p.operand(args['-2^70']!)}\n  ${op}`);
  // The double-precision oracle is good to about 2^-52 relative: 2^12 ulps of the 64-bit significand.
  compareApproximate('x87 trigonometry', p, () => 1n << 12n, STATUS_MASK & ~0x20);
});
