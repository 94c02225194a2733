import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HAVE_BINUTILS } from '../../src/cpu/x86/testing/assemble.js';
import { BareMachine } from '../../src/cpu/x86/testing/bare-machine.js';
import { CS, type X86Registers } from '../../src/cpu/x86/registers.js';

/**
 * `hex`: writes EAX as 8 hex digits at EDI and advances EDI (clobbers EBX, ECX); `write_stdout`: write(1, ECX,
 * EDI - ECX) (clobbers EAX, EBX, EDX). Assembly routines shared by the test programs that print values.
 */
export const HEX_ROUTINES = `
hex:
  movl $8, %ecx
1: roll $4, %eax
  movl %eax, %ebx
  andl $15, %ebx
  movb hexdigits(%ebx), %bl
  movb %bl, (%edi)
  incl %edi
  loop 1b
  ret
write_stdout:
  movl $4, %eax
  movl $1, %ebx
  movl %edi, %edx
  subl %ecx, %edx
  int $0x80
  ret
  .pushsection .data
hexdigits: .ascii "0123456789abcdef"
  .popsection
`;

/** Where test programs are linked: an address user space may map natively, and inside the test RAM. */
export const LOAD_ADDRESS = 0x1000000;
const GDT = 0x400, IDT = 0x800, SYSCALL_STUB = 0x1000, SYSCALL_PORT = 0xe0;

/** Assembles a 32-bit Linux program (text and data sections, `_start`, int $0x80 syscalls) into an ELF and a flat image. */
export function buildProgram(source: string): { elf: string; flat: Uint8Array } {
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-conf-'));
  writeFileSync(join(dir, 'p.S'), source);
  execFileSync('as', ['--32', '-o', join(dir, 'p.o'), join(dir, 'p.S')]);
  execFileSync('ld', ['-m', 'elf_i386', '-Ttext', '0x' + LOAD_ADDRESS.toString(16), '-o', join(dir, 'p'), join(dir, 'p.o')]);
  execFileSync('objcopy', ['-O', 'binary', join(dir, 'p'), join(dir, 'p.bin')]);
  return { elf: join(dir, 'p'), flat: new Uint8Array(readFileSync(join(dir, 'p.bin'))) };
}

/**
 * The oracle: the host CPU when its kernel runs 32-bit programs; otherwise (a 64-bit-only kernel, as on PVM
 * guests) QEMU's user-mode emulator `qemu-i386`, the reference the project follows; null when neither can run.
 */
export const ORACLE: { name: string; command: string[] } | null = (() => {
  if (!HAVE_BINUTILS) return null;
  const probe = buildProgram('.text\n.globl _start\n_start:\n  movl $1, %eax\n  movl $7, %ebx\n  int $0x80\n');
  for (const command of [[], ['qemu-i386']]) {
    const result = spawnSync(command[0] ?? probe.elf, command.length ? [probe.elf] : []);
    if (result.status === 7) return { name: command.length ? 'qemu-i386 (this host cannot run 32-bit programs)' : 'the host CPU', command };
  }
  return null;
})();

/** Runs the program on the oracle and returns its standard output. */
export function runNative(elf: string): string {
  if (!ORACLE) throw new Error('no oracle for 32-bit programs');
  const [cmd, ...args] = ORACLE.command.length ? [...ORACLE.command, elf] : [elf];
  return execFileSync(cmd, args, { encoding: 'latin1', maxBuffer: 64 * 2 ** 20 });
}

/**
 * Runs the flat image on the emulated CPU at CPL 0 in flat 32-bit protected mode. `int $0x80` goes through an
 * IDT gate to a stub (`out %al, $0xe0; iret`) whose port handler performs write(1, buf, len) and exit.
 */
export function runEmulated(flat: Uint8Array, jit: false | number, budget = 500_000_000): { output: string; exited: boolean } {
  const m = new BareMachine(64 * 2 ** 20, jit);
  const ram = m.memory.ram.bytes;
  const dv = new DataView(ram.buffer);
  dv.setBigUint64(GDT + 8, 0x00cf9a000000ffffn, true);
  dv.setBigUint64(GDT + 16, 0x00cf92000000ffffn, true);
  // IDT entry 0x80: 32-bit trap gate to SYSCALL_STUB, DPL 3.
  dv.setUint32(IDT + 0x80 * 8, (0x08 << 16) | (SYSCALL_STUB & 0xffff), true);
  dv.setUint32(IDT + 0x80 * 8 + 4, (SYSCALL_STUB & 0xffff0000) | 0xef00, true);
  ram.set([0xe6, SYSCALL_PORT, 0xcf], SYSCALL_STUB);
  ram.set(flat, LOAD_ADDRESS);
  let output = '';
  let exited = false;
  m.io.register(SYSCALL_PORT, 1, {
    read: () => 0,
    write: () => {
      const r = m.cpu.regs;
      if (r[0] === 4) {
        // write(fd = EBX, buf = ECX, count = EDX)
        const start = r[1] >>> 0, len = r[2] >>> 0;
        output += Buffer.from(ram.subarray(start, start + len)).toString('latin1');
        r[0] = len;
      } else if (r[0] === 1 || r[0] === 252) {
        exited = true;
        m.cpu.requestExit();
      }
    },
  }, { sizes: 1, name: 'syscall' });
  m.startFlat32(LOAD_ADDRESS, 60 * 2 ** 20);
  const regs: X86Registers = m.cpu.getRegisters();
  regs.gdtr = { base: GDT, limit: 23 };
  regs.idtr = { base: IDT, limit: 256 * 8 - 1 };
  regs.segments[CS].selector = 0x08;
  m.cpu.setRegisters(regs);
  let left = budget;
  while (left > 0 && !exited) {
    left -= m.cpu.run(Math.min(left, 1_000_000));
    if (m.cpu.stopReason === 'halt' || m.cpu.stopReason === 'triple-fault') break;
  }
  return { output, exited };
}
