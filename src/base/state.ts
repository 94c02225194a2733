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

/**
 * Anything that can be snapshotted. Implementations declare their fields once with a schema
 * (state-schema.ts) and go through it for all three methods.
 */
export interface Stateful {
  /** Stable identifier within a machine, e.g. "pic", "serial0". */
  readonly id: string;
  saveState(): VersionedState;
  /**
   * Validates a state as hostile input and changes nothing: throws a StateError naming the device and the
   * field. A machine checks every device's state before restoring any (a bad state never half-loads it).
   */
  checkState(state: VersionedState): void;
  /** Validates (as checkState) and loads the state, re-arming the device's timers from it. */
  restoreState(state: VersionedState): void;
}
