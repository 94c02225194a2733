import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FLAT_GDT, HAVE_BINUTILS, assembleFlat } from '../../cpu/x86/testing/assemble.js';
import { BARE_IRQ_PORT, BareMachine } from '../../cpu/x86/testing/bare-machine.js';

const skip = HAVE_BINUTILS ? false : 'GNU binutils (as, ld, objcopy) are not installed';

/**
 * A bare-metal program driving the APICs as an OS does: IA32_APIC_BASE and CPUID, the timer in one-shot,
 * periodic and TSC-deadline modes (HLT until it fires), self IPIs (fixed, NMI), TPR masking, nested
 * interrupts with EOIs in order, and an I/O APIC level-triggered pin whose remote IRR holds it until the EOI.
 * Each handler prints a letter on port 0xE9; `jmp 1f; 1:` after an IPI gives compiled code an instruction
 * boundary where the run loop looks at the interrupt (as the interpreter does after every instruction).
 */
const PROGRAM = `
  .code32
  .set APIC, 0xfee00000
  .set EOI, APIC + 0xb0
  .set TPR, APIC + 0x80
  .set SVR, APIC + 0xf0
  .set ICR_LO, APIC + 0x300
  .set ICR_HI, APIC + 0x310
  .set LVT_TIMER, APIC + 0x320
  .set INIT_COUNT, APIC + 0x380
  .set CUR_COUNT, APIC + 0x390
  .set DIVIDE, APIC + 0x3e0
  .set IOREGSEL, 0xfec00000
  .set IOWIN, 0xfec00010
  .set TICKS, 0x20000
  .set IRQS, 0x20004
  .set IDT, 0x21000
  .macro print c
    movb $\\c, %al
    outb %al, $0xe9
  .endm
  .macro gate vec, handler
    movl $\\handler, %eax
    movw %ax, IDT + \\vec * 8
    movw $0x08, IDT + \\vec * 8 + 2
    movw $0x8e00, IDT + \\vec * 8 + 4
    shrl $16, %eax
    movw %ax, IDT + \\vec * 8 + 6
  .endm
  .macro ipi low
    movl $\\low, ICR_LO
    jmp 1f
1:
  .endm
  .globl _start
_start:
  lgdt gdtr
  ljmp $0x08, $1f
1: movw $0x10, %ax
  movw %ax, %ds
  movw %ax, %es
  movw %ax, %ss
  gate 2, h_nmi
  gate 0x40, h_oneshot
  gate 0x41, h_periodic
  gate 0x42, h_deadline
  gate 0x50, h_self
  gate 0x51, h_unmasked
  gate 0x52, h_outer
  gate 0x53, h_after
  gate 0x62, h_nested
  gate 0x70, h_level
  lidt idtr
  movl $0x1b, %ecx
  rdmsr
  cmpl $0xfee00900, %eax
  jne fail
  print 'B'
  movl $1, %eax
  cpuid
  btl $9, %edx
  jnc fail
  print 'C'
  movl $0x1ff, SVR
  sti
  # One-shot: 1000 counts at divide-by-1.
  movl $0xb, DIVIDE
  movl $0x40, LVT_TIMER
  movl $1000, INIT_COUNT
  hlt
  print 't'
  cmpl $0, CUR_COUNT
  jne fail
  # Periodic: three interrupts, then masked and stopped.
  movl $0, TICKS
  movl $0x20041, LVT_TIMER
  movl $2000, INIT_COUNT
2: hlt
  cmpl $3, TICKS
  jb 2b
  movl $0x10041, LVT_TIMER
  movl $0, INIT_COUNT
  print 'p'
  # TSC deadline: 5000 TSC ticks from now.
  movl $0x40042, LVT_TIMER
  rdtsc
  addl $5000, %eax
  adcl $0, %edx
  movl $0x6e0, %ecx
  wrmsr
  hlt
  print 'd'
  # Self IPI (fixed), then NMI to this APIC's own ID.
  ipi 0x40050
  print 's'
  movl $0, ICR_HI
  ipi 0x400
  print 'n'
  # TPR class 5 holds vector 0x51 until it drops.
  movl $0x50, TPR
  ipi 0x40051
  print 'm'
  movl $0, TPR
  jmp 1f
1: print 'u'
  # Nested: 0x52's handler sends 0x53 (same class: waits for its EOI) and 0x62 (higher: nests at once).
  ipi 0x40052
  print 'q'
  # I/O APIC pin 5: level-triggered, vector 0x70, physical destination 0.
  movl $0x1a, IOREGSEL
  movl $0x8070, IOWIN
  movl $0x1b, IOREGSEL
  movl $0, IOWIN
  movl $0, IRQS
  movb $0x85, %al
  outb %al, $${BARE_IRQ_PORT}
  jmp 1f
1: print 'i'
  cmpl $2, IRQS
  jne fail
  movl $0x1a, IOREGSEL
  testl $0x4000, IOWIN
  jnz fail
  print 'c'
  cli
  print '.'
  hlt
fail:
  cli
  print '!'
  hlt

h_nmi:
  pushl %eax
  print 'N'
  popl %eax
  iret
h_oneshot:
  pushl %eax
  print 'T'
  movl $0, EOI
  popl %eax
  iret
h_periodic:
  pushl %eax
  incl TICKS
  print 'P'
  movl $0, EOI
  popl %eax
  iret
h_deadline:
  pushl %eax
  print 'D'
  movl $0, EOI
  popl %eax
  iret
h_self:
  pushl %eax
  print 'S'
  movl $0, EOI
  popl %eax
  iret
h_unmasked:
  pushl %eax
  print 'U'
  movl $0, EOI
  popl %eax
  iret
h_outer:
  pushl %eax
  print '('
  ipi 0x40053
  ipi 0x40062
  sti
  nop
  jmp 1f
1: print ')'
  cli
  movl $0, EOI
  popl %eax
  iret
h_after:
  pushl %eax
  print 'Q'
  movl $0, EOI
  popl %eax
  iret
h_nested:
  pushl %eax
  print 'H'
  movl $0, EOI
  popl %eax
  iret
# Level: the first EOI comes with the pin still asserted (delivered again); the second run lowers it first.
h_level:
  pushl %eax
  incl IRQS
  print 'I'
  movl $0x1a, IOREGSEL
  testl $0x4000, IOWIN
  jnz 1f
  print '!'
1: cmpl $2, IRQS
  jb 2f
  movb $0x05, %al
  outb %al, $${BARE_IRQ_PORT}
2: movl $0, EOI
  popl %eax
  iret

  .p2align 3
${FLAT_GDT}
idtr:
  .word 256 * 8 - 1
  .long IDT
`;

test('bare metal: APIC timer modes, self IPIs, TPR, nested EOIs, I/O APIC level-triggered remote IRR', { skip }, () => {
  const code = assembleFlat(PROGRAM, 0x10000);
  for (const jit of [false, 1] as const) {
    const m = new BareMachine(undefined, jit, { apic: true });
    m.load(0x10000, code);
    m.startFlat32(0x10000);
    assert.equal(m.runUntilHalt(), 'halt', `jit=${jit}: ${m.output}`);
    assert.equal(m.output, 'BCTtPPPpDdSsNnmUu(H)QqIIic.', `jit=${jit}`);
  }
});
