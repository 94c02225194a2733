import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { VersionedState } from './state.js';
import { bool, bytes, f64s, i32, int, list, nullable, num, oneOf, record, since, stateSchema, u16s, u32, u8 } from './state-schema.js';

const SCHEMA = stateSchema(3, {
  mode: int(0, 5),
  flag: bool,
  count: u32,
  delta: i32,
  deadline: nullable(num()),
  kind: oneOf('idle', 'busy'),
  fifo: bytes({ max: 4 }),
  regs: u16s(2),
  times: f64s(1),
  items: list(record({ a: u8, b: bool }), { max: 2 }),
  window: record({ lo: u32, hi: u32 }, (w) => (w.lo > w.hi ? ['lo', `${w.lo} is above hi ${w.hi}`] : undefined)),
  added: since(3, 7, u8),
}, { oldest: 2 });

const VALUES = {
  mode: 3, flag: true, count: 0xffffffff, delta: -5, deadline: null, kind: 'busy' as const, fifo: Uint8Array.of(1, 2),
  regs: Uint16Array.of(0xffff, 1), times: Float64Array.of(1.5), items: [{ a: 1, b: false }], window: { lo: 1, hi: 2 }, added: 9,
};

function refused(state: unknown, message: RegExp): void {
  // Hostile input is whatever the caller passes: the schema takes it as a VersionedState and checks everything.
  assert.throws(() => SCHEMA.restore('dev', state as VersionedState), (e: unknown) => {
    assert.ok(e instanceof Error && e.name === 'StateError', String(e));
    assert.match(e.message, message);
    assert.doesNotMatch(e.message, /\n/);
    return true;
  });
}

function withField(name: string, value: unknown): unknown {
  const state = SCHEMA.save(VALUES);
  return { version: state.version, fields: { ...state.fields, [name]: value } };
}

test('save gives plain versioned data not aliasing the device; restore gives the same values back', () => {
  const state = SCHEMA.save(VALUES);
  assert.equal(state.version, 3);
  assert.notEqual(state.fields.fifo, VALUES.fifo, 'typed arrays are copied');
  const back = SCHEMA.restore('dev', structuredClone(state));
  assert.deepEqual(back, VALUES);
  // The restored object is typed from the field list: no casts needed to use it.
  const kind: 'idle' | 'busy' = back.kind;
  const deadline: number | null = back.deadline;
  assert.equal(kind, 'busy');
  assert.equal(deadline, null);
});

test('a field added in a later version takes its fallback in older states, and may not appear in them', () => {
  const { added: _added, ...older } = SCHEMA.save(VALUES).fields;
  assert.equal(SCHEMA.restore('dev', { version: 2, fields: older }).added, 7);
  refused({ version: 2, fields: SCHEMA.save(VALUES).fields }, /^dev: state field added: not part of state version 2$/);
});

test('versions outside what the build reads are refused', () => {
  refused({ version: 1, fields: {} }, /^dev: state version 1 is not supported \(this build reads 2\.\.3\)$/);
  refused({ version: 4, fields: {} }, /^dev: state version 4 is not supported/);
  refused({ version: '3', fields: {} }, /^dev: state version "3" is not supported/);
  refused({ fields: {} }, /^dev: state version nothing is not supported/);
  refused(null, /^dev: state is null, not a versioned state$/);
  refused({ version: 3, fields: [] }, /^dev: state field fields: expected a record, got an array of 0$/);
});

test('each kind of bad field is named with what it should hold', () => {
  refused(withField('mode', 6), /^dev: state field mode: expected an integer 0\.\.5, got 6$/);
  refused(withField('mode', 2.5), /^dev: state field mode: expected an integer 0\.\.5, got 2\.5$/);
  refused(withField('count', -1), /^dev: state field count: expected an integer 0\.\.4294967295, got -1$/);
  refused(withField('delta', 2 ** 31), /^dev: state field delta: expected an integer -2147483648\.\.2147483647/);
  refused(withField('flag', 1), /^dev: state field flag: expected true or false, got 1$/);
  refused(withField('deadline', NaN), /^dev: state field deadline: expected a finite number or null, got NaN$/);
  refused(withField('kind', 'gone'), /^dev: state field kind: expected one of "idle"\|"busy", got "gone"$/);
  refused(withField('fifo', new Uint8Array(5)), /^dev: state field fifo: expected bytes\[<=4\], got Uint8Array\(5\)$/);
  refused(withField('fifo', [1, 2]), /^dev: state field fifo: expected bytes\[<=4\], got an array of 2$/);
  refused(withField('fifo', Buffer.from([1])), /^dev: state field fifo: expected bytes\[<=4\], got Buffer\(1\)$/);
  refused(withField('regs', new Uint32Array(2)), /^dev: state field regs: expected u16\[2\], got Uint32Array\(2\)$/);
  refused(withField('times', Float64Array.of(Infinity)), /^dev: state field times: holds a value that is not finite$/);
  refused(withField('items', [{ a: 1, b: false }, { a: 300, b: true }]), /^dev: state field items\[1\]\.a: expected an integer 0\.\.255, got 300$/);
  refused(withField('items', [{ a: 1 }]), /^dev: state field items\[0\]\.b: missing$/);
  refused(withField('items', [{}, {}, {}]), /^dev: state field items: expected a list\[<=2\] of a record, got an array of 3$/);
  refused(withField('window', { lo: 3, hi: 2 }), /^dev: state field window\.lo: 3 is above hi 2$/);
  refused(withField('unknown', 1), /^dev: state field unknown: not part of state version 3$/);
  const { mode: _mode, ...noMode } = SCHEMA.save(VALUES).fields;
  refused({ version: 3, fields: noMode }, /^dev: state field mode: missing$/);
  refused(withField('__proto__', {}), /^dev: state field __proto__: not part of state version 3$/);
});
