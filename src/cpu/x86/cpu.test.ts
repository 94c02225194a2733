import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FLAT_GDT, HAVE_BINUTILS, assembleFlat } from './testing/assemble.js';
import { BareMachine } from './testing/bare-machine.js';

/** Real-mode start: loads `gdtr` (the program's), enters flat 32-bit protected mode at `pm` with a stack at 0x90000. */
const ENTER_PROTECTED_MODE = `  .code16
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
`;

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

/** Runs a program loaded at 0x8000 from real mode, interpreted and with every block compiled at once, to HLT. */
function expectOutputRealMode(code: Uint8Array, expected: string): void {
  for (const jit of [false, 1] as const) {
    const m = new BareMachine(undefined, jit);
    m.load(0x8000, code);
    m.startReal(0, 0x8000);
    assert.equal(m.runUntilHalt(), 'halt');
    assert.equal(m.output, expected, jit ? 'compiled blocks' : 'interpreter');
  }
}

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
  // The same program interpreted, and with every block compiled at once.
  for (const jit of [false, 1] as const) {
    const m = new BareMachine(undefined, jit);
    m.load(0x7c00, code);
    m.startReal(0x07c0, 0);
    assert.equal(m.runUntilHalt(), 'halt');
    assert.equal(m.output, 'hello+');
  }
});

test('protected mode entry, paging, and a page fault with its error code and CR2', { skip }, () => {
  // Real-mode start at 0x8000: load a GDT, enter protected mode, build page tables identity-mapping the
  // first 4 MiB with 4 KiB pages (page 0x300000 not present, page 0x301000 read-only), enable CR0.WP, and
  // take #PF on a read and on a write.
  const code = assembleFlat(`
${ENTER_PROTECTED_MODE}  lidt idtr
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
${FLAT_GDT}
  .p2align 3
idt:
  .fill 14, 8, 0
  .word pf_handler, 0x08, 0x8e00, 0
idtr:
  .word 15*8-1
  .long idt
`, 0x8000);
  expectOutputRealMode(code, '11223344 00000000 00300010 00000003 00301020 00000055 ');
});

/**
 * A program for REP MOVS faulting on its source: `fill` runs in flat protected mode, then paging maps 0..4 MiB
 * one to one except page 0x300000, which is not present until the #PF handler maps it; `body` runs with paging
 * on and ends with HLT; `extra` is assembled after everything else.
 */
function sourcePageFaultProgram(fill: string, body: string, extra = ''): Uint8Array {
  return assembleFlat(`
${ENTER_PROTECTED_MODE}  lidt idtr
  cld
${fill}
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
  movl $0x100000, %eax
  movl %eax, %cr3
  movl %cr0, %eax
  orl $0x80010000, %eax
  movl %eax, %cr0
${body}
pf_handler:
  addl $4, %esp
  movl $0x300003, 0x101000 + (0x300 * 4)
  invlpg 0x300000
  iretl
${PRINT_HEX32}
  .p2align 3
${FLAT_GDT}
  .p2align 3
idt:
  .fill 14, 8, 0
  .word pf_handler, 0x08, 0x8e00, 0
idtr:
  .word 15*8-1
  .long idt
${extra}
`, 0x8000);
}

test('a page fault in the middle of REP MOVS keeps the elements moved (overlapping copy, page fault on the source)', { skip }, () => {
  // 32 bytes 0..31 at 0x2ffff0 straddle a page boundary; page 0x300000 is not present at first. REP MOVSB shifts
  // them down by one (ESI = EDI + 1, forwards): the 16th element faults on the source, the handler maps the
  // page, and the copy goes on from where it stopped (ECX/ESI/EDI keep their progress). Restarting from the first
  // element instead would copy bytes the first part already overwrote. The same in a compiled block, where the
  // REP MOVS is left to the interpreter after MOV ECX/ESI/EDI held in the block's locals.
  const code = sourcePageFaultProgram(`
  movl $0x2ffff0, %edi
  xorl %eax, %eax
1: stosb
  incb %al
  cmpb $32, %al
  jne 1b`, `
  movl $31, %ecx
  movl $0x2ffff1, %esi
  movl $0x2ffff0, %edi
  rep movsb
  movl %ecx, %eax
  call print_hex
  movl $0x2ffff0, %esi
  movl $8, %ecx
3: lodsl
  call print_hex
  loop 3b
  hlt`);
  expectOutputRealMode(code, '00000000 04030201 08070605 0c0b0a09 100f0e0d 14131211 18171615 1c1b1a19 1f1f1e1d ');
});

test('a page fault in REP MOVS after ESI/EDI came from an earlier block copies nothing past the destination (Debian installer slab corruption)', { skip }, () => {
  // The shape of Linux's copy_from_user: the caller sets ESI/EDI, the copy routine (another block) sets ECX and
  // runs REP MOVSB, the source's second page is not present. A compiled block once put back only the registers
  // it had written itself (ECX) after the fault, leaving ESI/EDI advanced: the restarted copy ran the whole count
  // from the middle and overwrote the 8 bytes after the 16-byte destination (the next slab object's free pointer).
  const code = sourcePageFaultProgram(`
  movl $0x2ffff8, %edi                  # source: 16 bytes 0x11.. straddling into page 0x300000
  movl $16, %ecx
  movb $0x11, %al
1: stosb
  incb %al
  loop 1b
  movl $0x200000, %edi                  # destination 16 bytes, then 16 guard bytes 0xee
  movl $32, %ecx
  movb $0xee, %al
  rep stosb`, `
  movl $0x2ffff8, %esi
  movl $0x200000, %edi
  call copy16
  movl $0x200000, %esi
  movl $8, %ecx
3: lodsl
  call print_hex
  loop 3b
  hlt`, `
  .p2align 12
copy16:                                 # its own page: its own block, where ESI/EDI are not written
  movl $16, %ecx
  rep movsb
  ret`);
  expectOutputRealMode(code, '14131211 18171615 1c1b1a19 201f1e1d eeeeeeee eeeeeeee eeeeeeee eeeeeeee ');
});

test('INVLPG of an address in a 4 MiB page drops the translations of the whole page (PSE)', { skip }, () => {
  // Linear 0x400000-0x7fffff is one 4 MiB page, first onto physical 4 MiB, then remapped onto physical 8 MiB
  // (pre-filled differently). After INVLPG of its first byte, a read at 0x401000 (another 4 KiB part of the
  // page, cached in the TLB by the first read) must see the new mapping, as on hardware, where the TLB holds
  // one entry for the whole page.
  const code = assembleFlat(`
${ENTER_PROTECTED_MODE}  movl $0x11111111, 0x401000
  movl $0x22222222, 0x801000
  # page directory at 0x100000: 0-4 MiB and 4-8 MiB identity-mapped with 4 MiB pages
  movl $0x100000, %edi
  movl $1024, %ecx
  xorl %eax, %eax
  rep stosl
  movl $0x000083, 0x100000
  movl $0x400083, 0x100004
  movl %cr4, %eax
  orl $0x10, %eax                       # PSE
  movl %eax, %cr4
  movl $0x100000, %eax
  movl %eax, %cr3
  movl %cr0, %eax
  orl $0x80000000, %eax
  movl %eax, %cr0
  movl 0x401000, %eax
  call print_hex
  movl $0x800083, 0x100004              # linear 4 MiB now onto physical 8 MiB
  invlpg 0x400000
  movl 0x401000, %eax
  call print_hex
  hlt
${PRINT_HEX32}
  .p2align 3
${FLAT_GDT}
`, 0x8000);
  for (const jit of [false, 1] as const) {
    const m = new BareMachine(16 * 2 ** 20, jit);
    m.load(0x8000, code);
    m.startReal(0, 0x8000);
    assert.equal(m.runUntilHalt(), 'halt');
    assert.equal(m.output, '11111111 22222222 ');
  }
});

test('privilege changes: IRET to ring 3, INT through a gate with the TSS stack, call gate, I/O bitmap, #GP, SYSENTER/SYSEXIT', { skip }, () => {
  const code = assembleFlat(`
${ENTER_PROTECTED_MODE}  lidt idtr
  # TSS descriptor base, then load TR.
  movl $tss, %eax
  movw %ax, gdt + 0x28 + 2
  shrl $16, %eax
  movb %al, gdt + 0x28 + 4
  movw $0x28, %ax
  ltr %ax
  # SYSENTER: CS 0x08 (SS 0x10), ESP, EIP.
  movl $0x174, %ecx
  movl $0x08, %eax
  xorl %edx, %edx
  wrmsr
  movl $0x175, %ecx
  movl $0x7f000, %eax
  wrmsr
  movl $0x176, %ecx
  movl $sysenter_target, %eax
  wrmsr
  # Data segments usable at every level (DPL 3), then enter ring 3 with IRET (IOPL 0).
  movw $0x23, %ax
  movw %ax, %ds
  movw %ax, %es
  pushl $0x23
  pushl $0x70000
  pushl $0x0002
  pushl $0x1b
  pushl $user
  iretl

user:
  movb $'U', %al
  outb %al, $0xe9
  movl %cs, %eax
  andl $3, %eax
  call print_hex
  int $0x80                       # to ring 0 through an interrupt gate, stack from the TSS
  lcall $0x33, $0                 # call gate (DPL 3) to ring 0, back with LRET
  cli                             # #GP(0): IOPL 0 at CPL 3
  outb %al, $0x80                 # #GP(0): port 0x80 is not in the I/O bitmap
  movl $user_after_sysexit, %edx
  movl %esp, %ecx
  sysenter
user_after_sysexit:
  movl %cs, %eax
  call print_hex
  int $0x81

int80:
  movb $'I', %al
  outb %al, $0xe9
  movl %cs, %eax
  andl $3, %eax
  call print_hex
  movl %esp, %eax                 # TSS.ESP0 minus the 5 pushed dwords
  call print_hex
  movl 16(%esp), %eax             # the user SS pushed by the switch
  call print_hex
  iretl

gate_target:
  movb $'G', %al
  outb %al, $0xe9
  movl %cs, %eax
  call print_hex
  movl 12(%esp), %eax             # the caller's SS
  call print_hex
  lret

gp_handler:
  movb $'P', %al
  outb %al, $0xe9
  popl %eax                       # error code
  call print_hex
  movl (%esp), %eax
  movb (%eax), %al                # skip the faulting instruction: 1 byte (cli) or 2 (out imm8)
  cmpb $0xfa, %al
  je 1f
  incl (%esp)
1: incl (%esp)
  iretl

sysenter_target:
  movb $'S', %al
  outb %al, $0xe9
  movl %cs, %eax
  call print_hex
  sysexit

int81:
  hlt
${PRINT_HEX32}
  .p2align 3
gdt:
  .quad 0
  .quad 0x00cf9a000000ffff        # 0x08 ring 0 code
  .quad 0x00cf92000000ffff        # 0x10 ring 0 data
  .quad 0x00cffa000000ffff        # 0x18 ring 3 code
  .quad 0x00cff2000000ffff        # 0x20 ring 3 data
  .word 0x88, 0                   # 0x28 TSS: limit covers the I/O bitmap up to port 0xEF
  .byte 0, 0x89, 0, 0
  .word gate_target, 0x08         # 0x30 call gate, DPL 3, no parameters
  .byte 0, 0xec
  .word 0
gdtr:
  .word 0x37
  .long gdt
  .p2align 3
idt:
  .fill 13, 8, 0
  .word gp_handler, 0x08, 0x8e00, 0
  .fill 0x80 - 14, 8, 0
  .word int80, 0x08, 0xee00, 0
  .word int81, 0x08, 0xee00, 0
idtr:
  .word 0x82 * 8 - 1
  .long idt
  .p2align 2
tss:
  .long 0, 0x80000, 0x10          # link, ESP0, SS0
  .fill 22, 4, 0
  .word 0, 0x68                   # trap flag, I/O bitmap offset
  .fill 0x1d, 1, 0xff             # ports 0x00-0xE7 denied
  .byte 0xfd                      # 0xE8-0xEF: only 0xE9 allowed
  .fill 0x89 - 0x68 - 0x1e, 1, 0xff
`, 0x8000);
  expectOutputRealMode(code, 'U00000003 I00000000 0007ffec 00000023 G00000008 00000023 P00000000 P00000000 S00000008 0000001b ');
});

test('compiled code: writes into it, by the guest or by DMA, take effect at once', { skip }, () => {
  // A hot loop is compiled; the program then patches the loop's immediate (self-modifying code) and runs it
  // again; the host then patches it as a device would (DMA), and the guest runs it a third time.
  const code = assembleFlat(`
  .code32
  .globl _start
_start:
  call sum
  call print_hex
  movl $3, patch + 1        # the loop now adds 3 per iteration
  call sum
  call print_hex
  outb %al, $0xe8           # the test's port handler patches the immediate to 5 through DMA
  call sum
  call print_hex
  hlt
sum:
  xorl %eax, %eax
  movl $1000, %ecx
patch:
  .byte 0x05                # addl $imm32, %eax
  .long 1
  loop patch
  ret
${PRINT_HEX32}
`, 0x10000);
  for (const jit of [false, 1] as const) {
    const m = new BareMachine(undefined, jit);
    m.load(0x10000, code);
    const patchAt = code.findIndex((b, i) => b === 0x05 && code[i + 1] === 1 && code[i + 2] === 0) + 1;
    m.io.register(0xe8, 1, { read: () => 0, write: () => { m.memory.writeBytes(0x10000 + patchAt, Uint8Array.of(5, 0, 0, 0)); } }, { sizes: 1, name: 'dma' });
    m.startFlat32(0x10000);
    assert.equal(m.runUntilHalt(), 'halt');
    assert.equal(m.output, '000003e8 00000bb8 00001388 ');
  }
});

/**
 * Flat 32-bit test harness: a GDT, and an IDT (vectors 0-13, then `moreGates`) whose #UD and #GP handlers print U or G and resume where the case
 * says (each case stores its resume address in \`resume\` before the instruction under test), and whose #DE
 * handler sets ECX to 1 and retries (a DIV by ECX). The test defines db_handler (#DB).
 */
function flatIdt(moreGates = ''): string {
  return `
de_handler:
  movl $1, %ecx
  iretl
ud_handler:
  movb $'U', %al
  outb %al, $0xe9
  jmp resume_case
gp_handler:
  addl $4, %esp
  movb $'G', %al
  outb %al, $0xe9
resume_case:
  movl resume, %eax
  movl %eax, (%esp)
  iretl
  .p2align 3
${FLAT_GDT}
idtr:
  .word idt_end - idt - 1
  .long idt
resume: .long 0
  .p2align 3
idt:
  .word de_handler, 0x08, 0x8e00, 0
  .word db_handler, 0x08, 0x8e00, 0
  .fill 4, 8, 0
  .word ud_handler, 0x08, 0x8e00, 0
  .fill 6, 8, 0
  .word gp_handler, 0x08, 0x8e00, 0
${moreGates}
idt_end:
`;
}

test('LOCK: #UD unless on a lockable instruction with a memory destination', { skip }, () => {
  const ok = ['addl %eax, mem', 'subl $3, mem', 'orb $1, mem', 'adcw %ax, mem', 'sbbl %ecx, mem', 'andl $-1, mem', 'xorl %eax, mem',
    'incl mem', 'decb mem', 'notl mem', 'negl mem', 'xchgl %eax, mem', 'xchgl mem, %ecx', 'btsl $3, mem', 'btrl %ecx, mem', 'btcl $1, mem',
    'xaddl %eax, mem', 'cmpxchgl %ecx, mem', 'cmpxchg8b mem'];
  const ud = ['nop', 'addl %eax, %ecx', 'addl mem, %eax', 'movl %eax, mem', 'movl mem, %eax', 'cmpl %eax, mem', 'cmpl $1, mem',
    'incl %eax', 'incl %ecx', 'notl %eax', 'xchgl %eax, %ecx', 'btl %ecx, mem', 'btl $1, mem', 'xaddl %eax, %ecx', 'testl %eax, mem',
    'leal mem, %eax', 'pushl mem', 'cld', 'movsb', 'endbr32', 'nopl mem'];
  const cases = [...ok, ...ud].map((insn, i) => `  movl $c${i}, resume\n  .byte 0xf0\n  ${insn}\n  movb $'.', %al\n  outb %al, $0xe9\nc${i}:`).join('\n');
  const code = assembleFlat(`
  .code32
  .globl _start
_start:
  lgdt gdtr
  lidt idtr
  movl $0x1000, %eax
  movl $0x10, %ecx
  leal mem, %esi
  leal mem, %edi
${cases}
  hlt
db_handler:
  jmp resume_case
${flatIdt()}
mem: .quad 0
`, 0x8000);
  for (const jit of [false, 1] as const) {
    const m = new BareMachine(undefined, jit);
    m.load(0x8000, code);
    m.startFlat32(0x8000);
    assert.equal(m.runUntilHalt(), 'halt');
    assert.equal(m.output, '.'.repeat(ok.length) + 'U'.repeat(ud.length), jit ? 'compiled blocks' : 'interpreter');
  }
});

test('MOV to CR0/CR4: invalid combinations and reserved CR4 bits raise #GP, CD without NW is fine', { skip }, () => {
  // Each case writes EAX to a control register and prints G (#GP), U (#UD) or the value read back.
  const writes: [string, number][] = [
    ['cr0', 0x60000011], ['cr0', 0x40000011], ['cr0', 0x20000011], ['cr0', 0x00000011], ['cr0', 0x80000010], ['cr0', 0x0000ff11],
    ['cr4', 0x00000008], ['cr4', 0x00000010], ['cr4', 0x00000004], ['cr4', 0x00000080], ['cr4', 0x00000001], ['cr4', 0x00000002],
    ['cr4', 0x00000020], ['cr4', 0x00000040], ['cr4', 0x00000200], ['cr4', 0x00000800], ['cr4', 0],
  ];
  const cases = writes.map(([reg, v], i) => `  movl $c${i}, resume\n  movl $0x${v.toString(16)}, %eax\n  movl %eax, %${reg}\n  movl %${reg}, %eax\n  call print_hex\nc${i}:`).join('\n');
  const code = assembleFlat(`
  .code32
  .globl _start
_start:
  lgdt gdtr
  lidt idtr
${cases}
  movl $c_cr1, resume
  .byte 0x0f, 0x20, 0xc8           # movl %cr1, %eax
c_cr1:
  hlt
db_handler:
  jmp resume_case
${flatIdt()}
${PRINT_HEX32}
`, 0x8000);
  for (const jit of [false, 1] as const) {
    const m = new BareMachine(undefined, jit);
    m.load(0x8000, code);
    m.startFlat32(0x8000);
    assert.equal(m.runUntilHalt(), 'halt');
    assert.equal(m.output, '60000011 40000011 G00000011 G00000011 00000008 00000010 00000004 00000080 GGGGGG00000000 U', jit ? 'compiled blocks' : 'interpreter');
  }
});

test('debugging: single-step traps (POPF, INT n, MOV SS, REP, INTR priority), code/data/I-O breakpoints, RF (also in fault images), DR7.GD, DR4 with CR4.DE', { skip }, () => {
  // The #DB handler prints the return EIP and DR6 (BD BS B3-B0), clears DR6 and sets RF in the EFLAGS image (so
  // a code breakpoint fault resumes). Vector 0x20 (INTR, raised by a write to port 0xE8) prints "I" and lowers it.
  // The program then prints "|" and, from a table, what it should have printed: the test compares both halves.
  const code = assembleFlat(`
  .code32
  .globl _start
_start:
  lgdt gdtr
  lidt idtr
  leal src, %esi
  leal dst, %edi
  sti
  pushfl
  orl $0x100, (%esp)
  popfl                          # TF set by POPF: no trap after it
  nop
a2: movl $3, %ecx
a3: int $0x31                    # no trap after INT n (its handler runs with TF clear, its IRET began with TF clear)
  addl $1, %ecx
a5: movw %ss, %ax
a6: movw %ax, %ss                # its trap waits until after the next instruction
  movl %esp, %ebp
a7: rep movsb                    # a trap after each of the 4 iterations, EIP at the instruction until the last
a8: outb %al, $0xe8              # raises INTR: the trap is delivered first, the interrupt after the #DB handler
a9: nop
a10: pushfl
a11: andl $~0x100, (%esp)
a12: popfl                       # clears TF: traps after it all the same
a13: nop

  movl $b1, %eax
  movl %eax, %dr0
  movl $wvar, %eax
  movl %eax, %dr1
  movl $rwvar, %eax
  movl %eax, %dr2
  movl $0x80, %eax
  movl %eax, %dr3
  movl %cr4, %eax
  orl $8, %eax
  movl %eax, %cr4
  # DR0: execute; DR1: write, 4 bytes; DR2: read/write, 2 bytes; DR3: I/O, 1 byte.
  movl $(0x55 | (0x1 << 20) | (0x3 << 22) | (0x3 << 24) | (0x1 << 26) | (0x2 << 28)), %eax
  movl %eax, %dr7
  xorl %ecx, %ecx
b1: incl %ecx                    # fault before it; runs once after the handler (RF)
  movl wvar, %edx                # a read: the write breakpoint does not match
  movw %dx, wvar+2               # trap after it
b3: movb %dl, wvar+4             # past the breakpoint's 4 bytes
  movl rwvar-2, %edx             # a read overlapping the read/write breakpoint: trap
b4: outb %al, $0x80              # I/O breakpoint: trap
b5: inb $0x81, %al               # the next port: nothing
  movl $0x2000, %eax             # DR7.GD alone
  movl %eax, %dr7
b6: movl %dr0, %eax              # #DB fault (BD); GD is clear in the handler, so it runs afterwards
  movl %ecx, %eax
  call print_hex
  movl $b7, %eax                 # a code breakpoint on an instruction that faults (#DE) and is retried
  movl %eax, %dr0
  movl $1, %eax
  movl %eax, %dr7
  xorl %ecx, %ecx
  movl $7, %eax
  xorl %edx, %edx
b7: divl %ecx                    # matches once: the #DE image has RF set, so the retry runs
  movl $0, %ecx
  movl %ecx, %dr7
  call print_hex
  movl $c_ud, resume
  movl %dr4, %eax                # #UD with CR4.DE
c_ud:
  movb $'|', %al
  outb %al, $0xe9

  leal expected, %esi
1: movl (%esi), %eax
  cmpl $-1, %eax
  je 4f
  cmpl $2, %eax
  ja 3f
  jb 2f
  movb $'U', %al
  outb %al, $0xe9
  jmp 5f
2: testl %eax, %eax
  jnz 6f
  movb $'I', %al
  outb %al, $0xe9
  movb $' ', %al
  outb %al, $0xe9
  jmp 5f
3: call print_hex
6: movl 4(%esi), %eax
  call print_hex
5: addl $8, %esi
  jmp 1b
4: hlt

db_handler:
  pushal
  movl 32(%esp), %eax
  call print_hex
  movl %dr6, %eax
  andl $0xe00f, %eax
  call print_hex
  xorl %eax, %eax
  movl %eax, %dr6
  orl $0x10000, 40(%esp)
  popal
  iretl
int31:
  iretl
intr_handler:
  movb $'I', %al
  outb %al, $0xe9
  movb $' ', %al
  outb %al, $0xe9
  outb %al, $0xe7
  iretl
${flatIdt(`  .fill 0x20 - 14, 8, 0
  .word intr_handler, 0x08, 0x8e00, 0
  .fill 0x10, 8, 0
  .word int31, 0x08, 0x8e00, 0`)}
${PRINT_HEX32}
  .p2align 2
expected:
  .long a2, 0x4000, a3, 0x4000, a5, 0x4000, a6, 0x4000, a7, 0x4000, a7, 0x4000, a7, 0x4000, a7, 0x4000, a8, 0x4000, a9, 0x4000, 0, 0
  .long a10, 0x4000, a11, 0x4000, a12, 0x4000, a13, 0x4000
  .long b1, 0x1, b3, 0x2, b4, 0x4, b5, 0x8, b6, 0x2000, 1, 1, b7, 0x1, 1, 7, 2, 0
  .long -1
  .p2align 2
wvar: .long 0, 0
rwvar: .long 0
src: .ascii "abcd"
dst: .long 0
`, 0x8000);
  for (const jit of [false, 1] as const) {
    const m = new BareMachine(undefined, jit);
    m.load(0x8000, code);
    m.io.register(0xe7, 2, { read: () => 0, write: (offset) => m.cpu.setIntr(offset === 1) }, { sizes: 1, name: 'intr' });
    m.startFlat32(0x8000);
    assert.equal(m.runUntilHalt(), 'halt', m.output.slice(0, 2000));
    const [got, want] = m.output.split('|');
    assert.equal(got, want, jit ? 'compiled blocks' : 'interpreter');
  }
});

test('x87 errors: an unmasked exception is reported by the next waiting instruction, as #MF with CR0.NE, else through FERR# (execution goes on)', { skip }, () => {
  for (const ne of [true, false]) {
    const code = assembleFlat(`
  .code16
  .globl _start
_start:
  movl %cr0, %eax
  ${ne ? 'orl $0x20, %eax' : 'andl $~0x20, %eax'}
  movl %eax, %cr0
  fninit
  pushw $0x37b           # ZE unmasked
  movw %sp, %bp
  fldcw (%bp)
  fldz
  fld1
  fdiv %st(1), %st       # 1 / 0: ZE, reported later
  movb $'a', %al
  outb %al, $0xe9
  fwait
  movb $'!', %al
  outb %al, $0xe9
  hlt
  .org 0x100
handler:
  fnstsw %ax
  testb $0x84, %al       # ZE and ES
  jz 1f
  movb $'M', %al
  outb %al, $0xe9
1: hlt
`, 0);
    for (const jit of [false, 1] as const) {
      const m = new BareMachine(undefined, jit);
      m.load(0x7c00, code);
      // The #MF vector (16) in the real-mode interrupt table: 07C0:0100, the handler.
      new DataView(m.memory.ram.bytes.buffer).setUint32(16 * 4, (0x7c0 << 16) | 0x100, true);
      m.startReal(0x07c0, 0);
      assert.equal(m.runUntilHalt(), 'halt');
      assert.equal(m.output, ne ? 'aM' : 'a!', `CR0.NE ${ne}, ${jit ? 'compiled' : 'interpreted'}`);
    }
  }
});
