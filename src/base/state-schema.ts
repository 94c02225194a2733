import { StateError } from './errors.js';
import type { StateValue, VersionedState } from './state.js';

/**
 * The one way device and CPU state is declared, validated and (de)serialized, in the manner of QEMU's VMState
 * field lists: a device lists its fields with their types and ranges, and gets `save` (its values → plain
 * VersionedState) and `restore` (any input, treated as hostile → its values, typed by the field list). A
 * state that does not fit is refused with one line naming the device and the field; nothing is half-read.
 *
 *     const STATE = stateSchema(2, { mode: int(0, 5), reload: int(1, 0x10000), gate: bool, deadline: nullable(num()) });
 *     saveState() { return STATE.save({ mode: this.mode, ... }); }
 *     restoreState(state) { const s = STATE.restore(this.id, state); this.mode = s.mode; ... }
 *
 * Versions: a field added in version N is declared `since(N, fallback, type)`; states from before N get the
 * fallback. A state whose version is outside [oldest, version] is refused, as are unknown fields.
 */
export interface FieldType<T> {
  /** What the field holds, for messages ("an integer 0..255", "bytes[256]"). */
  readonly expected: string;
  /** The state version that added the field (see `since`). */
  readonly since?: number;
  /** The value states older than `since` stand for. */
  readonly fallback?: T;
  /** Checks a value read from a state; throws a field error (see `fail`) naming `path`. */
  read(value: StateValue | undefined, path: string, version: number): T;
  /** The value as state data (typed arrays copied: the state must not alias the device). */
  write(value: T): StateValue;
}

type FieldList = Record<string, FieldType<unknown>>;
/** The restored object's type, inferred from a field list. */
export type FieldValues<F extends FieldList> = { [K in keyof F]: F[K] extends FieldType<infer T> ? T : never };
/** A cross-field rule of a record: returns [field, problem] when the values do not fit together. */
export type RecordRule<T> = (value: T) => [field: string, problem: string] | undefined;

/** Thrown inside a read; the schema turns it into a StateError with the device's id. */
class FieldError {
  constructor(readonly path: string, readonly problem: string) {}
}

function fail(path: string, problem: string): never {
  throw new FieldError(path, problem);
}

/** A short description of what a hostile state holds where a field should be. */
function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (typeof v === 'string') return JSON.stringify(v.length > 24 ? `${v.slice(0, 24)}...` : v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${(v as Uint8Array).length})`;
  return typeof v === 'object' ? 'an object' : typeof v;
}

function mismatch(path: string, expected: string, v: unknown): never {
  return fail(path, v === undefined ? 'missing' : `expected ${expected}, got ${describe(v)}`);
}

function lengthText(length: number | { max: number }): string {
  return typeof length === 'number' ? String(length) : `<=${length.max}`;
}

function lengthFits(n: number, length: number | { max: number }): boolean {
  return typeof length === 'number' ? n === length : n <= length.max;
}

function plain<T>(expected: string, test: (v: StateValue | undefined) => boolean): FieldType<T> {
  return {
    expected,
    read: (v, path) => (test(v) ? (v as T) : mismatch(path, expected, v)),
    write: (v) => v as StateValue,
  };
}

/** An integer in [min, max]. */
export function int(min: number, max: number): FieldType<number> {
  return plain(`an integer ${min}..${max}`, (v) => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max);
}

export const u8 = int(0, 0xff);
export const u16 = int(0, 0xffff);
export const u32 = int(0, 0xffffffff);
export const i32 = int(-0x80000000, 0x7fffffff);
/** Whole numbers a double holds exactly (counts, TSC values, byte offsets). */
export const uint53 = int(0, Number.MAX_SAFE_INTEGER);

/** A finite number in [min, max] (guest nanoseconds, fractions). */
export function num(min = -Number.MAX_VALUE, max = Number.MAX_VALUE): FieldType<number> {
  const range = min === -Number.MAX_VALUE && max === Number.MAX_VALUE ? '' : ` ${min}..${max}`;
  return plain(`a finite number${range}`, (v) => typeof v === 'number' && Number.isFinite(v) && v >= min && v <= max);
}

export const bool: FieldType<boolean> = plain('true or false', (v) => typeof v === 'boolean');

/** One of a few strings (a device's state machine) or numbers. */
export function oneOf<const T extends string | number>(...values: T[]): FieldType<T> {
  return plain(`one of ${values.map((v) => JSON.stringify(v)).join('|')}`, (v) => (values as unknown[]).includes(v));
}

type TypedArray = Uint8Array | Uint16Array | Uint32Array | Int32Array | Float64Array;
type TypedArrayClass<A extends TypedArray> = { new (length: number): A; readonly name: string; prototype: A };

function typedArray<A extends TypedArray>(kind: TypedArrayClass<A>, name: string, length: number | { max: number }): FieldType<A> {
  const expected = `${name}[${lengthText(length)}]`;
  return {
    expected,
    read: (v, path) => {
      // Exactly this array class (not a subclass or another view over hostile memory), of the declared length.
      if (!(v instanceof kind) || Object.getPrototypeOf(v) !== kind.prototype || !lengthFits(v.length, length)) return mismatch(path, expected, v);
      if (v instanceof Float64Array && !v.every(Number.isFinite)) fail(path, 'holds a value that is not finite');
      return v;
    },
    write: (v) => v.slice() as StateValue,
  };
}

export const bytes = (length: number | { max: number }) => typedArray(Uint8Array, 'bytes', length);
export const u16s = (length: number | { max: number }) => typedArray(Uint16Array, 'u16', length);
export const u32s = (length: number | { max: number }) => typedArray(Uint32Array, 'u32', length);
export const i32s = (length: number | { max: number }) => typedArray(Int32Array, 'i32', length);
export const f64s = (length: number | { max: number }) => typedArray(Float64Array, 'f64', length);

/** An array of `length` (or at most `max`) values of one type: numbers, records, ... */
export function list<T>(item: FieldType<T>, length: number | { max: number }): FieldType<T[]> {
  const expected = `a list[${lengthText(length)}] of ${item.expected}`;
  return {
    expected,
    read: (v, path, version) => {
      if (!Array.isArray(v) || !lengthFits(v.length, length)) return mismatch(path, expected, v);
      return v.map((x, i) => item.read(x, `${path}[${i}]`, version));
    },
    write: (v) => v.map((x) => item.write(x)),
  };
}

/** The value or null (a deadline that is not armed, a count not yet written). */
export function nullable<T>(type: FieldType<T>): FieldType<T | null> {
  const expected = `${type.expected} or null`;
  return {
    expected,
    read: (v, path, version) => {
      if (v === null) return null;
      try {
        return type.read(v, path, version);
      } catch (e) {
        // Say what the field may hold, null included.
        if (e instanceof FieldError && e.path === path && v !== undefined) return mismatch(path, expected, v);
        throw e;
      }
    },
    write: (v) => (v === null ? null : type.write(v)),
  };
}

/** A nested state with its own version (a part whose owner validates it, e.g. a virtio device behind its transport). */
export const versionedState: FieldType<VersionedState> = {
  expected: 'a versioned state',
  read: (v, path) => {
    if (typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v)) {
      const { version, fields } = v;
      if (typeof version === 'number' && typeof fields === 'object' && fields !== null && !Array.isArray(fields) && !ArrayBuffer.isView(fields)) {
        return { version, fields };
      }
    }
    return mismatch(path, 'a versioned state', v);
  },
  write: (v) => ({ version: v.version, fields: v.fields }),
};

/** A field that state version `version` added; older states stand for `fallback`. */
export function since<T>(version: number, fallback: T, type: FieldType<T>): FieldType<T> {
  return { ...type, since: version, fallback };
}

/** Named fields (a nested record, or a whole device's fields); `rule` checks values that must fit together. */
export function record<F extends FieldList>(fields: F, rule?: RecordRule<FieldValues<F>>): FieldType<FieldValues<F>> {
  const names = Object.keys(fields);
  return {
    expected: 'a record',
    read: (v, path, version) => {
      if (typeof v !== 'object' || v === null || Array.isArray(v) || ArrayBuffer.isView(v)) return mismatch(path || 'fields', 'a record', v);
      const at = (name: string) => (path ? `${path}.${name}` : name);
      for (const name of Object.keys(v)) if (!Object.hasOwn(fields, name)) fail(at(name), `not part of state version ${version}`);
      const out: Record<string, unknown> = {};
      for (const name of names) {
        const type = fields[name];
        if (type.since !== undefined && version < type.since) {
          if (Object.hasOwn(v, name)) fail(at(name), `not part of state version ${version}`);
          out[name] = type.fallback;
        } else {
          out[name] = type.read(Object.hasOwn(v, name) ? v[name] : undefined, at(name), version);
        }
      }
      const value = out as FieldValues<F>;
      const broken = rule?.(value);
      if (broken) fail(at(broken[0]), broken[1]);
      return value;
    },
    write: (v) => {
      const out: { [key: string]: StateValue } = {};
      for (const name of names) out[name] = fields[name].write(v[name]);
      return out;
    },
  };
}

/** A device's (or the CPU's) state: its current layout version, the oldest it still reads, and its fields. */
export class StateSchema<T> {
  constructor(readonly version: number, readonly oldest: number, private readonly fields: FieldType<T>) {}

  save(values: T): VersionedState {
    return { version: this.version, fields: this.fields.write(values) as VersionedState['fields'] };
  }

  /** Validates `state` as hostile input and returns its values; throws one StateError naming `id` and the field. */
  restore(id: string, state: VersionedState): T {
    const raw: unknown = state;
    if (typeof raw !== 'object' || raw === null) throw new StateError(`${id}: state is ${describe(raw)}, not a versioned state`);
    const version = (raw as { version?: unknown }).version;
    if (typeof version !== 'number' || !Number.isInteger(version) || version < this.oldest || version > this.version) {
      const supported = this.oldest === this.version ? `${this.version}` : `${this.oldest}..${this.version}`;
      throw new StateError(`${id}: state version ${describe(version)} is not supported (this build reads ${supported})`);
    }
    try {
      return this.fields.read((raw as { fields?: StateValue }).fields, '', version);
    } catch (e) {
      if (e instanceof FieldError) throw new StateError(`${id}: state field ${e.path}: ${e.problem}`);
      throw e;
    }
  }
}

/** The schema of a state with these fields; `oldest` is the oldest version still read (default: only the current one). */
export function stateSchema<F extends FieldList>(
  version: number,
  fields: F,
  options: { oldest?: number; rule?: RecordRule<FieldValues<F>> } = {},
): StateSchema<FieldValues<F>> {
  return new StateSchema(version, options.oldest ?? version, record(fields, options.rule));
}

/** The values a schema restores, or a field type holds. */
export type ValueOf<S> = S extends StateSchema<infer T> ? T : S extends FieldType<infer T> ? T : never;

/** The properties `names` of an object whose state fields are named as its properties (for saving). */
export function pick<T extends object, K extends keyof T>(from: T, names: readonly K[]): Pick<T, K> {
  const out: Partial<Pick<T, K>> = {};
  for (const name of names) out[name] = from[name];
  return out as Pick<T, K>;
}

/** Loads restored values into the properties of the same names (the counterpart of `pick`). */
export function assign<T extends object, K extends keyof T>(to: T, from: Pick<T, K>, names: readonly K[]): void {
  for (const name of names) to[name] = from[name];
}
