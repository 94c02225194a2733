/**
 * The architectural register state of one x86 vCPU as plain data. Both accelerators speak it: the emulated
 * CPU (getRegisters/setRegisters) and KVM (kvm_regs + kvm_sregs), so that boot code, snapshots and the monitor
 * never care which one runs the guest.
 */

/** General registers in x86 encoding order. */
export const EAX = 0, ECX = 1, EDX = 2, EBX = 3, ESP = 4, EBP = 5, ESI = 6, EDI = 7;
/** Segment registers in x86 encoding order. */
export const ES = 0, CS = 1, SS = 2, DS = 3, FS = 4, GS = 5;

/** Hidden part of a segment register, as loaded from a descriptor. */
export interface SegmentState {
  selector: number;
  base: number;
  /** Byte-granular limit (already scaled when the descriptor's G bit is set). */
  limit: number;
  /**
   * Descriptor bits 40..55 shifted down by 8 (so bits 0..15 here): type (0..3), S (4), DPL (5..6), P (7),
   * AVL (12), L (13), D/B (14), G (15). This is VMX's "access rights" layout and maps 1:1 onto kvm_segment.
   */
  attributes: number;
}

export interface TableRegister {
  base: number;
  limit: number;
}

export interface X86Registers {
  /** EAX..EDI, unsigned 32-bit values. */
  gpr: number[];
  eip: number;
  eflags: number;
  /** ES, CS, SS, DS, FS, GS. */
  segments: SegmentState[];
  ldtr: SegmentState;
  tr: SegmentState;
  gdtr: TableRegister;
  idtr: TableRegister;
  cr0: number;
  cr2: number;
  cr3: number;
  cr4: number;
}

/** Attribute values for the common flat segments (present, DPL 0, 32-bit, 4 KiB granularity). */
export const FLAT_CODE32_ATTRIBUTES = 0xc09b;
export const FLAT_DATA32_ATTRIBUTES = 0xc093;
