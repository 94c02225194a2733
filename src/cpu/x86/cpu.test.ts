import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HAVE_BINUTILS, assembleFlat } from './testing/assemble.js';
import { BareMachine } from './testing/bare-machine.js';

const skip = HAVE_BINUTILS ? false : 'GNU binutils (as, ld, objcopy) are not installed';

/** 32-bit routine: prints EAX as 8 hex digits and a space on port 0xE9 (clobbers nothing). */
const PRINT_HEX32 = `
print_hex:
  pushal
  movl $8, %ecx
1: roll $4, %eax
  movl %eax, %edx
  andl $0xf, %edx
  movb hexdigits(%edx), %dl
  xchgl %eax, %edx
  outb %al, $0xe9
  xchgl %eax, %edx
  loop 1b
  movb $' ', %al
  outb %al, $0xe9
  popal
  ret
hexdigits: .ascii "0123456789abcdef"
`;

test('real mode: arithmetic, string ops and port output', { skip }, () => {
  const code = assembleFlat(`
  .code16
  .globl _start
_start:
  movw $0x7c0, %ax
  movw %ax, %ds
  movw %ax, %es
  movw $msg - _start, %si
  movw $5, %cx
  cld
1: lodsb
  outb %al, $0xe9
  loop 1b
  movw $0x1234, %ax
  addw $0xedcc, %ax      # 0x1234 + 0xedcc = 0x10000: AX=0, CF=1, ZF=1
  jnc fail
  jnz fail
  movb $'+', %al
  outb %al, $0xe9
  hlt
fail:
  movb $'!', %al
  outb %al, $0xe9
  hlt
msg: .ascii "hello"
`, 0);
  const m = new BareMachine();
  m.load(0x7c00, code);
  m.startReal(0x07c0, 0);
  assert.equal(m.runUntilHalt(), 'halt');
  assert.equal(m.output, 'hello+');
});

test('protected mode entry, paging, and a page fault with its error code and CR2', { skip }, () => {
  // Real-mode start at 0x8000: load a GDT, enter protected mode, build page tables identity-mapping the
  // first 4 MiB with 4 KiB pages (page 0x300000 not present, page 0x301000 read-only), enable CR0.WP, and
  // take #PF on a read and on a write.
  const code = assembleFlat(`
  .code16
  .globl _start
_start:
  cli
  xorw %ax, %ax
  movw %ax, %ds
  lgdtl gdtr
  movl %cr0, %eax
  orl $1, %eax
  movl %eax, %cr0
  ljmpl $0x08, $pm
  .code32
pm:
  movw $0x10, %ax
  movw %ax, %ds
  movw %ax, %es
  movw %ax, %ss
  movl $0x90000, %esp
  lidt idtr
  # page directory at 0x100000, one page table at 0x101000 mapping 0..4 MiB
  movl $0x100000, %edi
  movl $1024, %ecx
  xorl %eax, %eax
  rep stosl
  movl $0x101003, 0x100000
  movl $0x101000, %edi
  movl $0x3, %eax
  movl $1024, %ecx
2: stosl
  addl $0x1000, %eax
  loop 2b
  movl $0, 0x101000 + (0x300 * 4)       # 0x300000 not present
  movl $0x301001, 0x101000 + (0x301 * 4) # 0x301000 read-only
  movl $0x100000, %eax
  movl %eax, %cr3
  movl %cr0, %eax
  orl $0x80010000, %eax                 # PG | WP
  movl %eax, %cr0
  movl $0x11223344, %eax
  call print_hex
  movl 0x300010, %eax                   # #PF: not present, read
  movl $0x55, 0x301020                  # #PF: protection, write
  movl 0x301020, %eax                   # allowed read
  call print_hex
  hlt
pf_handler:
  popl %eax                             # error code
  call print_hex
  movl %cr2, %eax
  call print_hex
  # Map the page present and writable, then retry the instruction.
  movl %eax, %edx
  shrl $12, %edx
  andl $0x3ff, %edx
  andl $0xfffff000, %eax
  orl $3, %eax
  movl %eax, 0x101000(,%edx,4)
  movl %cr2, %eax
  invlpg (%eax)
  iretl
${PRINT_HEX32}
  .p2align 3
gdt:
  .quad 0
  .quad 0x00cf9a000000ffff
  .quad 0x00cf92000000ffff
gdtr:
  .word 23
  .long gdt
  .p2align 3
idt:
  .fill 14, 8, 0
  .word pf_handler, 0x08, 0x8e00, 0
idtr:
  .word 15*8-1
  .long idt
`, 0x8000);
  const m = new BareMachine();
  m.load(0x8000, code);
  m.startReal(0, 0x8000);
  assert.equal(m.runUntilHalt(), 'halt');
  assert.equal(m.output, '11223344 00000000 00300010 00000003 00301020 00000055 ');
});
