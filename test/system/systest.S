/*
 * A bare-metal i386 test guest: system-level checks (exceptions, paging, segments, gates, task switches,
 * virtual-8086 mode, the I/O permission bitmap, control and debug registers). It boots as a Multiboot (v1)
 * kernel, prints one line per check on the debug console (port 0xE9),
 *     name: XXXXXXXX ok              the observed value is what the SDM says
 *     name: XXXXXXXX FAIL want YYYYYYYY
 *     name: XXXXXXXX info            the SDM allows more than one outcome (printed, not asserted)
 * then "done N failed" (N in hex) and writes 0 to isa-debug-exit (port 0xF4): exit status 1. An exception
 * no check expected prints "unexpected exception: vector error EIP" and exits with status 3.
 * "no-cr4-reserved" on the command line skips the one check that wedges QEMU 7.2.
 *
 * Exceptions are caught by TRY: the handler records vector, error code, EIP, CS, EFLAGS, CR2 and a few
 * registers, then resumes ring-0 code at the TRY's label with the TRY's stack, whatever mode, task or
 * privilege level faulted (general registers are not restored; DS, ES, FS, GS, SS are flat ring-0 data).
 * Code that should not fault ends with NOFAULT (INT 0x80), which resumes the same way with vector 0x80.
 */

        .set DEBUGCON, 0xe9
        .set DEBUG_EXIT, 0xf4
        .set STACK0, 0x90000            /* ring-0 stack of the main task */
        .set STACK0_TSS, 0x70000        /* ring-0 stack for interrupts from ring 3 and v86 (TSS A) */
        .set STACK_B, 0x60000           /* task B */
        .set STACK0_V, 0x68000          /* ring-0 stack of the v86 task */
        .set STACK3, 0x80000            /* ring 3 */
        .set PD, 0x400000               /* page directory; page tables follow */
        .set PT0, 0x401000
        .set PT1, 0x402000
        .set TESTPAGE, 0x500000         /* a page the paging checks remap */
        .set OTHERPAGE, 0x501000
        .set HANDLER16_COPY, 0x7200     /* where the 16-bit gate's handler runs */
        .set SEGBASE, 0x200000          /* base of the limited data segments */
        .set V86CS, 0xfff0              /* v86 code segment: linear 0xfff00 + IP reaches the kernel's first 64 KiB */

        .set SEL_CODE0, 0x08
        .set SEL_DATA0, 0x10
        .set SEL_CODE3, 0x18
        .set SEL_DATA3, 0x20
        .set SEL_TSS_A, 0x28
        .set SEL_TSS_B, 0x30
        .set SEL_UP, 0x38               /* data, expand-up, limit 0xfff */
        .set SEL_DOWN, 0x40             /* data, expand-down, B=1, limit 0xfff */
        .set SEL_DOWN16, 0x48           /* data, expand-down, B=0, limit 0xfff */
        .set SEL_NP, 0x50               /* writable data, not present */
        .set SEL_GATE3, 0x58            /* call gate DPL 3 -> ring 0, 2 parameters */
        .set SEL_GATE0, 0x60            /* call gate DPL 0 */
        .set SEL_GATE_NP, 0x68          /* call gate DPL 3, not present */
        .set SEL_TSS_SHORT, 0x70        /* TSS with limit 0x60 */
        .set SEL_RODATA, 0x78           /* read-only data */
        .set SEL_XCODE, 0x80            /* execute-only code */
        .set SEL_TSS_V, 0x88            /* TSS of a v86 task */
        .set SEL_TSS_DF, 0x90           /* TSS of the double-fault task */
        .set SEL_CODE_SMALL, 0x98       /* code, limit 0xfff */
        .set SEL_TASK_GATE, 0xa0        /* task gate to task B */
        .set SEL_CONFORMING, 0xa8       /* conforming code, DPL 0 */
        .set SEL_LDT, 0xb0              /* an LDT with one data descriptor (selector 0x04 | TI) */
        .set SEL_CODE_NP, 0xb8          /* code, not present */
        .set SEL_CODE1, 0xc0            /* ring-1 code and data */
        .set SEL_DATA1, 0xc8
        .set SEL_GATE_R1, 0xd0          /* call gate DPL 3 -> ring 1, 2 parameters */
        .set SEL_DATA16, 0xd8           /* data, 16-bit (B=0), limit 0xffff: a 16-bit stack */
        .set SEL_TASK_GATE3, 0xe0       /* task gate DPL 3 to task B */
        .set GDT_ENTRIES, 29

        .set EFLAGS_TF, 0x100
        .set EFLAGS_IOPL3, 0x3000
        .set EFLAGS_NT, 0x4000
        .set EFLAGS_VM, 0x20000
        .set EFLAGS_AC, 0x40000

        .text
        .align 4
multiboot_header:
        .long 0x1badb002, 0x00000003, -(0x1badb002 + 0x00000003)

/* ---- virtual-8086 code: runs at V86CS:(label - 0xfff00), kept first in .text ---- */
        .code16
v86_int30:
        int $0x30
v86_cli:
        cli
        int $0x80
v86_int80:
        int $0x80
v86_sensitive:
        cli
        sti
        pushf
        popf
        int $0x80
v86_in84:
        inb $0x84, %al
        int $0x80
v86_in80:
        inb $0x80, %al
        int $0x80
v86_task:
        int $0x30
v86_int87:
        int $0x87
v86_int3:
        int3
v86_segment:
        mov $0x7100, %ax                /* DS base 0x71000 */
        mov %ax, %ds
        mov 4, %eax
        int $0x80
v86_segment_after:
v86_popf_iopl:
        pushw $0
        popf                            /* IOPL 3: IF may change, IOPL may not */
        pushf
        pop %ax
        int $0x80
v86_iret16:
        pushf
        pushw $V86CS
        call 1f                         /* IP of the target, found at run time */
1:      pop %ax
        add $(v86_iret16_target - 1b), %ax
        push %ax
        iret
        hlt
v86_iret16_target:
        int $0x80
v86_hlt:
        hlt
v86_offset_limit:
        mov 0xffff, %ax                 /* a word at offset 0xffff: past the 64 KiB limit */
        int $0x80
v86_pushf:
        pushf
v86_iret:
        iret
        .code32

/* ---- output ---- */
putc:   /* al */
        outb %al, $DEBUGCON
        ret
puts:   /* esi: zero-terminated */
        push %eax
1:      lodsb
        test %al, %al
        jz 2f
        outb %al, $DEBUGCON
        jmp 1b
2:      pop %eax
        ret
puthex: /* eax, 8 digits */
        push %ecx
        push %eax
        mov $8, %ecx
1:      rol $4, %eax
        push %eax
        and $0xf, %al
        add $'0', %al
        cmp $'9', %al
        jbe 2f
        add $('a' - '9' - 1), %al
2:      outb %al, $DEBUGCON
        pop %eax
        loop 1b
        pop %eax
        pop %ecx
        ret

/* check: esi name, eax observed, edx expected. info: esi name, eax value. */
check:
        call puts
        push %esi
        mov $str_colon, %esi
        call puts
        call puthex
        cmp %edx, %eax
        jne 1f
        mov $str_ok, %esi
        call puts
        pop %esi
        ret
1:      incl fail_count
        mov $str_fail, %esi
        call puts
        push %eax
        mov %edx, %eax
        call puthex
        mov $'\n', %al
        call putc
        pop %eax
        pop %esi
        ret
info:
        call puts
        push %esi
        mov $str_colon, %esi
        call puts
        call puthex
        mov $str_info, %esi
        call puts
        pop %esi
        ret

        .macro NAME name
        .pushsection .rodata
.Lname\@: .asciz "\name"
        .popsection
        mov $.Lname\@, %esi
        .endm

        /* CHECK name, expected: the observed value is in %eax */
        .macro CHECK name, expected
        NAME "\name"
        mov $(\expected), %edx
        call check
        .endm

        .macro INFO name
        NAME "\name"
        call info
        .endm

        /* TRY label: exceptions (and NOFAULT) resume at label with this stack */
        .macro TRY resume
        movl $\resume, try_resume
        movl %esp, try_esp
        movl $0xff, exc_vector
        movl $0, exc_error
        .endm

        .macro NOFAULT
        int $0x80
        .endm

        /* EXPECT name, vector, error, eip: after a TRY resumed */
        .macro EXPECT name, vector, error, eip
        call exc_code
        CHECK "\name", ((\vector << 16) | (\error))
        mov exc_eip, %eax
        CHECK "\name\().eip", \eip
        .endm

/* USER_TRY name, instructions, eflags, vector[, error]: run at CPL 3, expect that exception (0x80: none) */
        .macro USER_TRY name, insn, eflags, vector, error=0
        TRY 1f
        mov $9f, %eax
        mov $(\eflags), %ecx
        jmp enter_user
        .pushsection .text.user
9:      \insn
        NOFAULT
        .popsection
1:      call exc_code
        CHECK "\name", ((\vector << 16) | (\error))
        .endm
        .macro IO_TRY name, insn, eflags, vector
        USER_TRY "\name", "\insn", \eflags, \vector
        .endm

/* exc_code: eax = vector << 16 | error code */
exc_code:
        mov exc_vector, %eax
        shl $16, %eax
        movzwl exc_error, %edx
        or %edx, %eax
        ret

/* ---- exception entry ---- */
        .macro STUB vector, has_error
stub_\vector:
        .if \has_error == 0
        push $0
        .endif
        push $\vector
        jmp exc_common
        .endm

        STUB 0, 0
        STUB 1, 0
        STUB 2, 0
        STUB 3, 0
        STUB 4, 0
        STUB 5, 0
        STUB 6, 0
        STUB 7, 0
        STUB 8, 1
        STUB 9, 0
        STUB 10, 1
        STUB 11, 1
        STUB 12, 1
        STUB 13, 1
        STUB 14, 1
        STUB 15, 0
        STUB 16, 0
        STUB 17, 1
        STUB 18, 0
        STUB 19, 0
        STUB 0x30, 0
        STUB 0x80, 0

exc_common:
        pusha
        push %ds
        push %es
        mov $SEL_DATA0, %ax
        mov %ax, %ds
        mov %ax, %es
        pushf
        pop exc_inner_flags             /* the handler's own EFLAGS */
        movzwl 4(%esp), %eax
        mov %eax, exc_entry_ds
        mov 36(%esp), %eax              /* the interrupted code's EAX, ECX, EDI (PUSHA order) */
        mov %eax, exc_eax
        mov 32(%esp), %eax
        mov %eax, exc_ecx
        mov 8(%esp), %eax
        mov %eax, exc_edi
        mov 40(%esp), %eax
        mov %eax, exc_vector
        mov 44(%esp), %eax
        mov %eax, exc_error
        mov 48(%esp), %eax
        mov %eax, exc_eip
        mov 52(%esp), %eax
        mov %eax, exc_cs
        mov 56(%esp), %eax
        mov %eax, exc_eflags
        mov %cr2, %eax
        mov %eax, exc_cr2
        lea 48(%esp), %eax
        mov %eax, exc_frame
        incl exc_count
        mov try_resume, %eax
        cmp $1, %eax
        je 2f
        test %eax, %eax
        jz unexpected
        movl $0, try_resume
        mov $SEL_DATA0, %bx
        mov %bx, %ss
        mov try_esp, %esp
        mov %bx, %fs
        mov %bx, %gs
        jmp *%eax
        /* try_resume == 1: return to the interrupted code (after exc_hook, if any, with the frame at %ebp) */
2:      mov exc_hook, %eax
        test %eax, %eax
        jz 3f
        lea 48(%esp), %ebp
        call *%eax
3:      pop %es
        pop %ds
        popa
        add $8, %esp
        iret

unexpected:
        mov $str_unexpected, %esi
        call puts
        mov exc_vector, %eax
        call puthex
        mov $' ', %al
        call putc
        mov exc_error, %eax
        call puthex
        mov $' ', %al
        call putc
        mov exc_eip, %eax
        call puthex
        mov $'\n', %al
        call putc
        mov $1, %eax
        outl %eax, $DEBUG_EXIT
        cli
        hlt

/* ---- descriptor tables ---- */
/* set_desc: eax selector, ebx base, ecx limit (20 bits), edx = access | flags nibble << 8 */
set_desc:
        push %edi
        and $0xfff8, %eax
        lea gdt(%eax), %edi
        mov %cx, (%edi)
        mov %bx, 2(%edi)
        mov %ebx, %eax
        shr $16, %eax
        mov %al, 4(%edi)
        mov %dl, 5(%edi)
        mov %ecx, %eax
        shr $16, %eax
        and $0xf, %al
        shl $4, %dh
        or %dh, %al
        mov %al, 6(%edi)
        shr $24, %ebx
        mov %bl, 7(%edi)
        pop %edi
        ret

        .macro DESC sel, base, limit, access, flags
        mov $\sel, %eax
        mov $\base, %ebx
        mov $\limit, %ecx
        mov $((\access) | ((\flags) << 8)), %edx
        call set_desc
        .endm

/* write_gate: edi entry, ebx offset, ecx selector, edx = attributes << 8 | parameter count */
write_gate:
        mov %bx, (%edi)
        mov %cx, 2(%edi)
        mov %dx, 4(%edi)
        mov %ebx, %eax
        shr $16, %eax
        mov %ax, 6(%edi)
        ret

        .macro IDT_GATE vector, handler, attributes
        mov $(idt + 8 * \vector), %edi
        mov $\handler, %ebx
        mov $SEL_CODE0, %ecx
        mov $(\attributes << 8), %edx
        call write_gate
        .endm

        .macro GDT_GATE sel, handler, attributes, params
        mov $(gdt + \sel), %edi
        mov $\handler, %ebx
        mov $SEL_CODE0, %ecx
        mov $((\attributes << 8) | \params), %edx
        call write_gate
        .endm

/* ---- entry ---- */
        .globl _start
_start:
        cli
        mov $STACK0, %esp
        cmp $0x2badb002, %eax
        jne bad_boot
        mov %ebx, mb_info

        DESC SEL_CODE0, 0, 0xfffff, 0x9a, 0xc
        DESC SEL_DATA0, 0, 0xfffff, 0x92, 0xc
        DESC SEL_CODE3, 0, 0xfffff, 0xfa, 0xc
        DESC SEL_DATA3, 0, 0xfffff, 0xf2, 0xc
        DESC SEL_TSS_A, tss_a, (tss_a_end - tss_a - 1), 0x89, 0
        DESC SEL_TSS_B, tss_b, 0x67, 0x89, 0
        DESC SEL_UP, SEGBASE, 0xfff, 0x92, 0x4
        DESC SEL_DOWN, SEGBASE, 0xfff, 0x96, 0x4
        DESC SEL_DOWN16, SEGBASE, 0xfff, 0x96, 0x0
        DESC SEL_NP, 0, 0xfffff, 0x12, 0xc
        GDT_GATE SEL_GATE3, gate_target, 0xec, 2
        GDT_GATE SEL_GATE0, gate_target, 0x8c, 2
        GDT_GATE SEL_GATE_NP, gate_target, 0x6c, 2
        DESC SEL_TSS_SHORT, tss_b, 0x60, 0x89, 0
        DESC SEL_RODATA, 0, 0xfffff, 0x90, 0xc
        DESC SEL_XCODE, 0, 0xfffff, 0x98, 0xc
        DESC SEL_TSS_V, tss_v, 0x67, 0x89, 0
        DESC SEL_TSS_DF, tss_df, 0x67, 0x89, 0
        DESC SEL_CODE_SMALL, 0, 0xfff, 0x9a, 0x4
        movl $(SEL_TSS_B << 16), gdt + SEL_TASK_GATE
        movl $0x8500, gdt + SEL_TASK_GATE + 4
        movl $(SEL_TSS_B << 16), gdt + SEL_TASK_GATE3
        movl $0xe500, gdt + SEL_TASK_GATE3 + 4
        DESC SEL_CONFORMING, 0, 0xfffff, 0x9e, 0xc
        DESC SEL_LDT, ldt, 15, 0x82, 0
        DESC SEL_CODE_NP, 0, 0xfffff, 0x1a, 0xc
        DESC SEL_CODE1, 0, 0xfffff, 0xba, 0xc
        DESC SEL_DATA16, SEGBASE, 0xffff, 0x92, 0x0
        DESC SEL_DATA1, 0, 0xfffff, 0xb2, 0xc
        mov $(gdt + SEL_GATE_R1), %edi
        mov $gate_target, %ebx
        mov $(SEL_CODE1 | 1), %ecx
        mov $((0xec << 8) | 2), %edx
        call write_gate
        lgdt gdt_pointer
        ljmp $SEL_CODE0, $1f
1:      mov $SEL_DATA0, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %fs
        mov %ax, %gs
        mov %ax, %ss

        IDT_GATE 0, stub_0, 0x8e
        IDT_GATE 1, stub_1, 0x8e
        IDT_GATE 2, stub_2, 0x8e
        IDT_GATE 3, stub_3, 0xee
        IDT_GATE 4, stub_4, 0xee
        IDT_GATE 5, stub_5, 0x8e
        IDT_GATE 6, stub_6, 0x8e
        IDT_GATE 7, stub_7, 0x8e
        IDT_GATE 8, stub_8, 0x8e
        IDT_GATE 9, stub_9, 0x8e
        IDT_GATE 10, stub_10, 0x8e
        IDT_GATE 11, stub_11, 0x8e
        IDT_GATE 12, stub_12, 0x8e
        IDT_GATE 13, stub_13, 0x8e
        IDT_GATE 14, stub_14, 0x8e
        IDT_GATE 15, stub_15, 0x8e
        IDT_GATE 16, stub_16, 0x8e
        IDT_GATE 17, stub_17, 0x8e
        IDT_GATE 18, stub_18, 0x8e
        IDT_GATE 19, stub_19, 0x8e
        IDT_GATE 0x30, stub_0x30, 0x8e
        IDT_GATE 0x80, stub_0x80, 0xee
        movl $(SEL_TSS_B << 16), idt + 8 * 0x82     /* a task gate to task B */
        movl $0x8500, idt + 8 * 0x82 + 4
        lidt idt_pointer

        /* TSS A: ring-0 stack for interrupts from ring 3, I/O bitmap right after the 104-byte TSS */
        movl $STACK0_TSS, tss_a + 4
        movl $SEL_DATA0, tss_a + 8
        movw $(tss_a_iomap - tss_a), tss_a + 102
        mov $SEL_TSS_A, %ax
        ltr %ax
        movl $PD, tss_a + 28            /* CR3 is loaded, not saved, by task switches */

        mov $0xff, %al                  /* no interrupts: mask both 8259s */
        outb %al, $0x21
        outb %al, $0xa1

        /* Paging: identity map of 0-8 MiB, user-accessible and writable */
        mov $PD, %edi
        mov $(3 * 1024), %ecx
        xor %eax, %eax
        rep stosl
        movl $(PT0 | 7), PD
        movl $(PT1 | 7), PD + 4
        mov $PT0, %edi
        mov $7, %eax
        mov $2048, %ecx
1:      stosl
        add $0x1000, %eax
        loop 1b
        mov $PD, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $0x80010000, %eax            /* PG, WP */
        mov %eax, %cr0

        call check_boot
        call check_exceptions
        call check_paging
        call check_segments
        call check_loads
        call check_descriptor_queries
        call check_call_gates
        call check_tasks
        call check_double_fault_task
        call check_v86
        call check_iopb
        call check_control_registers
        call check_debug

        mov $str_done, %esi
        call puts
        mov fail_count, %eax
        call puthex
        mov $str_failed, %esi
        call puts
        xor %eax, %eax
        outl %eax, $DEBUG_EXIT
        cli
        hlt

bad_boot:
        mov $str_bad_boot, %esi
        call puts
        mov $1, %eax
        outl %eax, $DEBUG_EXIT
        hlt

/* ---- the Multiboot information the loader gave ---- */
check_boot:
        mov mb_info, %ebx
        mov (%ebx), %eax
        and $0x41, %eax                 /* memory sizes and memory map present */
        CHECK "boot.flags", 0x41
        /* KiB below 640 KiB and above 1 MiB; firmware keeps some of either for itself (QEMU's: 639, 31616) */
        mov 4(%ebx), %eax
        sub $512, %eax
        cmp $128, %eax
        setbe %al
        movzbl %al, %eax
        CHECK "boot.mem_lower_512_640", 1
        mov 8(%ebx), %eax
        sub $(30 * 1024), %eax
        cmp $1024, %eax
        setbe %al
        movzbl %al, %eax
        CHECK "boot.mem_upper_30m_31m", 1
        ret

/* ---- exceptions ---- */
check_exceptions:
        TRY 1f
        xor %ecx, %ecx
        mov $1, %eax
        xor %edx, %edx
de_at:  div %ecx
        NOFAULT
1:      EXPECT "exc.de", 0, 0, de_at

        TRY 1f
        int3
bp_after:
        NOFAULT
1:      EXPECT "exc.bp", 3, 0, bp_after

        TRY 1f
        mov $0x7fffffff, %eax
        add $1, %eax
        into
of_after:
        NOFAULT
1:      EXPECT "exc.of", 4, 0, of_after

        TRY 1f
        mov $5, %eax
br_at:  bound %eax, bound_pair
        NOFAULT
1:      EXPECT "exc.br", 5, 0, br_at

        TRY 1f
        mov $5, %ax
brw_at: boundw %ax, bound_pair_16
        NOFAULT
1:      EXPECT "exc.br16", 5, 0, brw_at
        TRY 1f
        mov $3, %ax
        boundw %ax, bound_pair_16
        NOFAULT
brw_ok_after:
1:      EXPECT "exc.br16_in", 0x80, 0, brw_ok_after

        TRY 1f
ud_at:  ud2
        NOFAULT
1:      EXPECT "exc.ud", 6, 0, ud_at

        TRY 1f
lock_at: .byte 0xf0                     /* lock add %eax, %ebx: LOCK on a register destination */
        add %eax, %ebx
        NOFAULT
1:      EXPECT "exc.ud_lock", 6, 0, lock_at

        mov %cr0, %eax
        or $8, %eax                     /* TS */
        mov %eax, %cr0
        TRY 1f
nm_at:  fld1
        NOFAULT
1:      clts
        EXPECT "exc.nm", 7, 0, nm_at

        /* #DE whose IDT gate is not present: #NP while delivering it, a double fault */
        andb $0x7f, idt + 5
        TRY 1f
        xor %ecx, %ecx
        div %ecx
        NOFAULT
1:      orb $0x80, idt + 5
        call exc_code
        CHECK "exc.df", 0x80000

        TRY 1f
ts_at:  ljmp $SEL_TSS_SHORT, $0
        NOFAULT
1:      EXPECT "exc.ts", 10, SEL_TSS_SHORT, ts_at

        TRY 1f
        mov $SEL_NP, %ax
np_at:  mov %ax, %ds
        NOFAULT
1:      EXPECT "exc.np", 11, SEL_NP, np_at

        TRY 1f
        mov $SEL_NP, %ax
ss_at:  mov %ax, %ss
        NOFAULT
1:      EXPECT "exc.ss_np", 12, SEL_NP, ss_at

        TRY 1f
        xor %eax, %eax
gp_at:  mov %ax, %ss
        NOFAULT
1:      EXPECT "exc.gp_null_ss", 13, 0, gp_at

        TRY 1f
pf_at:  mov 0x900000, %eax              /* beyond the mapped 8 MiB */
        NOFAULT
1:      EXPECT "exc.pf", 14, 0, pf_at
        mov exc_cr2, %eax
        CHECK "exc.pf.cr2", 0x900000

        /* #AC: CR0.AM and EFLAGS.AC, a misaligned load at CPL 3 */
        mov %cr0, %eax
        or $0x40000, %eax
        mov %eax, %cr0
        TRY 1f
        mov $user_ac, %eax
        mov $(EFLAGS_AC | 2), %ecx
        jmp enter_user
1:      EXPECT "exc.ac", 17, 0, ac_at
        /* ...also on the first element of a REP string instruction (which may otherwise go a page at a time) */
        TRY 1f
        mov $user_ac_rep, %eax
        mov $(EFLAGS_AC | 2), %ecx
        jmp enter_user
1:      EXPECT "exc.ac_rep", 17, 0, ac_rep_at
        /* No #AC without EFLAGS.AC, nor at CPL 0 */
        TRY 1f
        mov $user_ac, %eax
        mov $2, %ecx
        jmp enter_user
1:      EXPECT "exc.ac_flag_clear", 0x80, 0, ac_after
        TRY 1f
        pushf
        orl $EFLAGS_AC, (%esp)
        popf
        mov misaligned + 1, %eax
        NOFAULT
ac0_after:
1:      pushf
        andl $~EFLAGS_AC, (%esp)
        popf
        mov %cr0, %eax
        and $~0x40000, %eax
        mov %eax, %cr0
        EXPECT "exc.ac_cpl0", 0x80, 0, ac0_after

        /* #MF: CR0.NE, an unmasked zero divide, reported by the next waiting x87 instruction */
        mov %cr0, %eax
        or $0x20, %eax
        mov %eax, %cr0
        fninit
        fldcw fpu_cw_unmask_zd
        fld1
        fidivl int_zero                 /* 1 / 0 */
        TRY 1f
mf_at:  fwait
        NOFAULT
1:      fninit
        EXPECT "exc.mf", 16, 0, mf_at
        /* With CR0.NE clear the error goes out on FERR# (IRQ 13, masked here): no exception */
        mov %cr0, %eax
        and $~0x20, %eax
        mov %eax, %cr0
        fldcw fpu_cw_unmask_zd
        fld1
        fidivl int_zero
        TRY 1f
        fwait
        NOFAULT
mf_ne0_after:
1:      fninit
        EXPECT "exc.mf_ne0", 0x80, 0, mf_ne0_after

        /* #NM: WAIT faults with TS only when MP is set; any x87 instruction with EM */
        mov %cr0, %eax
        or $0xa, %eax                   /* TS, MP */
        mov %eax, %cr0
        TRY 1f
wait_mp_at: fwait
        NOFAULT
1:      EXPECT "exc.nm_wait_mp", 7, 0, wait_mp_at
        mov %cr0, %eax
        and $~2, %eax                   /* TS without MP */
        mov %eax, %cr0
        TRY 1f
        fwait
        NOFAULT
wait_nomp_after:
1:      EXPECT "exc.nm_wait_no_mp", 0x80, 0, wait_nomp_after
        clts
        mov %cr0, %eax
        or $4, %eax                     /* EM */
        mov %eax, %cr0
        TRY 1f
em_at:  fninit
        NOFAULT
1:      mov %cr0, %eax
        and $~4, %eax
        mov %eax, %cr0
        EXPECT "exc.nm_em", 7, 0, em_at

        /* EM does not affect WAIT */
        mov %cr0, %eax
        or $4, %eax
        mov %eax, %cr0
        TRY 1f
        fwait
        NOFAULT
wait_em_after:
1:      mov %cr0, %eax
        and $~4, %eax
        mov %eax, %cr0
        EXPECT "exc.wait_with_em", 0x80, 0, wait_em_after

        /* #UD: CR1, MOV to CS */
        TRY 1f
cr1_at: mov %eax, %cr1
        NOFAULT
1:      EXPECT "exc.ud_cr1", 6, 0, cr1_at
        TRY 1f
movcs_at: .byte 0x8e, 0xc8              /* mov %ax, %cs */
        NOFAULT
1:      EXPECT "exc.ud_mov_cs", 6, 0, movcs_at

        /* A fault while delivering an exception has EXT (bit 0) in its error code; with INT n it has not */
        mov $(idt + 8 * 6), %edi
        mov $stub_6, %ebx
        mov $SEL_CODE_NP, %ecx
        mov $(0x8e << 8), %edx
        call write_gate
        mov $(idt + 8 * 0x85), %edi
        call write_gate
        TRY 1f
ext_at: ud2
        NOFAULT
1:      IDT_GATE 6, stub_6, 0x8e
        EXPECT "exc.ext_bit", 11, (SEL_CODE_NP | 1), ext_at
        TRY 1f
noext_at: int $0x85
        NOFAULT
1:      EXPECT "exc.int_no_ext", 11, SEL_CODE_NP, noext_at
        /* INT n through a not-present gate: #NP(vector * 8 + 2) */
        IDT_GATE 0x86, stub_0x80, 0x0e
        TRY 1f
gate_np_at: int $0x86
        NOFAULT
1:      EXPECT "exc.gate_not_present", 11, (0x86 * 8 + 2), gate_np_at

        /* INT n past the IDT's limit: #GP(vector * 8 + 2) */
        lidt idt_pointer_short
        TRY 1f
int_limit_at: int $0x90
        NOFAULT
1:      lidt idt_pointer
        EXPECT "exc.int_past_idt_limit", 13, (0x90 * 8 + 2), int_limit_at

        /* REP MOVSB stopped by #PF half-way: CR2, ECX and EDI say where to restart */
        movl $(TESTPAGE | 6), %eax
        call map_test
        TRY 1f
        mov $misaligned, %esi
        mov $(TESTPAGE - 4), %edi
        mov $8, %ecx
        cld
rep_at: rep movsb
        NOFAULT
1:      EXPECT "exc.rep_movs_pf", 14, 2, rep_at
        mov exc_cr2, %eax
        CHECK "exc.rep_movs_pf.cr2", TESTPAGE
        mov exc_ecx, %eax
        CHECK "exc.rep_movs_pf.ecx", 4
        mov exc_edi, %eax
        CHECK "exc.rep_movs_pf.edi", TESTPAGE
        ret

user_ac:
ac_at:  mov misaligned + 1, %eax
        NOFAULT
ac_after:
user_ac_rep:
        mov $misaligned + 1, %edi
        mov $2, %ecx
        cld
ac_rep_at: rep stosl
        NOFAULT

/* enter_user: eax = EIP, ecx = EFLAGS; ring 3 with DS = ES = ring-3 data. Never returns (use TRY). */
enter_user:
        mov $(SEL_DATA3 | 3), %dx
        mov %dx, %ds
        mov %dx, %es
        push $(SEL_DATA3 | 3)
        push $STACK3
        push %ecx
        push $(SEL_CODE3 | 3)
        push %eax
        iret

/* enter_v86: eax = IP, ecx = EFLAGS (VM added); CS = V86CS, SS:SP = 0x7000:0xfff0, DS = 0x7100 */
enter_v86:
        push $0                         /* gs */
        push $0                         /* fs */
        push $0x7100                    /* ds */
        push $0                         /* es */
        push $0x7000
        push $0xfff0
        or $EFLAGS_VM, %ecx
        push %ecx
        push $V86CS
        sub $(V86CS << 4), %eax
        push %eax
        iret

/* ---- paging ---- */
        .set TESTPTE, PT1 + ((TESTPAGE >> 12) & 0x3ff) * 4

/* map_test: the test page's PTE := eax; INVLPG it */
map_test:
        mov %eax, TESTPTE
        invlpg TESTPAGE
        ret

check_paging:
        /* Accessed and Dirty: set by the CPU in the PTE (and A in the PDE) on a read, D on a write */
        movl $(TESTPAGE | 7), %eax
        call map_test
        andl $~0x20, PD + 4
        mov %cr3, %eax
        mov %eax, %cr3
        mov TESTPAGE, %eax
        mov TESTPTE, %eax
        and $0xfff, %eax
        CHECK "pg.read.pte", 0x27
        mov PD + 4, %eax
        and $0xfff, %eax
        CHECK "pg.read.pde", 0x27
        movl $1, TESTPAGE
        mov TESTPTE, %eax
        and $0xfff, %eax
        CHECK "pg.write.pte", 0x67

        /* CR0.WP: a supervisor write to a read-only page faults only with WP */
        movl $(TESTPAGE | 5), %eax
        call map_test
        TRY 1f
wp_at:  movl $2, TESTPAGE
        NOFAULT
1:      EXPECT "pg.wp1", 14, 3, wp_at
        mov exc_cr2, %eax
        CHECK "pg.wp1.cr2", TESTPAGE
        mov %cr0, %eax
        and $~0x10000, %eax
        mov %eax, %cr0
        TRY 1f
        movl $3, TESTPAGE
        NOFAULT
wp0_after:
1:      mov %cr0, %eax
        or $0x10000, %eax
        mov %eax, %cr0
        EXPECT "pg.wp0", 0x80, 0, wp0_after
        mov TESTPAGE, %eax
        CHECK "pg.wp0.value", 3

        /* Not present: read and write error codes from ring 0 */
        movl $(TESTPAGE | 6), %eax
        call map_test
        TRY 1f
np_wr_at: movl $4, TESTPAGE + 8
        NOFAULT
1:      EXPECT "pg.np_write", 14, 2, np_wr_at
        mov exc_cr2, %eax
        CHECK "pg.np_write.cr2", TESTPAGE + 8
        /* An instruction fetch from a not-present page (I/D is reported only with NX or SMEP) */
        TRY 1f
        mov $TESTPAGE, %eax
        call *%eax
        NOFAULT
1:      EXPECT "pg.np_fetch", 14, 0, TESTPAGE

        /* U/S: ring 3 reads a supervisor page, writes a read-only user page, reads a user page. The same
           code runs at ring 0 first (compiled code must not keep ring 0's rights) */
        movl $(TESTPAGE | 3), %eax
        call map_test
        TRY 1f
        jmp user_read_test
1:      EXPECT "pg.super_read_super", 0x80, 0, user_read_after
        TRY 1f
        mov $user_read_test, %eax
        mov $2, %ecx
        jmp enter_user
1:      EXPECT "pg.user_read_super", 14, 5, user_read_at
        movl $(TESTPAGE | 5), %eax
        call map_test
        TRY 1f
        mov $user_write_test, %eax
        mov $2, %ecx
        jmp enter_user
1:      EXPECT "pg.user_write_ro", 14, 7, user_write_at
        TRY 1f
        mov $user_read_test, %eax
        mov $2, %ecx
        jmp enter_user
1:      EXPECT "pg.user_read_user", 0x80, 0, user_read_after

        /* U/S and R/W combine: a user PTE under a supervisor PDE, a writable PTE under a read-only PDE */
        movl $(TESTPAGE | 7), %eax
        call map_test
        andl $~4, PD + 4
        invlpg TESTPAGE
        TRY 1f
        mov $user_read_test, %eax
        mov $2, %ecx
        jmp enter_user
1:      orl $4, PD + 4
        EXPECT "pg.user_pde_super", 14, 5, user_read_at
        andl $~2, PD + 4
        invlpg TESTPAGE
        TRY 1f
        mov $user_write_test, %eax
        mov $2, %ecx
        jmp enter_user
1:      orl $2, PD + 4
        invlpg TESTPAGE
        EXPECT "pg.user_pde_readonly", 14, 7, user_write_at

        /* A write across into a not-present page changes neither page */
        movl $(TESTPAGE | 6), %eax
        call map_test
        movl $0x11223344, TESTPAGE - 4
        TRY 1f
cross_at: movl $0xaabbccdd, TESTPAGE - 2
        NOFAULT
1:      EXPECT "pg.write_across", 14, 2, cross_at
        mov TESTPAGE - 4, %eax
        CHECK "pg.write_across.first_page", 0x11223344
        /* A write that faults (read-only, WP) does not set D */
        movl $(TESTPAGE | 0x25), %eax   /* present, user, read-only, accessed */
        call map_test
        TRY 1f
        movl $1, TESTPAGE
        NOFAULT
1:      mov TESTPTE, %eax
        and $0x60, %eax
        CHECK "pg.faulting_write_no_dirty", 0x20

        /* An instruction that starts on a mapped page and ends on a not-present one: CR2 = the second page */
        movl $(TESTPAGE | 6), %eax
        call map_test
        movb $0xb8, TESTPAGE - 1        /* mov $imm32, %eax: its immediate lies on the test page */
        TRY 1f
        mov $(TESTPAGE - 1), %eax
        call *%eax
        NOFAULT
1:      EXPECT "pg.fetch_across", 14, 0, (TESTPAGE - 1)
        mov exc_cr2, %eax
        CHECK "pg.fetch_across.cr2", TESTPAGE

        /* The same at CPL 3 into a supervisor page: #PF with U and P */
        movl $(TESTPAGE | 3), %eax
        call map_test
        TRY 1f
        mov $(TESTPAGE - 1), %eax
        mov $2, %ecx
        jmp enter_user
1:      EXPECT "pg.user_fetch_across", 14, 5, (TESTPAGE - 1)
        mov exc_cr2, %eax
        CHECK "pg.user_fetch_across.cr2", TESTPAGE

        /* PSE: a 4 MiB page at 16 MiB mapping physical 0; A and D set in the PDE */
        mov %cr4, %eax
        or $0x10, %eax
        mov %eax, %cr4
        movl $(0x00000087), PD + 16
        mov %cr3, %eax
        mov %eax, %cr3
        mov $pse_probe, %ebx
        mov 0x1000000(%ebx), %eax
        CHECK "pg.pse.read", 0x5a5aa5a5
        mov PD + 16, %eax
        CHECK "pg.pse.pde_after_read", 0xa7
        movl $0x12345678, 0x1000000(%ebx)
        mov pse_probe, %eax
        CHECK "pg.pse.write", 0x12345678
        mov PD + 16, %eax
        CHECK "pg.pse.pde", 0xe7
        /* Reserved bits 21:17 of a 4 MiB PDE: #PF with RSVD (with PSE-36, bits 16:13 are address bits) */
        movl $(0x00200087), PD + 16
        invlpg 0x1000000
        TRY 1f
rsvd_at: mov 0x1000000, %eax
        NOFAULT
1:      movl $0, PD + 16
        invlpg 0x1000000
        EXPECT "pg.pse.rsvd", 14, 9, rsvd_at

        /* INVLPG of one address in a 4 MiB page drops the whole page's translation */
        movl $0xaaaa0003, 0x3000
        movl $0xbbbb0003, 0x403000
        movl $0x87, PD + 16
        mov %cr3, %eax
        mov %eax, %cr3
        mov 0x1003000, %eax             /* both 4 KiB pieces cached */
        mov 0x1005000, %eax
        movl $0x400087, PD + 16
        invlpg 0x1005000
        mov 0x1003000, %eax
        CHECK "pg.pse.invlpg_whole_page", 0xbbbb0003
        movl $0, PD + 16
        mov %cr3, %eax
        mov %eax, %cr3

        /* Without CR4.PSE, PS in a PDE is ignored: the PDE points to a page table */
        mov %cr4, %eax
        and $~0x10, %eax
        mov %eax, %cr4
        movl $(PT0 | 0x87), PD + 16
        mov %cr3, %eax
        mov %eax, %cr3
        mov 0x1003000, %eax             /* through PT0: physical 0x3000 */
        CHECK "pg.ps_ignored_without_pse", 0xaaaa0003
        movl $0, PD + 16
        mov %cr3, %eax
        mov %eax, %cr3
        mov %cr4, %eax
        or $0x10, %eax
        mov %eax, %cr4

        /* PGE: a global translation is not flushed by INVLPG? it is; by a CR3 load it may survive */
        mov %cr4, %eax
        or $0x80, %eax
        mov %eax, %cr4
        movl $(TESTPAGE | 3), %eax
        call map_test
        movl $0x11111111, TESTPAGE
        movl $0x22222222, OTHERPAGE
        movl $(TESTPAGE | 0x103), %eax  /* global */
        call map_test
        mov TESTPAGE, %eax              /* cached */
        movl $(OTHERPAGE | 0x103), TESTPTE
        mov %cr3, %eax
        mov %eax, %cr3
        mov TESTPAGE, %eax
        INFO "pg.pge.after_cr3"
        invlpg TESTPAGE
        mov TESTPAGE, %eax
        CHECK "pg.pge.after_invlpg", 0x22222222
        movl $(TESTPAGE | 0x103), TESTPTE
        invlpg TESTPAGE
        mov TESTPAGE, %eax              /* cached again */
        movl $(OTHERPAGE | 0x103), TESTPTE
        mov %cr4, %eax
        and $~0x80, %eax
        mov %eax, %cr4
        or $0x80, %eax
        mov %eax, %cr4
        mov TESTPAGE, %eax
        CHECK "pg.pge.after_cr4", 0x22222222
        /* A non-global translation does not survive a CR3 load */
        movl $(TESTPAGE | 3), TESTPTE
        invlpg TESTPAGE
        mov TESTPAGE, %eax
        movl $(OTHERPAGE | 3), TESTPTE
        mov %cr3, %eax
        mov %eax, %cr3
        mov TESTPAGE, %eax
        CHECK "pg.nonglobal.after_cr3", 0x22222222
        mov %cr4, %eax
        and $~0x80, %eax
        mov %eax, %cr4
        ret

user_read_test:
user_read_at:
        mov TESTPAGE, %eax
        NOFAULT
user_read_after:
user_write_test:
user_write_at:
        movl $5, TESTPAGE
        NOFAULT

/* ---- segment limits ---- */
        /* FS := selector (inside each TRY: the exception handler leaves FS flat) */
        .macro LOAD_FS sel
        mov $\sel, %ax
        mov %ax, %fs
        .endm

check_segments:
        TRY 1f
        LOAD_FS SEL_UP
        mov %fs:0xffc, %eax
        NOFAULT
up_ok_after:
1:      EXPECT "seg.up.in", 0x80, 0, up_ok_after
        TRY 1f
        LOAD_FS SEL_UP
up_at:  mov %fs:0xffd, %eax
        NOFAULT
1:      EXPECT "seg.up.across", 13, 0, up_at

        TRY 1f
        LOAD_FS SEL_DOWN
        mov %fs:0x1000, %eax
        mov %fs:0xfffffffc, %eax
        NOFAULT
down_ok_after:
1:      EXPECT "seg.down.in", 0x80, 0, down_ok_after
        TRY 1f
        LOAD_FS SEL_DOWN
down_at: mov %fs:0xffe, %eax
        NOFAULT
1:      EXPECT "seg.down.below", 13, 0, down_at

        TRY 1f
        LOAD_FS SEL_DOWN16
        mov %fs:0xfffc, %eax
        NOFAULT
down16_ok_after:
1:      EXPECT "seg.down16.in", 0x80, 0, down16_ok_after
        TRY 1f
        LOAD_FS SEL_DOWN16
down16_at: mov %fs:0xfffe, %eax
        NOFAULT
1:      EXPECT "seg.down16.above", 13, 0, down16_at

        /* The same limits through SS give #SS(0) */
        TRY 1f
        mov $SEL_UP, %ax
        mov %ax, %ss
        mov $0x800, %esp
ss_up_at: mov %ss:0xffd, %eax
        NOFAULT
1:      EXPECT "seg.ss.up.across", 12, 0, ss_up_at
        TRY 1f
        mov $SEL_DOWN, %ax
        mov %ax, %ss
        mov $0x2000, %esp
ss_down_at: movl $1, %ss:0xffc
        NOFAULT
1:      EXPECT "seg.ss.down.below", 12, 0, ss_down_at
        TRY 1f
        mov $SEL_UP, %ax
        mov %ax, %ss
        mov $0x800, %esp
        mov $0xffd, %ebp
ss_ebp_at: mov (%ebp), %eax             /* EBP addresses SS by default */
        NOFAULT
1:      EXPECT "seg.ss.ebp_default", 12, 0, ss_ebp_at
        /* (a PUSH below the limit is not tried: the #SS would be delivered on the same stack) */
        TRY 1f
        mov $SEL_DOWN, %ax
        mov %ax, %ss
        mov $0x1004, %esp
        push %eax
        mov $0x2000, %esp
        NOFAULT
push_ok_after:
1:      EXPECT "seg.ss.down.push", 0x80, 0, push_ok_after

        /* A far jump to the null selector: #GP(0) */
        TRY 1f
null_jmp_at: ljmp $0, $0
        NOFAULT
1:      EXPECT "seg.far_jmp_null", 13, 0, null_jmp_at

        /* A far jump beyond the code segment's limit: #GP(0) */
        TRY 1f
cs_limit_at: ljmp $SEL_CODE_SMALL, $0x1000
        NOFAULT
1:      EXPECT "seg.cs_limit", 13, 0, cs_limit_at

        /* A 16-bit stack (SS.B=0) uses SP: PUSH wraps SP from 0 to 0xfffc and keeps ESP's upper half */
        movl $0, SEGBASE + 0xfffc
        mov %esp, %edi
        mov $SEL_DATA16, %ax
        mov %ax, %ss
        mov $0x12340000, %esp
        mov $0xcafef00d, %eax
        push %eax
        mov %esp, %ecx
        mov $SEL_DATA0, %ax
        mov %ax, %ss
        mov %edi, %esp
        mov %ecx, %eax
        CHECK "seg.stack16.esp", 0x1234fffc
        mov SEGBASE + 0xfffc, %eax
        CHECK "seg.stack16.pushed", 0xcafef00d

        /* The same code with a flat DS, then with a limited one (compiled code must check the limit) */
        mov $0x1000, %ebx
        call read_ds_ebx
        TRY 1f
        mov $SEL_UP, %ax
        mov %ax, %ds
        mov $0xffd, %ebx
        call read_ds_ebx
        NOFAULT
1:      EXPECT "seg.ds_limit_after_flat", 13, 0, read_ds_ebx

        /* Code segments are never writable: a write through CS is #GP(0) */
        TRY 1f
cs_write_at: movl $0, %cs:misaligned
        NOFAULT
1:      EXPECT "seg.cs_write", 13, 0, cs_write_at

        /* Read-only data: writes #GP(0) */
        TRY 1f
        LOAD_FS SEL_RODATA
ro_at:  movl $1, %fs:misaligned
        NOFAULT
1:      EXPECT "seg.ro.write", 13, 0, ro_at
        mov $SEL_DATA0, %ax
        mov %ax, %fs
        /* A null selector loads at CPL 0; using it faults */
        TRY 1f
        xor %eax, %eax
        mov %ax, %fs
null_at: mov %fs:0, %eax
        NOFAULT
1:      EXPECT "seg.null.use", 13, 0, null_at
        ret

read_ds_ebx:
        mov (%ebx), %eax
        ret

/* ---- privilege and type checks on segment loads ---- */
check_loads:
        /* Loading a segment sets the descriptor's accessed bit */
        andb $~1, gdt + SEL_UP + 5
        mov $SEL_UP, %ax
        mov %ax, %fs
        movzbl gdt + SEL_UP + 5, %eax
        CHECK "load.sets_accessed", 0x93
        mov $SEL_DATA0, %ax
        mov %ax, %fs
        /* Descriptor-table, IDT and TSS accesses from CPL 3 are supervisor accesses: a supervisor page is fine */
        mov $gdt, %ebx
        shr $12, %ebx
        andl $~4, PT0(, %ebx, 4)
        invlpg gdt
        USER_TRY "load.gdt_supervisor_page", "mov $(SEL_DATA3 | 3), %ax; mov %ax, %ds", 2, 0x80
        mov $gdt, %ebx
        shr $12, %ebx
        orl $4, PT0(, %ebx, 4)
        invlpg gdt

        TRY 1f
        mov $(SEL_DATA0 | 3), %ax       /* RPL 3 > DPL 0 */
l_rpl_at: mov %ax, %fs
        NOFAULT
1:      EXPECT "load.rpl_gt_dpl", 13, SEL_DATA0, l_rpl_at
        TRY 1f
        mov $SEL_DATA3, %ax             /* SS: DPL must equal CPL */
l_ssdpl_at: mov %ax, %ss
        NOFAULT
1:      EXPECT "load.ss_dpl", 13, SEL_DATA3, l_ssdpl_at
        TRY 1f
        mov $SEL_RODATA, %ax            /* SS must be writable */
l_ssro_at: mov %ax, %ss
        NOFAULT
1:      EXPECT "load.ss_readonly", 13, SEL_RODATA, l_ssro_at
        TRY 1f
        mov $SEL_XCODE, %ax             /* execute-only code into a data register */
l_xcode_at: mov %ax, %fs
        NOFAULT
1:      EXPECT "load.exec_only", 13, SEL_XCODE, l_xcode_at
        TRY 1f
        mov $SEL_CODE0, %ax             /* readable code is fine */
        mov %ax, %fs
        NOFAULT
l_code_after:
1:      EXPECT "load.readable_code", 0x80, 0, l_code_after
        TRY 1f
        mov $SEL_TSS_B, %ax             /* a system segment */
l_tss_at: mov %ax, %fs
        NOFAULT
1:      EXPECT "load.system", 13, SEL_TSS_B, l_tss_at
        TRY 1f
        mov $0x400, %ax                 /* beyond the GDT limit */
l_limit_at: mov %ax, %fs
        NOFAULT
1:      EXPECT "load.beyond_gdt", 13, 0x400, l_limit_at
        /* Privileged instructions at CPL 3: #GP(0); IOPL-sensitive ones at IOPL 0 likewise */
        USER_TRY "cpl3.hlt", "hlt", 2, 13
        USER_TRY "cpl3.mov_cr0", "mov %eax, %cr0", 2, 13
        USER_TRY "cpl3.mov_from_cr3", "mov %cr3, %eax", 2, 13
        USER_TRY "cpl3.mov_dr7", "mov %eax, %dr7", 2, 13
        USER_TRY "cpl3.lgdt", "lgdt gdt_pointer", 2, 13
        USER_TRY "cpl3.lidt", "lidt idt_pointer", 2, 13
        USER_TRY "cpl3.ltr", "mov $0x30, %ax; ltr %ax", 2, 13
        USER_TRY "cpl3.clts", "clts", 2, 13
        USER_TRY "cpl3.invlpg", "invlpg 0", 2, 13
        USER_TRY "cpl3.wrmsr", "wrmsr", 2, 13
        USER_TRY "cpl3.cli_iopl0", "cli", 2, 13
        USER_TRY "cpl3.cli_iopl3", "cli", (EFLAGS_IOPL3 | 2), 0x80
        USER_TRY "cpl3.sgdt", "sgdt user_query_results", 2, 0x80
        USER_TRY "cpl3.smsw", "smsw %ax", 2, 0x80
        USER_TRY "cpl3.str", "str %ax", 2, 0x80
        USER_TRY "cpl3.sldt", "sldt %ax", 2, 0x80
        USER_TRY "cpl3.int3", "int3", 2, 3
        USER_TRY "cpl3.into_no_overflow", "xor %eax, %eax; into", 2, 0x80
        /* POPF at CPL 3, IOPL 3: IF changes, IOPL does not */
        TRY 1f
        mov $user_popf, %eax
        mov $(EFLAGS_IOPL3 | 2), %ecx
        jmp enter_user
1:      mov exc_eflags, %eax
        and $(0x200 | EFLAGS_IOPL3), %eax
        CHECK "cpl3.popf_iopl3_sets_if", (0x200 | EFLAGS_IOPL3)
        /* POPF at CPL 3, IOPL 0: IF and IOPL do not change, no fault */
        TRY 1f
        mov $user_popf, %eax
        mov $2, %ecx
        jmp enter_user
1:      mov exc_eflags, %eax
        and $(0x200 | EFLAGS_IOPL3), %eax
        CHECK "cpl3.popf_keeps_if_iopl", 0

        /* The frame an interrupt from CPL 3 pushes on TSS.ESP0: EIP, CS, EFLAGS, ESP, SS */
        USER_TRY "int.from_cpl3", "mov $0x12345, %esp", 2, 0x80
        mov exc_frame, %eax
        CHECK "int.from_cpl3.frame", (STACK0_TSS - 20)
        mov exc_cs, %eax
        CHECK "int.from_cpl3.cs", (SEL_CODE3 | 3)
        mov STACK0_TSS - 8, %eax
        CHECK "int.from_cpl3.esp", 0x12345
        mov STACK0_TSS - 4, %eax
        CHECK "int.from_cpl3.ss", (SEL_DATA3 | 3)

        /* IRET to a code selector whose RPL is not its DPL: #GP(selector) */
        TRY 1f
        push $(SEL_DATA3 | 3)
        push $STACK3
        push $2
        push $SEL_CODE3
        push $user_df
iret_rpl_at: iret
        NOFAULT
1:      EXPECT "iret.cs_rpl", 13, SEL_CODE3, iret_rpl_at

        /* LDT: a data descriptor at LDT index 0 (selector 0x04), base = ldt_probe */
        mov $ldt_probe, %ebx
        mov %bx, ldt + 2
        shr $16, %ebx
        mov %bl, ldt + 4
        mov %bh, ldt + 7
        movw $3, ldt
        movb $0x92, ldt + 5
        movb $0x40, ldt + 6
        mov $SEL_LDT, %ax
        lldt %ax
        mov $0x04, %ax
        mov %ax, %fs
        mov %fs:0, %eax
        CHECK "ldt.read", 0x600df00d
        TRY 1f
ldt_limit_at: mov $0x0c, %ax            /* index 1: past the LDT's limit */
        mov %ax, %fs
        NOFAULT
1:      EXPECT "ldt.beyond_limit", 13, 0x0c, (ldt_limit_at + 4)
        xor %eax, %eax
        lldt %ax
        TRY 1f
        mov $0x04, %ax
ldt_null_at: mov %ax, %fs
        NOFAULT
1:      EXPECT "ldt.null_ldtr", 13, 0x04, ldt_null_at
        mov $SEL_DATA0, %ax
        mov %ax, %fs

        /* IRET and RETF outward with an SS the new CPL may not use: #GP(SS), raised before CS changes */
        TRY 1f
        push $SEL_DATA0
        push $STACK3
        push $2
        push $(SEL_CODE3 | 3)
        push $user_df
iret_ss_at: iret
        NOFAULT
1:      EXPECT "iret.outer_bad_ss", 13, SEL_DATA0, iret_ss_at
        mov exc_cs, %eax
        CHECK "iret.outer_bad_ss.cs", SEL_CODE0
        TRY 1f
        push $SEL_DATA0
        push $STACK3
        push $(SEL_CODE3 | 3)
        push $user_df
lret_ss_at: lret
        NOFAULT
1:      EXPECT "lret.outer_bad_ss", 13, SEL_DATA0, lret_ss_at
        mov exc_cs, %eax
        CHECK "lret.outer_bad_ss.cs", SEL_CODE0

        /* A faulting segment load changes nothing else: LSS leaves ESP, POP DS leaves ESP (the #GP frame
           lies right below the ESP the TRY saw: exc_frame + 12 - try_esp = 0) */
        TRY 1f
lss_at: lss lss_pointer, %esp
        NOFAULT
1:      EXPECT "load.lss_bad_ss", 13, SEL_RODATA, lss_at
        mov exc_frame, %eax
        add $12, %eax
        sub try_esp, %eax
        CHECK "load.lss_bad_ss.esp_kept", 0
        TRY 1f
        push $SEL_XCODE
pop_ds_at: pop %ds
        NOFAULT
1:      EXPECT "load.pop_ds_bad", 13, SEL_XCODE, pop_ds_at
        mov exc_frame, %eax
        add $16, %eax                   /* (the pushed selector is still there) */
        sub try_esp, %eax
        CHECK "load.pop_ds_bad.esp_kept", 0

        /* INT n through a gate of DPL < CPL: #GP(vector * 8 + 2); through an empty entry: #GP likewise */
        TRY 1f
        mov $user_int30, %eax
        mov $2, %ecx
        jmp enter_user
1:      EXPECT "int.gate_dpl", 13, (0x30 * 8 + 2), user_int30
        TRY 1f
int_empty_at: int $0x31
        NOFAULT
1:      EXPECT "int.empty_gate", 13, (0x31 * 8 + 2), int_empty_at
        /* IRET to CPL 3 nulls data segment registers the new CPL may not use (FS, GS hold DPL-0 data) */
        movl $0xffff, user_fs_seen
        TRY 1f
        mov $user_store_fs, %eax
        mov $2, %ecx
        jmp enter_user
1:      mov user_fs_seen, %eax
        CHECK "iret.outer_nulls_fs", 0
        TRY 1f
        mov $user_load_data0, %eax
        mov $2, %ecx
        jmp enter_user
1:      EXPECT "load.cpl3_dpl0", 13, SEL_DATA0, user_load_at
        mov $SEL_DATA0, %ax
        mov %ax, %fs
        ret

user_popf:
        pushl $(0x200 | EFLAGS_IOPL3 | 2)
        popf
        NOFAULT
user_int30:
        int $0x30
        NOFAULT
user_store_fs:
        mov %fs, user_fs_seen
        NOFAULT
user_load_data0:
        mov $SEL_DATA0, %ax
user_load_at:
        mov %ax, %fs
        NOFAULT

/* ---- call gates ---- */
check_call_gates:
        movl $0, gate_seen_cs
        TRY 1f
        mov $user_call_gate, %eax
        mov $2, %ecx
        jmp enter_user
1:      EXPECT "gate.call", 0x80, 0, user_gate_back
        mov gate_seen_cs, %eax
        CHECK "gate.cs", SEL_CODE0
        mov gate_seen_esp, %eax
        CHECK "gate.esp", (STACK0_TSS - 24)
        mov gate_seen_params, %eax
        CHECK "gate.param0", 0xbbbb
        mov gate_seen_params + 4, %eax
        CHECK "gate.param1", 0xaaaa
        mov gate_seen_ss, %eax
        CHECK "gate.old_ss", (SEL_DATA3 | 3)
        mov gate_seen_ret_cs, %eax
        CHECK "gate.ret_cs", (SEL_CODE3 | 3)
        TRY 1f
        mov $user_call_gate0, %eax
        mov $2, %ecx
        jmp enter_user
1:      EXPECT "gate.dpl0", 13, SEL_GATE0, user_gate0_at
        TRY 1f
        mov $user_call_gate_np, %eax
        mov $2, %ecx
        jmp enter_user
1:      EXPECT "gate.not_present", 11, SEL_GATE_NP, user_gate_np_at

        /* A call gate whose inner stack (ring 1's, from the TSS) is not present: #PF raised at CPL 3 */
        movl $(TESTPAGE | 6), %eax
        call map_test
        movl $(TESTPAGE + 0x1000), tss_a + 12
        movl $(SEL_DATA1 | 1), tss_a + 16
        TRY 1f
        mov $user_call_gate_r1, %eax
        mov $2, %ecx
        jmp enter_user
1:      EXPECT "gate.inner_stack_pf", 14, 2, user_gate_r1_at
        mov exc_cr2, %eax
        CHECK "gate.inner_stack_pf.cr2", (TESTPAGE + 0xffc)
        mov exc_cs, %eax
        CHECK "gate.inner_stack_pf.cs", (SEL_CODE3 | 3)
        mov STACK0_TSS - 4, %eax        /* the #PF frame's SS:ESP: the caller's, as before the call */
        CHECK "gate.inner_stack_pf.ss", (SEL_DATA3 | 3)
        mov STACK0_TSS - 8, %eax
        CHECK "gate.inner_stack_pf.esp", (STACK3 - 8)

        /* A far call from CPL 3 to conforming DPL-0 code keeps CPL 3; to non-conforming DPL-0 code: #GP */
        movl $0, conforming_cs
        USER_TRY "far.conforming", "lcall $SEL_CONFORMING, $conforming_target", 2, 0x80
        mov conforming_cs, %eax
        CHECK "far.conforming.cs", (SEL_CONFORMING | 3)
        USER_TRY "far.nonconforming_dpl0", "lcall $SEL_CODE0, $conforming_target", 2, 13, SEL_CODE0
        /* JMP never changes CPL: not through a call gate to more privileged code, nor directly */
        USER_TRY "far.jmp_gate_inner", "ljmp $(SEL_GATE3 | 3), $0", 2, 13, SEL_CODE0
        USER_TRY "far.jmp_dpl0", "ljmp $SEL_CODE0, $conforming_target", 2, 13, SEL_CODE0
        USER_TRY "far.jmp_conforming", "ljmp $SEL_CONFORMING, $far_jmp_back", 2, 0x80
        /* RPL: a non-conforming target needs RPL <= CPL; a gate's DPL must cover the RPL too */
        TRY 1f
far_rpl_at: lcall $(SEL_CODE0 | 3), $conforming_target
        NOFAULT
1:      EXPECT "far.call_rpl3_nonconforming", 13, SEL_CODE0, far_rpl_at
        TRY 1f
gate_rpl_at: lcall $(SEL_GATE0 | 3), $0
        NOFAULT
1:      EXPECT "far.call_gate_rpl3_dpl0", 13, SEL_GATE0, gate_rpl_at
        /* A far return to a more privileged level: #GP(selector) */
        USER_TRY "far.ret_inner", "push $SEL_CODE0; push $0; lret", 2, 13, SEL_CODE0

        /* A 16-bit interrupt gate pushes FLAGS, CS, IP as words; its offset has 16 bits, so the handler
           runs from a copy below 64 KiB */
        mov $handler16, %esi
        mov $HANDLER16_COPY, %edi
        mov $(handler16_end - handler16), %ecx
        rep movsb
        IDT_GATE 0x84, HANDLER16_COPY, 0x86
        movl $0, gate16_seen
        mov %esp, %ebp
        int $0x84
gate16_return:
        mov %ebp, %esp
        mov gate16_seen, %eax
        CHECK "int.gate16.frame_bytes", 6
        mov gate16_seen + 4, %eax
        CHECK "int.gate16.cs", SEL_CODE0
        mov $gate16_return, %edx
        movzwl %dx, %edx
        mov gate16_seen + 8, %eax
        NAME "int.gate16.ip"                /* the low 16 bits of the return address */
        call check

        /* Interrupt gates clear IF, trap gates keep it; both clear TF and NT */
        IDT_GATE 0x81, stub_0x80, 0x8f
        sti
        TRY 1f
        int $0x80
1:      cli
        mov exc_inner_flags, %eax
        and $0x200, %eax
        CHECK "int.interrupt_gate_if", 0
        sti
        TRY 1f
        int $0x81
1:      cli
        mov exc_inner_flags, %eax
        and $0x200, %eax
        CHECK "int.trap_gate_if", 0x200

        /* SYSENTER to CS = MSR 0x174, SS = CS + 8; SYSEXIT to CS + 16 | 3, SS = CS + 24 | 3 */
        xor %edx, %edx
        mov $0x174, %ecx
        mov $SEL_CODE0, %eax
        wrmsr
        mov $0x175, %ecx
        mov $(STACK0_TSS - 0x100), %eax
        wrmsr
        mov $0x176, %ecx
        mov $sysenter_target, %eax
        wrmsr
        USER_TRY "sysenter", "mov $sysexit_back, %edx; mov %esp, %ecx; sysenter", 2, 0x80
        mov sysenter_seen, %eax
        CHECK "sysenter.cs_ss", ((SEL_CODE0 << 16) | SEL_DATA0)
        mov sysenter_seen + 4, %eax
        CHECK "sysenter.esp", (STACK0_TSS - 0x100)
        mov sysenter_seen + 8, %eax
        CHECK "sysexit.cs_ss", (((SEL_CODE3 | 3) << 16) | (SEL_DATA3 | 3))
        xor %edx, %edx
        xor %eax, %eax
        mov $0x174, %ecx
        wrmsr
        USER_TRY "sysenter.cs_zero", "sysenter", 2, 13
        ret

handler16:
        mov %ebp, %eax
        sub %esp, %eax
        mov %eax, gate16_seen
        movzwl 2(%esp), %eax
        mov %eax, gate16_seen + 4
        movzwl (%esp), %eax
        mov %eax, gate16_seen + 8
        jmp *gate16_return_pointer
handler16_end:

far_jmp_back:
        NOFAULT
conforming_target:
        mov %cs, %eax
        mov %eax, conforming_cs
        lret
sysenter_target:
        mov %cs, %eax
        shl $16, %eax
        mov %ss, %ax
        mov %eax, sysenter_seen
        mov %esp, sysenter_seen + 4
        sysexit
sysexit_back:
        mov %cs, %eax
        shl $16, %eax
        mov %ss, %ax
        mov %eax, sysenter_seen + 8
        NOFAULT

user_call_gate:
        push $0xaaaa
        push $0xbbbb
        lcall $(SEL_GATE3 | 3), $0
        NOFAULT
user_gate_back:
user_call_gate_r1:
        push $0xaaaa
        push $0xbbbb
user_gate_r1_at:
        lcall $(SEL_GATE_R1 | 3), $0
        NOFAULT
user_call_gate0:
user_gate0_at:
        lcall $(SEL_GATE0 | 3), $0
        NOFAULT
user_call_gate_np:
user_gate_np_at:
        lcall $(SEL_GATE_NP | 3), $0
        NOFAULT

/* Ring 0 through the gate: new stack = EIP, CS, params (2), ESP, SS from the top of TSS.ESP0 */
gate_target:
        mov %cs, %eax
        mov %eax, %ss:gate_seen_cs
        mov %esp, %ss:gate_seen_esp
        mov 8(%esp), %eax
        mov %eax, %ss:gate_seen_params
        mov 12(%esp), %eax
        mov %eax, %ss:gate_seen_params + 4
        mov 20(%esp), %eax
        mov %eax, %ss:gate_seen_ss
        mov 4(%esp), %eax
        mov %eax, %ss:gate_seen_ret_cs
        lret $8

/* ---- hardware task switches ---- */
/* reset_tss_b: eax = EIP; a flat ring-0 task with its own stack */
reset_tss_b:
        mov $tss_b, %edi
        push %eax
        mov $26, %ecx
        xor %eax, %eax
        rep stosl
        pop %eax
        mov %eax, tss_b + 32
        movl $2, tss_b + 36
        movl $STACK_B, tss_b + 56
        mov %cr3, %eax
        mov %eax, tss_b + 28
        movl $SEL_CODE0, tss_b + 76
        movl $0x0b0b0b0b, tss_b + 52    /* EBX */
        mov $SEL_DATA0, %eax
        mov %eax, tss_b + 72            /* es */
        mov %eax, tss_b + 80            /* ss */
        mov %eax, tss_b + 84            /* ds */
        mov %eax, tss_b + 88            /* fs */
        mov %eax, tss_b + 92            /* gs */
        movw $104, tss_b + 102
        ret

/* the descriptor type byte of a GDT selector in eax */
        .macro DESC_TYPE sel
        movzbl gdt + \sel + 5, %eax
        .endm

check_tasks:
        /* JMP to a TSS: the old task is no longer busy, no back link, NT clear */
        mov $task_b_jumped, %eax
        call reset_tss_b
        movl $0, task_b_tr
        mov $0x0e0e0e0e, %esi
        ljmp $SEL_TSS_B, $0
task_jmp_after:
        mov tss_a + 64, %eax            /* ESI saved in the old TSS */
        CHECK "task.jmp.saved_esi", 0x0e0e0e0e
        mov tss_a + 32, %eax            /* EIP saved: after the JMP */
        CHECK "task.jmp.saved_a_eip", task_jmp_after
        mov task_b_ebx, %eax
        CHECK "task.jmp.loaded_ebx", 0x0b0b0b0b
        mov task_b_tr, %eax
        CHECK "task.jmp.tr", SEL_TSS_B
        mov task_b_flags, %eax
        and $EFLAGS_NT, %eax
        CHECK "task.jmp.nt", 0
        mov task_b_type_a, %eax
        CHECK "task.jmp.old_busy", 0x89
        mov task_b_type_b, %eax
        CHECK "task.jmp.new_busy", 0x8b
        DESC_TYPE SEL_TSS_B
        CHECK "task.jmp.back.b_busy", 0x89
        DESC_TYPE SEL_TSS_A
        CHECK "task.jmp.back.a_busy", 0x8b
        mov %cr0, %eax
        and $8, %eax
        CHECK "task.jmp.cr0_ts", 8
        clts
        mov tss_b + 32, %eax            /* B's state was saved at its JMP back */
        CHECK "task.jmp.saved_eip", task_b_jmp_back_after

        /* CALL: NT set in the new task, back link = the caller, both busy; IRET returns and frees B */
        mov $task_b_called, %eax
        call reset_tss_b
        lcall $SEL_TSS_B, $0
        clts
        mov task_b_tr, %eax
        CHECK "task.call.tr", SEL_TSS_B
        mov task_b_flags, %eax
        and $EFLAGS_NT, %eax
        CHECK "task.call.nt", EFLAGS_NT
        mov task_b_link, %eax
        CHECK "task.call.link", SEL_TSS_A
        mov task_b_type_a, %eax
        CHECK "task.call.old_busy", 0x8b
        DESC_TYPE SEL_TSS_B
        CHECK "task.iret.b_busy", 0x89
        mov tss_b + 36, %eax            /* B's EFLAGS image: IRET's task return clears its NT */
        and $EFLAGS_NT, %eax
        CHECK "task.iret.b_saved_nt", 0
        pushf
        pop %eax
        and $EFLAGS_NT, %eax
        CHECK "task.iret.nt", 0
        str %ax
        movzwl %ax, %eax
        CHECK "task.iret.tr", SEL_TSS_A

        /* INT through a task gate: like CALL (NT, back link), IRET returns */
        mov $task_b_called, %eax
        call reset_tss_b
        movl $0, task_b_tr
        int $0x82
        clts
        mov task_b_tr, %eax
        CHECK "task.gate.tr", SEL_TSS_B
        mov task_b_link, %eax
        CHECK "task.gate.link", SEL_TSS_A
        mov task_b_flags, %eax
        and $EFLAGS_NT, %eax
        CHECK "task.gate.nt", EFLAGS_NT
        DESC_TYPE SEL_TSS_B
        CHECK "task.gate.b_busy_after", 0x89

        /* JMP through a task gate in the GDT */
        mov $task_b_jumped, %eax
        call reset_tss_b
        movl $0, task_b_tr
        ljmp $SEL_TASK_GATE, $0
        clts
        mov task_b_tr, %eax
        CHECK "task.gdt_gate.tr", SEL_TSS_B

        /* IRET with NT to a back link that is not a busy TSS: #TS(back link) */
        movw $SEL_TSS_B, tss_a
        TRY 1f
        pushf
        orl $EFLAGS_NT, (%esp)
        popf
iret_nt_at: iret
        NOFAULT
1:      pushf
        andl $~EFLAGS_NT, (%esp)
        popf
        movw $0, tss_a
        EXPECT "task.iret_link_not_busy", 10, SEL_TSS_B, iret_nt_at

        /* From CPL 3: a task gate of DPL 3 reaches a DPL-0 TSS (only the gate's DPL counts); the TSS
           itself cannot be called */
        mov $task_b_called, %eax
        call reset_tss_b
        movl $0, task_b_tr
        USER_TRY "task.user_gate", "lcall $(SEL_TASK_GATE3 | 3), $0", 2, 0x80
        clts
        mov task_b_tr, %eax
        CHECK "task.user_gate.tr", SEL_TSS_B
        USER_TRY "task.user_tss_dpl0", "lcall $(SEL_TSS_B | 3), $0", 2, 13, SEL_TSS_B
        USER_TRY "task.user_gate_dpl0", "ljmp $(SEL_TASK_GATE | 3), $0", 2, 13, SEL_TASK_GATE

        /* LTR of a busy TSS: #GP(selector) */
        TRY 1f
        mov $SEL_TSS_A, %ax
ltr_busy_at: ltr %ax
        NOFAULT
1:      EXPECT "task.ltr_busy", 13, SEL_TSS_A, ltr_busy_at

        /* CALL to a busy task: #GP(selector) */
        TRY 1f
busy_at: lcall $SEL_TSS_A, $0
        NOFAULT
1:      EXPECT "task.call_busy", 13, SEL_TSS_A, busy_at
        ret

task_b_common:
        mov %ebx, task_b_ebx            /* EBX as loaded from TSS B */
        str %ax
        movzwl %ax, %eax
        mov %eax, task_b_tr
        pushf
        pop %eax
        mov %eax, task_b_flags
        movzwl tss_b, %eax
        mov %eax, task_b_link
        DESC_TYPE SEL_TSS_A
        mov %eax, task_b_type_a
        DESC_TYPE SEL_TSS_B
        mov %eax, task_b_type_b
        ret
task_b_jumped:
        call task_b_common
        ljmp $SEL_TSS_A, $0
task_b_jmp_back_after:
        jmp task_b_jumped
task_b_called:
        call task_b_common
        iret

/* ---- virtual-8086 mode ---- */
        .macro V86_TRY name, code, eflags, vector, error, eip
        TRY 1f
        mov $\code, %eax
        mov $(\eflags), %ecx
        jmp enter_v86
1:      EXPECT "\name", \vector, \error, (\eip - (V86CS << 4))
        .endm

check_v86:
        V86_TRY "v86.int_iopl0", v86_int30, 2, 13, 0, v86_int30
        mov exc_eflags, %eax
        and $EFLAGS_VM, %eax
        CHECK "v86.int_iopl0.vm", EFLAGS_VM
        mov exc_cs, %eax
        CHECK "v86.int_iopl0.cs", V86CS
        V86_TRY "v86.cli_iopl0", v86_cli, 2, 13, 0, v86_cli
        V86_TRY "v86.int_iopl3", v86_int80, (EFLAGS_IOPL3 | 2), 0x80, 0, (v86_int80 + 2)
        mov exc_eflags, %eax
        and $(EFLAGS_VM | EFLAGS_IOPL3), %eax
        CHECK "v86.int_iopl3.eflags", (EFLAGS_VM | EFLAGS_IOPL3)
        mov exc_entry_ds, %eax
        CHECK "v86.int_iopl3.ds_zeroed", 0
        mov exc_frame, %eax
        mov 24(%eax), %eax              /* DS as pushed: after EIP, CS, EFLAGS, ESP, SS, ES */
        CHECK "v86.int_iopl3.ds_pushed", 0x7100
        V86_TRY "v86.sensitive_iopl3", v86_sensitive, (EFLAGS_IOPL3 | 2), 0x80, 0, (v86_in84)
        mov exc_eflags, %eax
        and $0x200, %eax
        CHECK "v86.sensitive_iopl3.if", 0x200
        /* From v86 mode, an interrupt handler must be non-conforming DPL-0 code: #GP(code selector) */
        mov $(idt + 8 * 0x87), %edi
        mov $stub_0x80, %ebx
        mov $SEL_CONFORMING, %ecx
        mov $(0xee << 8), %edx
        call write_gate
        V86_TRY "v86.int_conforming_handler", v86_int87, (EFLAGS_IOPL3 | 2), 13, SEL_CONFORMING, v86_int87
        /* INT3 is not IOPL-sensitive: #BP through the IDT (a DPL-3 gate), whatever IOPL */
        V86_TRY "v86.int3_iopl0", v86_int3, 2, 3, 0, (v86_int3 + 1)
        movl $0x5a5aa5a5, 0x71004
        V86_TRY "v86.segment_load", v86_segment, (EFLAGS_IOPL3 | 2), 0x80, 0, v86_segment_after
        mov exc_eax, %eax
        CHECK "v86.segment_load.value", 0x5a5aa5a5
        andl $~4, PT0 + 0x71 * 4        /* the page of DS:4 becomes supervisor-only */
        invlpg 0x71000
        V86_TRY "v86.pf_user", v86_segment, (EFLAGS_IOPL3 | 2), 14, 5, (v86_segment + 5)
        orl $4, PT0 + 0x71 * 4
        invlpg 0x71000
        mov exc_cr2, %eax
        CHECK "v86.pf_user.cr2", 0x71004
        V86_TRY "v86.popf_iopl3", v86_popf_iopl, (EFLAGS_IOPL3 | 0x200 | 2), 0x80, 0, v86_iret16
        mov exc_eax, %eax
        and $0x3200, %eax
        CHECK "v86.popf_iopl3.flags", EFLAGS_IOPL3
        V86_TRY "v86.iret16_iopl3", v86_iret16, (EFLAGS_IOPL3 | 2), 0x80, 0, v86_hlt
        V86_TRY "v86.hlt", v86_hlt, (EFLAGS_IOPL3 | 2), 13, 0, v86_hlt
        V86_TRY "v86.offset_limit", v86_offset_limit, (EFLAGS_IOPL3 | 2), 13, 0, v86_offset_limit
        V86_TRY "v86.pushf_iopl0", v86_pushf, 2, 13, 0, v86_pushf
        V86_TRY "v86.iret_iopl0", v86_iret, 2, 13, 0, v86_iret
        V86_TRY "v86.io_denied", v86_in84, (EFLAGS_IOPL3 | 2), 13, 0, v86_in84
        V86_TRY "v86.io_allowed", v86_in80, 2, 13, 0, (v86_in80 + 2)

        /* Entering v86 mode through a task switch (the TSS's EFLAGS has VM); #GP comes out on the task's ring-0 stack */
        mov $tss_v, %edi
        mov $26, %ecx
        xor %eax, %eax
        rep stosl
        movl $STACK0_V, tss_v + 4
        movl $SEL_DATA0, tss_v + 8
        mov %cr3, %eax
        mov %eax, tss_v + 28
        movl $(v86_task - (V86CS << 4)), tss_v + 32
        movl $(EFLAGS_VM | 2), tss_v + 36
        movl $0xfff0, tss_v + 56
        movl $V86CS, tss_v + 76
        movl $0x7000, tss_v + 80
        movw $104, tss_v + 102
        TRY v86_task_fault
        ljmp $SEL_TSS_V, $0
        EXPECT "v86.task", 13, 0, (v86_task - (V86CS << 4))
        mov exc_eflags, %eax
        and $EFLAGS_VM, %eax
        CHECK "v86.task.vm", EFLAGS_VM
        mov exc_frame, %eax
        CHECK "v86.task.frame", (STACK0_V - 36)
        clts
        ret
v86_task_fault:
        /* in the v86 task, on ring 0: back to task A */
        ljmp $SEL_TSS_A, $0

/* ---- I/O permission bitmap (CPL 3, IOPL 0 unless said) ---- */

check_iopb:
        IO_TRY "io.inb_80", "inb $0x80, %al", 2, 0x80
        IO_TRY "io.inb_81", "inb $0x81, %al", 2, 13
        IO_TRY "io.inw_80", "inw $0x80, %ax", 2, 13
        IO_TRY "io.inw_82", "inw $0x82, %ax", 2, 0x80
        IO_TRY "io.inl_88", "inl $0x88, %eax", 2, 0x80
        IO_TRY "io.inl_89", "inl $0x89, %eax", 2, 13
        IO_TRY "io.outb_88_dx", "mov $0x88, %dx; outb %al, %dx", 2, 0x80
        IO_TRY "io.beyond_map", "mov $0x3f8, %dx; inb %dx, %al", 2, 13
        IO_TRY "io.iopl3", "inb $0x81, %al", (EFLAGS_IOPL3 | 2), 0x80
        /* A bitmap offset past the TSS limit: no port is allowed */
        movw $0xfff0, tss_a + 102
        IO_TRY "io.map_offset_beyond_limit", "inb $0x80, %al", 2, 13
        movw $(tss_a_iomap - tss_a), tss_a + 102
        ret

/* ---- control registers ---- */
/* has_option: esi = word; ZF clear (jnz) when the Multiboot command line contains it */
has_option:
        mov mb_info, %ebx
        testl $4, (%ebx)
        jz 3f
        mov 16(%ebx), %edi
1:      xor %ecx, %ecx
2:      mov (%esi, %ecx), %al
        test %al, %al
        jz 4f                           /* the whole word matched */
        cmp (%edi, %ecx), %al
        jne 5f
        inc %ecx
        jmp 2b
5:      cmpb $0, (%edi)
        je 3f
        inc %edi
        jmp 1b
3:      xor %eax, %eax                  /* not found: ZF set */
        ret
4:      or $1, %eax
        ret

check_control_registers:
        mov %cr0, %eax
        mov %eax, cr0_saved             /* (registers do not survive a TRY) */
        TRY 1f
        or $0x40000000, %eax            /* CD=1, NW=0: caching disabled, valid */
        mov %eax, %cr0
        NOFAULT
cd_after:
1:      mov %cr0, %eax
        mov cr0_saved, %ebx
        mov %ebx, %cr0
        and $0x60000000, %eax
        CHECK "cr0.cd_read", 0x40000000
        EXPECT "cr0.cd", 0x80, 0, cd_after
        TRY 1f
        mov cr0_saved, %eax
        or $0x20000000, %eax            /* NW=1, CD=0 */
nw_at:  mov %eax, %cr0
        NOFAULT
1:      mov cr0_saved, %eax
        mov %eax, %cr0
        EXPECT "cr0.nw_without_cd", 13, 0, nw_at
        TRY 1f
        mov cr0_saved, %eax
        and $~1, %eax                   /* PG without PE */
        mov cr0_saved, %ebx
pgpe_at: mov %eax, %cr0
        mov %ebx, %cr0                  /* (when it did not fault: back to protected mode at once) */
        ljmp $SEL_CODE0, $2f
2:      mov $SEL_DATA0, %ax
        mov %ax, %ds
        mov %ax, %ss
        NOFAULT
1:      EXPECT "cr0.pg_without_pe", 13, 0, pgpe_at
        /* "no-cr4-reserved" on the command line skips this one (QEMU 7.2 loops on it in its SVM intercept) */
        mov $str_no_cr4_reserved, %esi
        call has_option
        jnz 2f
        TRY 1f
        mov %cr4, %eax
        or $0x80000000, %eax            /* reserved bit 31 */
cr4_at: mov %eax, %cr4
        NOFAULT
1:      EXPECT "cr4.reserved", 13, 0, cr4_at
2:      ret

/* ---- single-step and debug registers ---- */
        .macro DR6
        mov %dr6, %eax
        and $0x600f, %eax               /* BS, BD, B0-B3 (BT is bit 15) */
        .endm

check_debug:
        xor %eax, %eax
        mov %eax, %dr6
        TRY 1f
        pushf
        orl $EFLAGS_TF, (%esp)
        popf
        nop                             /* runs, then #DB */
tf_after:
        nop
        NOFAULT
1:      EXPECT "db.tf", 1, 0, tf_after
        DR6
        CHECK "db.tf.dr6", 0x4000

        /* Single-step count over a few instructions: the handler returns to the code */
        movl $1, try_resume
        movl $0, exc_count
        movl $clear_tf_hook, exc_hook
        pushf
        orl $EFLAGS_TF, (%esp)
        popf
        nop
        nop
        nop
        mov $1, %eax
        movl $0, exc_hook_enable        /* the hook clears TF when it sees this */
        nop
tf_count_end:
        movl $0, exc_hook
        movl $0, try_resume
        mov exc_count, %eax
        CHECK "db.tf.steps", 5

        /* Execute breakpoint: a fault, before the instruction runs */
        xor %eax, %eax
        mov %eax, %dr6
        mov $bp_exec_at, %eax
        mov %eax, %dr0
        mov $0x1, %eax                  /* L0, execute, length 1 */
        mov %eax, %dr7
        TRY 1f
        nop
bp_exec_at:
        nop
        NOFAULT
1:      xor %eax, %eax
        mov %eax, %dr7
        EXPECT "db.exec", 1, 0, bp_exec_at
        DR6
        CHECK "db.exec.dr6", 0x1

        /* Data write breakpoint on a dword: a trap after the writing instruction */
        xor %eax, %eax
        mov %eax, %dr6
        mov $dr_watched, %eax
        mov %eax, %dr1
        mov $0x00d00004, %eax           /* L1, RW1=01 write, LEN1=11 (4 bytes) */
        mov %eax, %dr7
        TRY 1f
        mov dr_watched, %eax            /* a read does not trigger */
        movb $1, dr_watched + 2
dbw_after:
        NOFAULT
1:      xor %eax, %eax
        mov %eax, %dr7
        EXPECT "db.write", 1, 0, dbw_after
        DR6
        CHECK "db.write.dr6", 0x2

        /* I/O breakpoint (CR4.DE): a trap after the IN */
        xor %eax, %eax
        mov %eax, %dr6
        mov %cr4, %eax
        or $0x8, %eax
        mov %eax, %cr4
        mov $0x80, %eax
        mov %eax, %dr2
        mov $0x02000010, %eax           /* L2, RW2=10 I/O, LEN2=00 */
        mov %eax, %dr7
        TRY 1f
        inb $0x80, %al
dbio_after:
        NOFAULT
1:      xor %eax, %eax
        mov %eax, %dr7
        mov %cr4, %eax
        and $~0x8, %eax
        mov %eax, %cr4
        EXPECT "db.io", 1, 0, dbio_after
        DR6
        CHECK "db.io.dr6", 0x4

        /* Read/write breakpoint (RW=11): a read triggers it too */
        xor %eax, %eax
        mov %eax, %dr6
        mov $dr_watched, %eax
        mov %eax, %dr3
        mov $0xf0000040, %eax           /* L3, RW3=11, LEN3=11 */
        mov %eax, %dr7
        TRY 1f
        mov dr_watched, %eax
dbrw_after:
        NOFAULT
1:      xor %eax, %eax
        mov %eax, %dr7
        EXPECT "db.read", 1, 0, dbrw_after
        DR6
        CHECK "db.read.dr6", 0x8

        /* DR7.GD: the next MOV DRn faults with DR6.BD, and the processor clears GD */
        xor %eax, %eax
        mov %eax, %dr6
        mov $0x2000, %eax
        mov %eax, %dr7
        TRY 1f
gd_at:  mov %dr0, %eax
        NOFAULT
1:      EXPECT "db.gd", 1, 0, gd_at
        DR6
        CHECK "db.gd.dr6", 0x2000
        mov %dr7, %eax
        and $0x2000, %eax
        CHECK "db.gd.cleared", 0

        /* EFLAGS.RF: an execute breakpoint's handler returns with RF and the instruction then runs */
        xor %eax, %eax
        mov %eax, %dr6
        mov $rf_at, %eax
        mov %eax, %dr0
        mov $0x1, %eax
        mov %eax, %dr7
        movl $1, try_resume
        movl $0, exc_count
        movl $set_rf_hook, exc_hook
rf_at:  nop
        movl $0, exc_hook
        movl $0, try_resume
        xor %eax, %eax
        mov %eax, %dr7
        mov exc_count, %eax
        CHECK "db.rf.hits", 1

        /* MOV SS holds a single-step trap over the next instruction */
        xor %eax, %eax
        mov %eax, %dr6
        TRY 1f
        mov %ss, %bx
        pushf
        orl $EFLAGS_TF, (%esp)
        popf
        mov %bx, %ss                    /* the step after this is held... */
        nop                             /* ...until this one has run */
movss_after:
        nop
        NOFAULT
1:      EXPECT "db.mov_ss_shadow", 1, 0, movss_after
        ret

/* exc_hook for the RF check: resume with RF; give up (clear DR7) if the breakpoint keeps hitting */
set_rf_hook:
        orl $0x10000, 8(%ebp)
        cmpl $3, exc_count
        jb 1f
        xor %eax, %eax
        mov %eax, %dr7
1:      ret

/* exc_hook for the step count: clears TF in the frame once the code stored 0 in exc_hook_enable */
clear_tf_hook:
        cmpl $0, exc_hook_enable
        jne 1f
        andl $~EFLAGS_TF, 8(%ebp)
1:      ret

/* ---- LAR, LSL, VERR, VERW: the value when ZF is set, else 0xffffffff (ZF clear) ---- */
        .macro QUERY name, insn, sel, expected, mask=0xffffffff
        mov $\sel, %ecx
        mov $0xffffffff, %eax
        \insn %ecx, %eax
        jz 2f
        mov $0xffffffff, %eax
        jmp 3f
2:      and $\mask, %eax
3:      CHECK "\name", \expected
        .endm
        .macro VQUERY name, insn, sel, expected
        mov $\sel, %ecx
        xor %eax, %eax
        \insn %cx
        setz %al
        CHECK "\name", \expected
        .endm

check_descriptor_queries:
        /* ARPL raises a selector's RPL to another's (ZF set when it changed); result: ZF << 16 | selector */
        .macro ARPL_RESULT dest, source
        mov $\dest, %eax
        mov $\source, %ecx
        arpl %cx, %ax
        setz %dl
        movzbl %dl, %edx
        shl $16, %edx
        movzwl %ax, %eax
        or %edx, %eax
        .endm
        ARPL_RESULT 0x10, 0x23
        CHECK "arpl.raised", 0x10013
        ARPL_RESULT 0x13, 0x20
        CHECK "arpl.kept", 0x13

        QUERY "lsl.up", lsl, SEL_UP, 0xfff
        QUERY "lsl.flat_4k", lsl, SEL_DATA0, 0xffffffff
        QUERY "lsl.tss", lsl, SEL_TSS_B, 0x67
        QUERY "lsl.call_gate", lsl, SEL_GATE3, 0xffffffff
        /* LAR: bits 19:16 are undefined (the limit's, or zero): masked */
        QUERY "lar.data0", lar, SEL_DATA0, 0x00c09300, 0x00f0ff00
        QUERY "lar.call_gate", lar, SEL_GATE3, 0x0010ec00, 0x00f0ff00   /* 0x0010: gate_target >> 16 */
        QUERY "lar.null", lar, 0, 0xffffffff
        VQUERY "verr.exec_only", verr, SEL_XCODE, 0
        VQUERY "verr.readable_code", verr, SEL_CODE0, 1
        VQUERY "verw.readonly", verw, SEL_RODATA, 0
        VQUERY "verw.data", verw, SEL_DATA0, 1
        /* From CPL 3: DPL-0 descriptors are not visible */
        TRY 1f
        mov $user_queries, %eax
        mov $2, %ecx
        jmp enter_user
1:      mov user_query_results, %eax
        CHECK "lar.cpl3_dpl0", 0
        mov user_query_results + 4, %eax
        CHECK "lar.cpl3_dpl3", 1
        mov user_query_results + 8, %eax
        CHECK "verw.cpl3_dpl0", 0
        mov user_query_results + 12, %eax
        CHECK "verr.cpl3_conforming_dpl0", 1
        ret

user_queries:
        xor %eax, %eax
        mov $SEL_DATA0, %ecx
        lar %ecx, %edx
        setz %al
        mov %eax, user_query_results
        mov $(SEL_DATA3 | 3), %ecx
        lar %ecx, %edx
        setz %al
        mov %eax, user_query_results + 4
        mov $SEL_DATA0, %ecx
        verw %cx
        setz %al
        mov %eax, user_query_results + 8
        mov $SEL_CONFORMING, %ecx
        verr %cx                        /* conforming code: no privilege check */
        setz %al
        mov %eax, user_query_results + 12
        NOFAULT

/* ---- #DF through a task gate ---- */
/*
 * TSS A's SS0 is made null, so an interrupt from CPL 3 cannot switch stacks: #TS(0) while delivering INT 0x80,
 * whose delivery faults the same way: #DF, through a task gate to a task with its own stack. That task
 * records its error code, repairs SS0 and IRETs (nested) back to CPL 3, where INT 0x80 now runs.
 */
check_double_fault_task:
        mov $tss_df, %edi
        mov $26, %ecx
        xor %eax, %eax
        rep stosl
        movl $df_task, tss_df + 32
        movl $2, tss_df + 36
        movl $STACK_B, tss_df + 56
        mov %cr3, %eax
        mov %eax, tss_df + 28
        movl $SEL_CODE0, tss_df + 76
        mov $SEL_DATA0, %eax
        mov %eax, tss_df + 72
        mov %eax, tss_df + 80
        mov %eax, tss_df + 84
        mov %eax, tss_df + 88
        mov %eax, tss_df + 92
        movw $104, tss_df + 102
        movl $(SEL_TSS_DF << 16), idt + 8 * 8
        movl $0x8500, idt + 8 * 8 + 4
        movl $0xffffffff, df_error
        movl $0, tss_a + 8              /* SS0 := null */
        TRY 1f
        mov $user_df, %eax
        mov $2, %ecx
        jmp enter_user
1:      movl $SEL_DATA0, tss_a + 8
        clts
        EXPECT "df.task.resumed", 0x80, 0, user_df_after
        mov df_error, %eax
        CHECK "df.task.error", 0
        mov df_link, %eax
        CHECK "df.task.link", SEL_TSS_A
        mov df_eip_a, %eax
        CHECK "df.task.a_eip", user_df

        /* The same with TSS.ESP0 in a not-present page: #PF while delivering INT 0x80, #PF again while
           delivering that: #DF */
        movl $(TESTPAGE | 6), %eax
        call map_test
        movl $0xffffffff, df_error
        movl $(TESTPAGE + 0x1000), tss_a + 4
        TRY 1f
        mov $user_df, %eax
        mov $2, %ecx
        jmp enter_user
1:      movl $STACK0_TSS, tss_a + 4
        clts
        EXPECT "df.stack_pf.resumed", 0x80, 0, user_df_after
        mov df_error, %eax
        CHECK "df.stack_pf.error", 0
        mov df_cr2, %eax
        CHECK "df.stack_pf.cr2", (TESTPAGE + 0xffc)
        IDT_GATE 8, stub_8, 0x8e
        ret
user_df:
        NOFAULT
user_df_after:
df_task:
        pop %eax
        mov %eax, df_error
        movzwl tss_df, %eax
        mov %eax, df_link
        mov tss_a + 32, %eax
        mov %eax, df_eip_a
        mov %cr2, %eax
        mov %eax, df_cr2
        movl $SEL_DATA0, tss_a + 8      /* repair what the checks broke */
        movl $STACK0_TSS, tss_a + 4
        iret
        jmp df_task                     /* (a later #DF starts here) */

/* ---- data ---- */
        .section .rodata
str_colon:      .asciz ": "
str_ok:         .asciz " ok\n"
str_fail:       .asciz " FAIL want "
str_info:       .asciz " info\n"
str_done:       .asciz "done "
str_failed:     .asciz " failed\n"
str_unexpected: .asciz "unexpected exception: "
str_no_cr4_reserved: .asciz "no-cr4-reserved"
str_bad_boot:   .asciz "not booted by a Multiboot loader\n"

        .data
        .align 8
gdt_pointer:
        .word GDT_ENTRIES * 8 - 1
        .long gdt
        .align 8
idt_pointer:
        .word 256 * 8 - 1
        .long idt
        .align 8
idt_pointer_short:
        .word 0x90 * 8 - 1
        .long idt
bound_pair:     .long 0, 4
bound_pair_16:  .word 0xfffe, 4         /* signed: -2..4 */
int_zero:       .long 0
lss_pointer:    .long 0x1234
                .word SEL_RODATA
fpu_cw_unmask_zd: .word 0x037b          /* all masked but ZM */
        .align 4
pse_probe:      .long 0x5a5aa5a5
misaligned:     .long 0, 0, 0
dr_watched:     .long 0
user_fs_seen:   .long 0
conforming_cs:  .long 0
gate16_seen:    .long 0, 0, 0
gate16_return_pointer: .long gate16_return
sysenter_seen:  .long 0, 0, 0
ldt_probe:      .long 0x600df00d
user_query_results: .long 0, 0, 0, 0
df_error:       .long 0
df_link:        .long 0
df_cr2:         .long 0
df_eip_a:       .long 0
exc_hook_enable: .long 1
cr0_saved:      .long 0

        .align 16
tss_a:  .fill 104, 1, 0
tss_a_iomap:                            /* ports 0x00-0xff; 0x80, 0x82, 0x83, 0x88-0x8b allowed */
        .fill 16, 1, 0xff
        .byte 0xf2, 0xf0                /* 0x80-0x87: bits 0, 2, 3 clear; 0x88-0x8f: bits 0-3 clear */
        .fill 14, 1, 0xff
        .byte 0xff                      /* the byte after the map */
tss_a_end:

        .bss
        .align 16
gdt:    .fill GDT_ENTRIES * 8, 1, 0
idt:    .fill 256 * 8, 1, 0
ldt:    .fill 16, 1, 0
tss_b:  .fill 104, 1, 0
tss_v:  .fill 104, 1, 0
tss_df: .fill 104, 1, 0
        .align 4
mb_info:        .long 0
fail_count:     .long 0
try_resume:     .long 0
try_esp:        .long 0
exc_vector:     .long 0
exc_error:      .long 0
exc_eip:        .long 0
exc_cs:         .long 0
exc_eflags:     .long 0
exc_cr2:        .long 0
exc_eax:        .long 0
exc_inner_flags: .long 0
exc_entry_ds:   .long 0
exc_ecx:        .long 0
exc_edi:        .long 0
exc_count:      .long 0
exc_hook:       .long 0
exc_frame:      .long 0
gate_seen_cs:   .long 0
gate_seen_esp:  .long 0
gate_seen_params: .long 0, 0
gate_seen_ss:   .long 0
gate_seen_ret_cs: .long 0
task_b_tr:      .long 0
task_b_ebx:     .long 0
task_b_flags:   .long 0
task_b_link:    .long 0
task_b_type_a:  .long 0
task_b_type_b:  .long 0
