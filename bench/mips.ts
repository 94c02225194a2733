import { BareMachine } from '../src/cpu/x86/testing/bare-machine.js';

/**
 * Guest MIPS on a CPU-bound loop (flat 32-bit code: arithmetic, memory, a conditional branch), hand-assembled
 * so the benchmark needs no assembler.
 */
export function measureMips(milliseconds: number, jit: false | number): number {
  const m = new BareMachine(undefined, jit);
  // loop: add eax, ecx; xor edx, eax; mov [0x2000], edx; add ebx, [0x2000]; dec ecx; jnz loop; hlt
  const code = [0x01, 0xc8, 0x31, 0xc2, 0x89, 0x15, 0x00, 0x20, 0x00, 0x00, 0x03, 0x1d, 0x00, 0x20, 0x00, 0x00, 0x49, 0x75, 0xed, 0xf4];
  m.load(0x1000, Uint8Array.from(code));
  m.startFlat32(0x1000);
  m.cpu.regs[1] = 0x7fffffff;
  const start = performance.now();
  let executed = 0;
  while (performance.now() - start < milliseconds) executed += m.cpu.run(1_000_000);
  return executed / ((performance.now() - start) * 1000);
}
