import { bool, int, list, record, stateSchema, u16, u32, type ValueOf } from '../../base/state-schema.js';
import { X87_STATE } from './fpu/x87.js';

const SEGMENT = record({ selector: u16, base: u32, limit: u32, attributes: u16 });
const TABLE = record({ base: u32, limit: u16 });

/**
 * One vCPU's whole state at an instruction boundary: the architectural registers (as X86Registers), debug
 * registers, MSRs, the pins and what blocks them (the interrupt shadow after STI / MOV SS, NMI blocking), and
 * the x87. Version 2 adds the shadow, NMI blocking and held debug traps, and nests the x87 as a record.
 */
export const CPU_STATE = stateSchema(2, {
  registers: record({
    gpr: list(u32, 8), eip: u32, eflags: u32, segments: list(SEGMENT, 6), ldtr: SEGMENT, tr: SEGMENT,
    gdtr: TABLE, idtr: TABLE, cr0: u32, cr2: u32, cr3: u32, cr4: u32,
  }),
  dr: list(u32, 8),
  cpl: int(0, 3),
  halted: bool,
  /** The INTR pin's level (the local APIC's output), NMI latched and not yet delivered, NMI blocked until IRET. */
  intr: bool, nmiPending: bool, nmiBlocked: bool,
  /** Interrupts (and for MOV SS also debug traps) wait one instruction after STI, MOV SS, POP SS. */
  interruptShadow: bool, ssLoaded: bool,
  /** DR6 bits of debug traps held back by MOV SS / POP SS. */
  heldDebugTraps: u32,
  /** TSC = guest-clock ns x rate + this offset (set by WRMSR IA32_TSC); the clock is restored with the machine. */
  tscOffset: int(-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
  sysenterCs: u16, sysenterEsp: u32, sysenterEip: u32,
  fpu: X87_STATE,
});

export type CpuState = ValueOf<typeof CPU_STATE>;
