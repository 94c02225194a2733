import { BareMachine } from '../src/cpu/x86/testing/bare-machine.js';

/**
 * Guest MIPS on a CPU-bound loop (flat 32-bit code: arithmetic, memory, a conditional branch), hand-assembled
 * so the benchmark needs no assembler.
 */
export function measureMips(milliseconds: number, jit: false | number): number {
  // loop: add eax, ecx; xor edx, eax; mov [0x2000], edx; add ebx, [0x2000]; dec ecx; jnz loop; hlt
  const code = [0x01, 0xc8, 0x31, 0xc2, 0x89, 0x15, 0x00, 0x20, 0x00, 0x00, 0x03, 0x1d, 0x00, 0x20, 0x00, 0x00, 0x49, 0x75, 0xed, 0xf4];
  return measureLoop(code, milliseconds, jit);
}

/**
 * Guest MIPS on an x87 loop: x = sqrt((x × c + c) / c) (FMUL, FADD, FDIV, FSQRT, then DEC and JNZ), every
 * operation rounded in 80-bit extended precision.
 */
export function measureX87Mips(milliseconds: number, jit: false | number): number {
  // fninit; fld qword [0x2000] (c = 1.0000001, ST(1)); fld1 (x, ST(0))
  // loop: fmul st, st(1); fadd st, st(1); fdiv st, st(1); fsqrt; dec ecx; jnz loop; hlt
  const code = [0xdb, 0xe3, 0xdd, 0x05, 0x00, 0x20, 0x00, 0x00, 0xd9, 0xe8,
    0xd8, 0xc9, 0xd8, 0xc1, 0xd8, 0xf1, 0xd9, 0xfa, 0x49, 0x75, 0xf5, 0xf4];
  const data = new Uint8Array(new Float64Array([1.0000001]).buffer);
  return measureLoop(code, milliseconds, jit, data);
}

function measureLoop(code: number[], milliseconds: number, jit: false | number, data?: Uint8Array): number {
  const m = new BareMachine(undefined, jit);
  m.load(0x1000, Uint8Array.from(code));
  if (data) m.load(0x2000, data);
  m.startFlat32(0x1000);
  m.cpu.regs[1] = 0x7fffffff;
  const start = performance.now();
  let executed = 0;
  while (performance.now() - start < milliseconds) executed += m.cpu.run(1_000_000);
  return executed / ((performance.now() - start) * 1000);
}
