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
