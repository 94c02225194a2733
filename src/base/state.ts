import { StateError } from './errors.js';

/**
 * Device and CPU state is plain, versioned data: JSON-compatible values plus typed arrays, named fields.
 * Snapshots, migration and hibernation all serialize these objects; a restore validates them as hostile.
 */
export type StateValue =
  | number
  | string
  | boolean
  | null
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | Int32Array
  | Float64Array
  | StateValue[]
  | { [key: string]: StateValue };

export interface VersionedState {
  /** Version of the layout of `fields`; bump it when a field changes meaning. */
  version: number;
  fields: { [key: string]: StateValue };
}

/** Anything that can be snapshotted. */
export interface Stateful {
  /** Stable identifier within a machine, e.g. "pic0", "uart@0x3f8". */
  readonly id: string;
  saveState(): VersionedState;
  /** Must validate everything it reads; throws StateError on mismatch. */
  restoreState(state: VersionedState): void;
}

/** Helpers for restoreState implementations. */
export function expectVersion(id: string, state: VersionedState, min: number, max: number): void {
  if (typeof state?.version !== 'number' || state.version < min || state.version > max) {
    throw new StateError(`${id}: unsupported state version ${String(state?.version)} (supported ${min}..${max})`);
  }
}

export function numberField(id: string, state: VersionedState, name: string, min = -Infinity, max = Infinity): number {
  const v = state.fields[name];
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
    throw new StateError(`${id}: bad state field ${name}`);
  }
  return v;
}

export function boolField(id: string, state: VersionedState, name: string): boolean {
  const v = state.fields[name];
  if (typeof v !== 'boolean') throw new StateError(`${id}: bad state field ${name}`);
  return v;
}

export function bytesField(id: string, state: VersionedState, name: string, length?: number): Uint8Array {
  const v = state.fields[name];
  if (!(v instanceof Uint8Array) || (length !== undefined && v.length !== length)) {
    throw new StateError(`${id}: bad state field ${name}`);
  }
  return v;
}
