import type { Stateful } from '../base/state.js';

/**
 * The contract every emulated device keeps. A device declares its bus ranges at construction (the machine
 * passes the buses in), keeps all guest-visible state in plain data it can save and restore, and never
 * learns which accelerator runs the guest.
 */
export interface Device extends Stateful {
  /** Back to power-on state (system reset). */
  reset(): void;
}

/** One interrupt wire into an interrupt controller. ISA devices raise it; the controller decides edge/level. */
export interface IrqLine {
  set(level: boolean): void;
}

/** What the CPU sees of the interrupt controller (the master 8259 on a PC). */
export interface InterruptAcknowledge {
  /** The INTA cycle: returns the vector of the highest-priority pending interrupt (or the spurious vector). */
  acknowledge(): number;
}

/** What an interrupt controller drives on the CPU. */
export interface IntrPin {
  setIntr(level: boolean): void;
}

/** What a processor reaches of its local APIC through MSRs and CPUID (IA32_APIC_BASE, IA32_TSC_DEADLINE). */
export interface CpuLocalApic {
  /** CPUID.1:EBX[31:24]. */
  readonly initialId: number;
  /** IA32_APIC_BASE bit 11; while clear, CPUID.1:EDX.APIC reads 0. */
  readonly globallyEnabled: boolean;
  /** IA32_APIC_BASE (the high half is 0: physical addresses have 32 bits). */
  readonly baseMsr: number;
  /** Returns false when `value` sets reserved bits (the WRMSR then raises #GP). */
  writeBaseMsr(value: number, high: number): boolean;
  /** IA32_TSC_DEADLINE as last written (0 once it fired or while the timer is in another mode). */
  readonly tscDeadline: number;
  /** Arms the TSC-deadline timer at TSC value `tsc`, which the TSC reaches at guest time `deadlineNs`. */
  writeTscDeadline(tsc: number, deadlineNs: number): void;
}
