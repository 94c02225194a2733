import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** True when GNU as/ld/objcopy are on this machine (tests that assemble code skip otherwise). */
export const HAVE_BINUTILS = ['as', 'ld', 'objcopy'].every((t) => spawnSync('which', [t]).status === 0);

/** A flat GDT for 32-bit test programs (0x08 code, 0x10 data, base 0, 4 GiB) and `gdtr`, its LGDT operand; align it first. */
export const FLAT_GDT = `gdt:
  .quad 0
  .quad 0x00cf9a000000ffff
  .quad 0x00cf92000000ffff
gdtr:
  .word 23
  .long gdt`;

/**
 * Assembles GNU-syntax x86 source into a flat binary linked at `origin` (as --32, ld -m elf_i386,
 * objcopy -O binary). Test code only.
 */
export function assembleFlat(source: string, origin: number): Uint8Array {
  const dir = mkdtempSync(join(tmpdir(), 'tsvm-as-'));
  try {
    writeFileSync(join(dir, 'a.S'), source);
    execFileSync('as', ['--32', '-o', join(dir, 'a.o'), join(dir, 'a.S')], { stdio: ['ignore', 'ignore', 'pipe'] });
    execFileSync('ld', ['-m', 'elf_i386', '-Ttext', '0x' + origin.toString(16), '--oformat', 'binary', '-o', join(dir, 'a.bin'), join(dir, 'a.o')], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    return new Uint8Array(readFileSync(join(dir, 'a.bin')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
