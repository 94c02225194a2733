import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HAVE_BINUTILS } from '../../src/cpu/x86/testing/assemble.js';
import { HEX_ROUTINES, ORACLE, buildProgram, runEmulated, runNative } from './user-program.js';

/**
 * The host CPU is the oracle: each program is assembled at test time, run natively and on the emulated CPU,
 * and must print the same lines. Flags the Intel SDM leaves undefined for an instruction are masked out
 * (the host may be Intel or AMD), and each case says which.
 */
const CF = 0x1, PF = 0x4, AF = 0x10, ZF = 0x40, SF = 0x80, OF = 0x800;
const ALL = CF | PF | AF | ZF | SF | OF;

const PRINT_ROUTINES = `
print2:                 # prints EAX and EDX in hex
  pushal
  leal buf, %edi
  call hex
  movb $' ', (%edi)
  incl %edi
  movl %edx, %eax
  call hex
  movb $'\\n', (%edi)
  incl %edi
  leal buf, %ecx
  call write_stdout
  popal
  ret
${HEX_ROUTINES}
.data
buf: .space 64
sbuf: .space 256
lbuf: .space 12288
fa: .quad 0
fb: .quad 0
fr: .quad 0
fi: .long 0
`;

function program(cases: string[]): string {
  return `.text\n.globl _start\n_start:\n${cases.join('\n')}\n  movl $1, %eax\n  xorl %ebx, %ebx\n  int $0x80\n${PRINT_ROUTINES}`;
}

/** One case: set EFLAGS, run `body` (which leaves its result in EAX), print EAX and the masked flags. */
function flagCase(flagsIn: number, body: string, mask: number): string {
  return `  pushl $0x${(flagsIn | 0x2).toString(16)}\n  popfl\n${body}\n  pushfl\n  popl %edx\n  andl $0x${mask.toString(16)}, %edx\n  call print2`;
}

const hex = (v: number) => '0x' + (v >>> 0).toString(16);
const VALUES32 = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0x80000001, 0xfffffffe, 0xffffffff, 0x12345678, 0xdeadbeef];
const REG = { 8: ['%cl', '%al'], 16: ['%cx', '%ax'], 32: ['%ecx', '%eax'] } as const;
const SUFFIX = { 8: 'b', 16: 'w', 32: 'l' } as const;

/** The oracle's output against the interpreter's and against compiled blocks' (every block compiled at once). */
function compare(name: string, cases: string[]): void {
  const { elf, flat } = buildProgram(program(cases));
  const expected = runNative(elf).split('\n');
  for (const [engine, jit] of [['interpreter', false], ['compiled blocks', 1]] as const) {
    const got = runEmulated(flat, jit);
    assert.ok(got.exited, `${name} (${engine}): the program did not reach exit (output so far: ${got.output.slice(-200)})`);
    const actual = got.output.split('\n');
    for (let i = 0; i < expected.length; i++) {
      if (actual[i] !== expected[i]) assert.fail(`${name} (${engine}): case ${i} differs: oracle ${expected[i]}, tsvm ${actual[i]}`);
    }
    assert.equal(actual.length, expected.length);
  }
}

const skip = !HAVE_BINUTILS ? 'GNU binutils (as, ld, objcopy) are not installed'
  : !ORACLE ? 'no oracle: this host cannot run 32-bit programs and qemu-i386 (qemu-user) is not installed' : false;
if (ORACLE) console.log(`# oracle: ${ORACLE.name}`);

test('ALU operations on 8/16/32-bit edge operands, with carry in and out', { skip }, () => {
  const cases: string[] = [];
  for (const width of [8, 16, 32] as const) {
    const values = width === 32 ? VALUES32 : VALUES32.filter((_, i) => i % 2 === 0);
    for (const op of ['add', 'adc', 'sub', 'sbb', 'and', 'or', 'xor', 'cmp']) {
      const logic = op === 'and' || op === 'or' || op === 'xor';
      for (const a of values) for (const b of values) for (const cin of op === 'adc' || op === 'sbb' ? [0, CF] : [0]) {
        const [src, dst] = REG[width];
        cases.push(flagCase(cin, `  movl $${hex(a)}, %eax\n  movl $${hex(b)}, %ecx\n  ${op}${SUFFIX[width]} ${src}, ${dst}`, logic ? ALL & ~AF : ALL));
      }
    }
    for (const op of ['inc', 'dec', 'neg', 'not']) {
      for (const a of values) for (const cin of [0, CF]) {
        cases.push(flagCase(cin, `  movl $${hex(a)}, %eax\n  ${op}${SUFFIX[width]} ${REG[width][1]}`, ALL));
      }
    }
  }
  compare('alu', cases);
});

test('ADC, SBB, INC, DEC right after another operation; shifts and rotates by constant counts (compiled code takes CF from the operation before)', { skip }, () => {
  const cases: string[] = [];
  const values = [0, 1, 0x7f, 0x80, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff];
  for (const width of [8, 16, 32] as const) {
    const [a, b, c] = width === 8 ? ['%al', '%bl', '%cl'] : width === 16 ? ['%ax', '%bx', '%cx'] : ['%eax', '%ebx', '%ecx'];
    for (const first of ['add', 'sub', 'cmp', 'and', 'adc', 'sbb']) for (const second of ['adc', 'sbb']) {
      for (const x of values.slice(0, 6)) for (const y of values.slice(2)) for (const z of [0, 1, 0x80000000, 0xffffffff]) {
        const body = `  movl $${hex(x)}, %eax\n  movl $${hex(y)}, %ebx\n  movl $${hex(z)}, %ecx\n  ${first}${SUFFIX[width]} ${b}, ${c}\n  ${second}${SUFFIX[width]} ${b}, ${a}`;
        cases.push(flagCase(CF, body, ALL));
      }
    }
    for (const first of ['add', 'sub', 'and', 'adc', 'sbb']) for (const second of ['inc', 'dec']) {
      for (const x of values) for (const [y, z] of [[1, 0xffffffff], [0x80, 0x7f], [0, 0]]) {
        const body = `  movl $${hex(x)}, %eax\n  movl $${hex(y!)}, %ebx\n  movl $${hex(z!)}, %ecx\n  ${first}${SUFFIX[width]} ${b}, ${c}\n  ${second}${SUFFIX[width]} ${a}`;
        cases.push(flagCase(CF, body, ALL));
        cases.push(flagCase(0, `${body}\n  adc${SUFFIX[width]} ${b}, ${a}`, ALL));
      }
    }
    for (const op of ['shl', 'shr', 'sar', 'sal']) {
      for (const v of [0x1, 0x80, 0x8000, 0x80000000, 0x81, 0x7fffffff, 0xdeadbeef, 0xffffffff]) for (let count = 1; count < 32; count++) {
        const mask = (count === 1 ? CF | OF | SF | ZF | PF : CF | SF | ZF | PF) & (count > width ? ~CF : ALL);
        cases.push(flagCase(0, `  movl $${hex(v)}, %eax\n  ${op}${SUFFIX[width]} $${count}, ${a}`, mask));
      }
    }
  }
  for (const op of ['rol', 'ror']) for (const first of ['add', 'sub']) {
    for (const v of [0x1, 0x80000000, 0x81, 0x7fffffff, 0xdeadbeef]) for (const [y, z] of [[0, 0], [1, 0xffffffff], [0x7fffffff, 1], [0x80000000, 0x80000000]]) {
      for (let count = 1; count < 32; count++) {
        const body = `  movl $${hex(v)}, %eax\n  movl $${hex(y!)}, %ebx\n  movl $${hex(z!)}, %ecx\n  ${first}l %ebx, %ecx\n  ${op}l $${count}, %eax`;
        cases.push(flagCase(0, body, CF | PF | AF | ZF | SF | (count === 1 ? OF : 0)));
      }
    }
  }
  compare('carry chains', cases);
});

test('shifts and rotates for counts 0 to 33, SHLD/SHRD', { skip }, () => {
  const cases: string[] = [];
  const values = [0x1, 0x80, 0x8000, 0x80000000, 0x81, 0x7fffffff, 0xdeadbeef, 0x12345678, 0xffffffff];
  for (const width of [8, 16, 32] as const) {
    for (const op of ['shl', 'shr', 'sar', 'rol', 'ror', 'rcl', 'rcr']) {
      const rotate = op.startsWith('r');
      for (const a of values) for (let count = 0; count <= 33; count++) for (const cin of [0, CF | ZF | PF]) {
        const masked = count & 31;
        let mask: number;
        if (masked === 0) mask = ALL;
        else if (rotate) {
          // Rotates define CF (and OF for a count of 1); SF, ZF, AF, PF are left alone.
          const effective = op.startsWith('rc') ? masked % (width + 1) : masked % width;
          mask = (SF | ZF | AF | PF) | (masked === 1 ? OF | CF : op.startsWith('rc') || effective !== 0 ? CF : 0);
          if (!op.startsWith('rc') && effective === 0) mask = SF | ZF | AF | PF | (masked ? CF : 0);
        } else {
          mask = masked === 1 ? CF | OF | SF | ZF | PF : CF | SF | ZF | PF;
          if (masked > width) mask &= ~CF; // bits shifted past the width: CF undefined for SHL/SHR
        }
        cases.push(flagCase(cin, `  movl $${hex(a)}, %eax\n  movb $${count}, %cl\n  ${op}${SUFFIX[width]} %cl, ${REG[width][1]}`, mask));
      }
    }
  }
  for (const op of ['shld', 'shrd']) {
    for (const a of values) for (let count = 0; count <= 33; count++) {
      const masked = count & 31;
      const mask = masked === 0 ? ALL : masked === 1 ? CF | OF | SF | ZF | PF : CF | SF | ZF | PF;
      cases.push(flagCase(0, `  movl $${hex(a)}, %eax\n  movl $0x5a5aa5a5, %edx\n  movb $${count}, %cl\n  ${op}l %cl, %edx, %eax`, mask));
    }
  }
  compare('shift', cases);
});

test('multiply, BCD adjust, bit scans and tests, conditional set and move over all flag combinations', { skip }, () => {
  const cases: string[] = [];
  for (const a of VALUES32) for (const b of VALUES32.slice(0, 12)) {
    cases.push(flagCase(0, `  movl $${hex(a)}, %eax\n  movl $${hex(b)}, %ecx\n  mull %ecx\n  xorl %edx, %eax`, CF | OF));
    cases.push(flagCase(0, `  movl $${hex(a)}, %eax\n  movl $${hex(b)}, %ecx\n  imull %ecx\n  xorl %edx, %eax`, CF | OF));
    cases.push(flagCase(0, `  movl $${hex(a)}, %eax\n  movl $${hex(b)}, %ecx\n  imulw %cx, %ax`, CF | OF));
    cases.push(flagCase(0, `  movl $${hex(a)}, %eax\n  imull $${(b | 0)}, %eax, %eax`, CF | OF));
    cases.push(flagCase(0, `  movl $${hex(a)}, %eax\n  movl $${hex(b)}, %ecx\n  mulb %cl`, CF | OF));
  }
  for (let al = 0; al < 256; al += 7) for (const f of [0, CF, AF, CF | AF]) {
    cases.push(flagCase(f, `  movl $${hex(0x1200 | al)}, %eax\n  daa`, CF | AF | SF | ZF | PF));
    cases.push(flagCase(f, `  movl $${hex(0x1200 | al)}, %eax\n  das`, CF | AF | SF | ZF | PF));
    cases.push(flagCase(f, `  movl $${hex(0x1200 | al)}, %eax\n  aaa`, CF | AF));
    cases.push(flagCase(f, `  movl $${hex(0x1200 | al)}, %eax\n  aas`, CF | AF));
    cases.push(flagCase(f, `  movl $${hex(0x1200 | al)}, %eax\n  aam`, SF | ZF | PF));
    cases.push(flagCase(f, `  movl $${hex(0x0300 | al)}, %eax\n  aad`, SF | ZF | PF));
  }
  for (const v of VALUES32.filter((x) => x !== 0)) {
    cases.push(flagCase(0, `  movl $${hex(v)}, %ecx\n  bsfl %ecx, %eax`, ZF));
    cases.push(flagCase(0, `  movl $${hex(v)}, %ecx\n  bsrl %ecx, %eax`, ZF));
    cases.push(flagCase(0, `  movl $${hex(v)}, %eax\n  bswap %eax`, ALL));
    for (const bit of [0, 7, 31, 33]) {
      for (const op of ['bt', 'bts', 'btr', 'btc']) cases.push(flagCase(0, `  movl $${hex(v)}, %eax\n  movl $${bit}, %ecx\n  ${op}l %ecx, %eax`, CF));
    }
  }
  const flagSets = [0, CF, ZF, SF, OF, PF, CF | ZF, SF | OF, ZF | SF, ZF | OF, CF | PF | SF, ALL];
  for (const f of flagSets) for (let cc = 0; cc < 16; cc++) {
    const name = ['o', 'no', 'b', 'ae', 'e', 'ne', 'be', 'a', 's', 'ns', 'p', 'np', 'l', 'ge', 'le', 'g'][cc];
    cases.push(flagCase(f, `  movl $0x11111111, %eax\n  set${name} %al\n  movl $0x22222222, %ecx\n  cmov${name}l %ecx, %eax`, ALL));
  }
  compare('mul-bcd-bits-cc', cases);
});

test('string instructions with REP prefixes, both directions', { skip }, () => {
  const cases: string[] = [];
  const setup = `  leal buf2, %esi\n  leal buf2+64, %edi\n  movl $0, (%edi)\n  movl $0x04030201, (%esi)\n  movl $0x08070605, 4(%esi)`;
  for (const [op, mask] of [['movsb', ALL], ['movsl', ALL], ['cmpsb', ALL], ['cmpsw', ALL], ['scasb', ALL], ['lodsl', ALL], ['stosw', ALL]] as const) {
    for (const rep of ['', 'rep ', 'repne ']) for (const dir of ['cld', 'std']) {
      if (rep === 'repne ' && !op.startsWith('cmps') && !op.startsWith('scas')) continue;
      cases.push(flagCase(0, `${setup}\n  ${dir}\n  movl $3, %ecx\n  movl $0x05, %eax\n  ${rep}${op}\n  cld\n  movl (buf2+64), %eax\n  addl %ecx, %eax\n  subl %esi, %eax\n  addl %edi, %eax`, mask));
    }
  }
  compare('string', cases.map((c) => c.replace(/buf2/g, 'sbuf')));
});

test('REP MOVS/STOS over several pages, unaligned and overlapping', { skip }, () => {
  // Fills lbuf (3 pages) with a pattern, runs one string instruction, and prints a checksum of the buffer
  // plus where EDI and ECX ended.
  const pattern = `  leal lbuf, %edi\n  movl $3072, %ecx\n  movl $0x9e3779b9, %eax\n1: movl %eax, (%edi)\n  addl $4, %edi\n  imull $0x01000193, %eax\n  xorl %ecx, %eax\n  loop 1b\n  cld`;
  const checksum = `  movl %edi, %ebx\n  subl $lbuf, %ebx\n  addl %ecx, %ebx\n  leal lbuf, %esi\n  movl $3072, %ecx\n  xorl %eax, %eax\n2: roll $5, %eax\n  xorl (%esi), %eax\n  addl $4, %esi\n  loop 2b\n  movl %ebx, %edx\n  call print2`;
  const cases = [
    'movl $0x11223344, %eax\n  leal lbuf+5, %edi\n  movl $2500, %ecx\n  rep stosl',
    'movl $0x5a, %eax\n  leal lbuf+3, %edi\n  movl $9000, %ecx\n  rep stosb',
    'movl $0xbeef, %eax\n  leal lbuf+1, %edi\n  movl $3000, %ecx\n  rep stosw',
    'leal lbuf+7, %esi\n  leal lbuf+6001, %edi\n  movl $1300, %ecx\n  rep movsl',
    'leal lbuf+100, %esi\n  leal lbuf+101, %edi\n  movl $5000, %ecx\n  rep movsb',
    'leal lbuf, %esi\n  leal lbuf+2, %edi\n  movl $2000, %ecx\n  rep movsl',
    'leal lbuf+3000, %esi\n  leal lbuf+10, %edi\n  movl $6000, %ecx\n  rep movsb',
    'leal lbuf+4095, %esi\n  leal lbuf+8190, %edi\n  movl $1000, %ecx\n  rep movsw',
  ].map((op) => `${pattern}\n  ${op}\n${checksum}`);
  compare('bulk-string', cases);
});

test('x87: arithmetic, square root, compares and integer stores on double operands', { skip }, () => {
  const values = [1, 3, -2.5, 0.1, 7, 1e300, 1e-300, 123456.789];
  const cases: string[] = [];
  const loadPair = (a: number, b: number) => {
    const bytes = new DataView(new ArrayBuffer(16));
    bytes.setFloat64(0, a, true);
    bytes.setFloat64(8, b, true);
    const w = [0, 4, 8, 12].map((o) => hex(bytes.getUint32(o, true)));
    return `  movl $${w[0]}, fa\n  movl $${w[1]}, fa+4\n  movl $${w[2]}, fb\n  movl $${w[3]}, fb+4\n  finit\n  fldl fa\n  fldl fb`;
  };
  // Prints the low and high words of the double left in fr.
  const printResult = `  fstpl fr\n  movl fr, %eax\n  movl fr+4, %edx\n  call print2`;
  for (const a of values) for (const b of values) {
    for (const op of ['faddp', 'fsubp', 'fmulp', 'fdivp', 'fsubrp', 'fdivrp']) {
      cases.push(`${loadPair(a, b)}\n  ${op} %st, %st(1)\n${printResult}`);
    }
    cases.push(`${loadPair(a, b)}\n  fcompp\n  fnstsw %ax\n  andl $0x4500, %eax\n  xorl %edx, %edx\n  call print2`);
  }
  for (const a of values) {
    cases.push(`${loadPair(a, a)}\n  fsqrt\n  fabs\n${printResult}`);
    cases.push(`${loadPair(a, a)}\n  fchs\n${printResult}`);
    cases.push(`${loadPair(a, 0)}\n  fstp %st(0)\n  fistpl fi\n  movl fi, %eax\n  fnstsw %ax\n  movl %eax, %edx\n  movl fi, %eax\n  andl $0x1, %edx\n  call print2`);
  }
  compare('x87', cases);
});

test('XADD, XCHG and CMPXCHG with one register as both operands, and on memory', { skip }, () => {
  const cases: string[] = [];
  for (const v of [0, 1, 0x7f, 0x80, 0x7fff, 0x8000, 0x7fffffff, 0x80000000, 0xdeadbeef, 0xffffffff]) {
    cases.push(flagCase(0, `  movl $${hex(v)}, %eax\n  xaddl %eax, %eax`, ALL));
    cases.push(flagCase(0, `  movl $${hex(v)}, %eax\n  xaddw %ax, %ax`, ALL));
    cases.push(flagCase(0, `  movl $${hex(v)}, %eax\n  xaddb %ah, %ah`, ALL));
    cases.push(flagCase(0, `  movl $${hex(v)}, %ecx\n  xaddl %ecx, %ecx\n  movl %ecx, %eax`, ALL));
    cases.push(flagCase(0, `  movl $${hex(v)}, %eax\n  movl $0x01020304, %ecx\n  xaddl %ecx, %eax\n  xorl %ecx, %eax`, ALL));
    cases.push(flagCase(0, `  movl $${hex(v)}, fi\n  movl $0x11, %ecx\n  xaddl %ecx, fi\n  movl fi, %eax\n  shll $8, %eax\n  xorl %ecx, %eax`, ALL));
    cases.push(flagCase(0, `  movl $${hex(v)}, %ecx\n  xchgl %ecx, %ecx\n  movl %ecx, %eax`, ALL));
    cases.push(flagCase(0, `  movl $${hex(v)}, %ecx\n  movl $${hex(v)}, %eax\n  cmpxchgl %ecx, %ecx\n  xorl %ecx, %eax`, ALL));
    cases.push(flagCase(0, `  movl $${hex(v)}, %ecx\n  movl $5, %eax\n  cmpxchgl %ecx, %ecx\n  shll $4, %ecx\n  xorl %ecx, %eax`, ALL));
  }
  compare('xadd-xchg-cmpxchg', cases);
});

test('hint NOPs 0F 18-0F 1F (ENDBR32, NOP r/m, PREFETCH) decode their operand and touch no memory', { skip }, () => {
  // ESI points at an unmapped address (on the oracle an access would kill the program). Each case runs a hint NOP
  // between two instructions that build EAX, so a wrong length would execute stray bytes.
  const forms = ['endbr32', 'nop %eax', 'nopl (%esi)', 'nopw 0x12(%esi,%edi,4)', 'nopl 0x12345678(%esi)', 'nopl 0x12345678',
    'prefetchnta (%esi)', 'prefetcht0 4(%esi)', 'prefetcht1 (%esi,%eax)', 'prefetcht2 0x1000(%esi)',
    '.byte 0x0f, 0x19, 0x04, 0x24', '.byte 0x0f, 0x1a, 0x46, 0x08', '.byte 0x0f, 0x1b, 0x86, 0x00, 0x10, 0, 0', '.byte 0x0f, 0x1c, 0xc0',
    '.byte 0x0f, 0x1d, 0x0e', '.byte 0x0f, 0x1e, 0x3e', '.byte 0xf3, 0x0f, 0x1e, 0xfb', '.byte 0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00'];
  const cases = forms.map((form, i) => flagCase(0, `  movl $0xdead0000, %esi\n  movl $0x10, %edi\n  movl $${i}, %eax\n  ${form}\n  addl $0x100, %eax`, ALL));
  compare('hint-nops', cases);
});
