import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stateSchema } from '../../../base/state-schema.js';
import { X87, X87_STATE, type X87Host } from './x87.js';

/** A host with 4 KiB of flat memory, recording EFLAGS writes; pointers and mode are settable. */
class FakeHost implements X87Host {
  readonly mem = new DataView(new ArrayBuffer(4096));
  ax = 0;
  eflags = 0;
  fpuRealMode = false;
  fpuCs = 0x23;
  fpuIp = 0x1234;
  fpuDs = 0x2b;
  fpuDataOffset = 0x500;
  rd8(lin: number): number { return this.mem.getUint8(lin); }
  rd16(lin: number): number { return this.mem.getUint16(lin, true); }
  rd32(lin: number): number { return this.mem.getInt32(lin, true); }
  wr8(lin: number, v: number): void { this.mem.setUint8(lin, v & 0xff); }
  wr16(lin: number, v: number): void { this.mem.setUint16(lin, v & 0xffff, true); }
  wr32(lin: number, v: number): void { this.mem.setInt32(lin, v | 0, true); }
  probeWrite(): void {}
  setAx(v: number): void { this.ax = v & 0xffff; }
  fpuSetFlags(mask: number, values: number): void { this.eflags = (this.eflags & ~mask) | values; }
  fpuCondition(): boolean { return true; }
}

function setup(): { fpu: X87; host: FakeHost; run: (bytes: number[], lin?: number, o32?: boolean) => void; status: () => number } {
  const host = new FakeHost();
  const fpu = new X87(host);
  const run = (bytes: number[], lin = 0x500, o32 = true) => fpu.execute(bytes[0]!, bytes[1]!, lin, o32);
  const status = () => { run([0xdf, 0xe0]); return host.ax; };
  run([0xdb, 0xe3]); // FNINIT
  return { fpu, host, run, status };
}

const FLD1 = [0xd9, 0xe8], FLDZ = [0xd9, 0xee], FLDPI = [0xd9, 0xeb];
const IE = 0x1, ZE = 0x4, PE = 0x20, SF = 0x40, ES = 0x80, C1 = 0x200, C2 = 0x400, B = 0x8000;

test('stack overflow and underflow: IE with SF, C1 = 1 for overflow and 0 for underflow; masked, the indefinite', () => {
  const { run, status, host } = setup();
  for (let i = 0; i < 8; i++) run(FLD1);
  assert.equal(status() & (IE | SF | C1), 0);
  run(FLDZ); // a ninth push
  assert.equal(status() & (IE | SF | C1 | ES), IE | SF | C1);
  run([0xdb, 0x38]); // FSTP m80: the indefinite that overwrote ST(7)
  assert.deepEqual([host.mem.getUint32(0x500, true), host.mem.getUint32(0x504, true), host.mem.getUint16(0x508, true)], [0, 0xc0000000, 0xffff]);
  const { run: run2, status: status2 } = setup();
  run2([0xd8, 0xc1]); // FADD ST, ST(1) on an empty stack
  assert.equal(status2() & (IE | SF | C1), IE | SF);
});

test('an unmasked exception sets ES and B, keeps the destination, and waits: FSTP m32 of an SNaN stores nothing and does not pop', () => {
  const { fpu, run, status, host } = setup();
  host.mem.setUint16(0x600, 0x37e, true); // IM clear
  run([0xd9, 0x28], 0x600); // FLDCW
  host.mem.setUint32(0x500, 0, true);
  host.mem.setUint32(0x504, 0x80000001, true);
  host.mem.setUint16(0x508, 0x7fff, true);
  run([0xdb, 0x28]); // FLD m80: an SNaN (loads never convert m80)
  host.mem.setUint32(0x700, 0x11111111, true);
  run([0xd9, 0x18], 0x700); // FSTP m32
  assert.equal(host.mem.getUint32(0x700, true), 0x11111111);
  assert.equal(status() & (IE | ES | B), IE | ES | B);
  assert.ok(fpu.pendingException());
  assert.equal((status() >> 11) & 7, 7, 'not popped');
  run([0xdb, 0xe2]); // FNCLEX
  assert.equal(fpu.pendingException(), false);
  // Unmasked ZE: the destination keeps its value.
  host.mem.setUint16(0x600, 0x37b, true);
  run([0xd9, 0x28], 0x600);
  run(FLD1);
  run(FLDZ);
  run([0xdc, 0xf9]); // DC F8+i = FDIV ST(i), ST(0): ST(1) = 1 / 0
  assert.equal(status() & (ZE | ES), ZE | ES);
  run([0xdd, 0xd8]); // FSTP ST(0)
  run([0xdb, 0x38], 0x800); // FSTP m80: still 1.0
  assert.deepEqual([host.mem.getUint32(0x804, true), host.mem.getUint16(0x808, true)], [0x80000000, 0x3fff]);
});

test('C1 reports rounding up; constants follow the rounding control', () => {
  const { run, status, host } = setup();
  run(FLDPI);
  run([0xdb, 0x38]);
  assert.equal(host.mem.getUint32(0x500, true), 0x2168c235);
  host.mem.setUint16(0x600, 0x77f, true); // round down
  run([0xd9, 0x28], 0x600);
  run(FLDPI);
  run([0xdb, 0x38]);
  assert.equal(host.mem.getUint32(0x500, true), 0x2168c234);
  // At nearest, 1/3 (0xAAAA...AAAA, then 1010...) rounds up: C1 = 1; 1/7 (...9249, then 0010...) down: C1 = 0.
  host.mem.setUint16(0x600, 0x37f, true);
  run([0xd9, 0x28], 0x600);
  for (const [divisor, c1] of [[3, C1], [7, 0]] as const) {
    host.mem.setUint32(0x900, divisor, true);
    run(FLD1);
    run([0xda, 0x30], 0x900); // FIDIV m32int
    assert.equal(status() & (C1 | PE), c1 | PE, `1/${divisor}`);
  }
});

test('FSTENV/FLDENV and FSAVE/FRSTOR in the 32-bit protected and 16-bit real-mode layouts', () => {
  const { fpu, run, host } = setup();
  run(FLD1);
  run(FLDPI);
  run([0xd9, 0x30], 0x100, true); // FNSTENV 28 bytes
  const env32 = [0, 4, 8, 12, 16, 20, 24].map((o) => host.mem.getUint32(0x100 + o, true));
  assert.equal(env32[0]! & 0xffff, 0x37f);
  assert.equal((env32[1]! >> 11) & 7, 6, 'TOP');
  assert.equal(env32[2]! & 0xffff, 0x0fff, 'tags: ST(0), ST(1) valid, the rest empty');
  // FIP, FCS and the opcode of FLDPI; no memory operand since FNINIT: FDP and FDS 0.
  assert.deepEqual(env32.slice(3), [0x1234, (0x1eb << 16) | 0x23, 0, 0]);
  host.fpuRealMode = true;
  host.fpuCs = 0x1000;
  host.fpuIp = 0x0010;
  run(FLDZ); // a non-control instruction records FIP = 0x1000:0x0010 (linear 0x10010)
  run([0xd9, 0x30], 0x200, false); // FNSTENV 14 bytes, real mode
  const env16 = [0, 2, 4, 6, 8, 10, 12].map((o) => host.mem.getUint16(0x200 + o, true));
  assert.equal(env16[3], 0x0010);
  assert.equal(env16[4], (0x1 << 12) | 0x1ee, 'FIP bits 19:16 and the opcode');
  // FSAVE then FRSTOR brings everything back.
  const before = structuredClone(fpu.saveFields());
  run([0xdd, 0x30], 0x300, true);
  assert.equal(fpu.saveFields().empty.filter((e) => e === 1).length, 8, 'FSAVE reinitializes');
  run([0xdd, 0x20], 0x300, true);
  // The pointers come back as the real-mode layout holds them: FIP as a linear address, no selectors.
  const { fip, fcs, fop, fdp, fds, ...restored } = structuredClone(fpu.saveFields());
  const { fop: savedFop, fip: _fip, fcs: _fcs, fdp: _fdp, fds: _fds, ...saved } = before;
  assert.deepEqual(restored, saved, 'FRSTOR restores the registers, tags, TOP, control and status words');
  assert.deepEqual([fip, fcs, fop, fdp, fds], [0x10010, 0, savedFop, 0, 0]);
  run([0xdb, 0x38], 0x400);
  assert.deepEqual([host.mem.getUint32(0x400, true), host.mem.getUint16(0x408, true)], [0, 0], 'ST(0) = +0 again');
});

test('FXAM classes and sign; FCOMI sets ZF/PF/CF; FSIN out of range sets C2 and keeps the operand', () => {
  const { run, status, host } = setup();
  run(FLDZ);
  run([0xd9, 0xe0]); // FCHS: -0
  run([0xd9, 0xe5]); // FXAM
  assert.equal(status() & 0x4700, 0x4000 | C1);
  run(FLD1);
  host.eflags = 0x8d5; // every flag FCOMI writes set beforehand: ZF, PF, CF (and OF, SF, AF) must end clear
  run([0xdb, 0xf1]); // FCOMI ST, ST(1): 1 > -0
  assert.equal(host.eflags & 0x8d5, 0);
  run([0xd9, 0xc9]); // FXCH: -0 against 1
  run([0xdf, 0xe9]); // FUCOMIP ST, ST(1): -0 < 1 sets CF only, pops
  assert.equal(host.eflags & 0x8d5, 0x1);
  assert.equal((status() >> 11) & 7, 7, 'FUCOMIP popped one of the two');
  host.mem.setUint32(0x500, 0, true);
  host.mem.setUint32(0x504, 0x80000000, true);
  host.mem.setUint16(0x508, 0x403e + 8, true); // 2^71
  run([0xdb, 0x28]);
  run([0xd9, 0xfe]); // FSIN
  assert.equal(status() & C2, C2);
  run([0xdb, 0x38], 0x600);
  assert.equal(host.mem.getUint16(0x608, true), 0x403e + 8);
});

test('state: saved as plain data and restored bit for bit; a TOP inside the status word refused', () => {
  const { fpu, run } = setup();
  run(FLDPI);
  run([0xd9, 0xfa]); // FSQRT
  const schema = stateSchema(1, { fpu: X87_STATE });
  const saved = schema.save({ fpu: fpu.saveFields() });
  const other = setup();
  other.fpu.loadFields(schema.restore('cpu0', structuredClone(saved)).fpu);
  assert.deepEqual(schema.save({ fpu: other.fpu.saveFields() }), saved);
  const bad = schema.save({ fpu: { ...fpu.saveFields(), status: 0x3800 } });
  assert.throws(() => schema.restore('cpu0', bad), /^StateError: cpu0: state field fpu\.status: holds TOP/);
});

test('FLDENV reads back what FNSTENV wrote, in all four layouts (16/32-bit, protected/real mode)', () => {
  for (const realMode of [false, true]) for (const o32 of [false, true]) {
    const { run, host } = setup();
    host.fpuRealMode = realMode;
    host.fpuCs = realMode ? 0x1234 : 0x23;
    host.fpuIp = 0x5678;
    host.fpuDs = realMode ? 0x2000 : 0x2b;
    host.fpuDataOffset = 0x0abc;
    run(FLDPI);
    run([0xdd, 0x00], 0x900); // FLD m64 (a memory operand: FDP/FDS recorded)
    host.mem.setUint16(0x600, 0x0b7a, true);
    run([0xd9, 0x28], 0x600); // FLDCW: round up, some exceptions unmasked
    run([0xd9, 0x30], 0x100, o32); // FNSTENV
    const size = o32 ? 28 : 14;
    const first = new Uint8Array(host.mem.buffer.slice(0x100, 0x100 + size));
    run([0xdb, 0xe3]); // FNINIT
    run([0xd9, 0x20], 0x100, o32); // FLDENV
    run([0xd9, 0x30], 0x200, o32);
    assert.deepEqual(new Uint8Array(host.mem.buffer.slice(0x200, 0x200 + size)), first, `real ${realMode} o32 ${o32}`);
  }
});

test('unmasked underflow: the result keeps its significand with the exponent raised by 24576', () => {
  const { run, status, host } = setup();
  host.mem.setUint16(0x600, 0x036f, true); // UE unmasked
  run([0xd9, 0x28], 0x600);
  // 2^-16000 × 2^-1000, below the smallest normal 2^-16382
  for (const [at, se] of [[0x700, 0x3fff - 16000], [0x710, 0x3fff - 1000]] as const) {
    host.mem.setUint32(at, 0, true);
    host.mem.setUint32(at + 4, 0xc0000000, true);
    host.mem.setUint16(at + 8, se, true);
    run([0xdb, 0x28], at);
  }
  run([0xde, 0xc9]); // FMULP: 1.5 × 1.5 × 2^-17000
  assert.equal(status() & 0x10, 0x10);
  run([0xdb, 0x38], 0x800);
  assert.deepEqual([host.mem.getUint32(0x804, true), host.mem.getUint16(0x808, true)], [0x90000000, 0x3fff - 17000 + 1 + 24576]);
});
