/** Exception vectors. */
export const DE = 0, DB = 1, NMI_VECTOR = 2, BP = 3, OF_VECTOR = 4, BR = 5, UD = 6, NM = 7, DF_VECTOR = 8;
export const TS = 10, NP = 11, SS_VECTOR = 12, GP = 13, PF_VECTOR = 14, MF = 16, AC_VECTOR = 17;

/** Exceptions that push an error code. */
export function hasErrorCode(vector: number): boolean {
  return vector === DF_VECTOR || (vector >= TS && vector <= PF_VECTOR) || vector === AC_VECTOR;
}

/**
 * Fault-class exceptions other than #DB: the return address is the faulting instruction, and the EFLAGS image
 * pushed for them has RF set, so that a code breakpoint on that instruction does not match again when the
 * handler returns to it (#DB's own faults, code breakpoints and general detect, are left out).
 */
export function isFaultClass(vector: number): boolean {
  return vector === DE || (vector >= BR && vector <= NM) || (vector >= TS && vector <= PF_VECTOR) || vector === MF || vector === AC_VECTOR;
}

/** Contributory exceptions (a second one while delivering the first becomes #DF). */
export function isContributory(vector: number): boolean {
  return vector === DE || (vector >= TS && vector <= GP);
}

/**
 * Thrown (as the single preallocated instance below) out of an instruction when it faults; the run loop
 * catches it and delivers the exception. Instructions change no architectural state before they can fault.
 */
export class CpuFault {
  vector = 0;
  errorCode = -1;
}

export const FAULT = new CpuFault();
