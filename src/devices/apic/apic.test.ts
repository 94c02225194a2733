import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VirtualClock } from '../../base/clock.js';
import { GuestRam } from '../../memory/guest-ram.js';
import { PhysicalMemory } from '../../memory/physical-memory.js';
import { TimerQueue } from '../timer-queue.js';
import { ApicBus } from './apic-bus.js';
import { IO_APIC_DEFAULT_BASE, IoApic } from './io-apic.js';
import { LOCAL_APIC_DEFAULT_BASE, LocalApic } from './local-apic.js';

/** A local APIC and an I/O APIC on one bus, a stand-in PIC and CPU pins, and a guest clock the test moves. */
function rig() {
  const clock = new VirtualClock();
  clock.pause();
  clock.setNowNs(0);
  const timers = new TimerQueue(clock);
  const memory = new PhysicalMemory(new GuestRam(2 ** 20));
  const bus = new ApicBus();
  const cpu = { intr: false, nmis: 0, setIntr(level: boolean) { this.intr = level; }, raiseNmi() { this.nmis++; } };
  const pic = { acks: 0, acknowledge() { this.acks++; return 0x08; } };
  const lapic = new LocalApic({ id: 0, bsp: true, memory, bus, timers, cpu, pic });
  const ioApic = new IoApic(memory.mmio, IO_APIC_DEFAULT_BASE, bus);
  const reg = (offset: number, value?: number): number => {
    if (value !== undefined) memory.write(LOCAL_APIC_DEFAULT_BASE + offset, 4, value);
    return memory.read(LOCAL_APIC_DEFAULT_BASE + offset, 4);
  };
  const ioWrite = (index: number, value: number) => {
    memory.write(IO_APIC_DEFAULT_BASE, 4, index);
    memory.write(IO_APIC_DEFAULT_BASE + 0x10, 4, value);
  };
  const ioRead = (index: number) => {
    memory.write(IO_APIC_DEFAULT_BASE, 4, index);
    return memory.read(IO_APIC_DEFAULT_BASE + 0x10, 4);
  };
  /** Moves guest time to `ns` and fires what expired, as the run loop does between slices. */
  const advanceTo = (ns: number) => {
    clock.setNowNs(ns);
    timers.runExpired(ns);
  };
  /** The CPU takes an interrupt if INTR is up (IF set), returning the vector or -1. */
  const take = () => (cpu.intr ? lapic.acknowledge() : -1);
  return { clock, timers, memory, bus, cpu, pic, lapic, ioApic, reg, ioWrite, ioRead, advanceTo, take };
}

const SVR_ON = 0x1ff;

test('local APIC: reset values, version, ID, relocation and global disable', () => {
  const r = rig();
  assert.equal(r.reg(0x30), 0x00050014); // version 0x14, max LVT 5
  assert.equal(r.reg(0x20), 0);
  assert.equal(r.reg(0xf0), 0xff);
  assert.equal(r.reg(0xe0), 0xffffffff);
  assert.equal(r.reg(0x320), 0x10000);
  assert.equal(r.reg(0x350), 0x700); // LINT0: ExtINT, unmasked on the BSP (virtual wire from reset)
  assert.equal(r.lapic.baseMsr, 0xfee00900);
  r.reg(0x20, 0x05000000);
  assert.equal(r.reg(0x20), 0x05000000);
  // Relocate: the old page no longer answers, the new one does.
  assert.ok(r.lapic.writeBaseMsr(0xfed00800, 0));
  assert.equal(r.memory.read(0xfed00030, 4), 0x00050014);
  assert.equal(r.memory.read(0xfee00030, 4), 0xffffffff);
  assert.equal(r.lapic.writeBaseMsr(0xfee00801, 0), false); // reserved bit
  assert.equal(r.lapic.writeBaseMsr(0xfee00800, 1), false); // above 4 GiB
  assert.equal(r.lapic.baseMsr, 0xfed00900, 'BSP flag kept');
  // Globally disabled: nothing mapped, and the PIC's INTR goes straight to the CPU.
  assert.ok(r.lapic.writeBaseMsr(0xfee00000, 0));
  assert.equal(r.lapic.globallyEnabled, false);
  assert.equal(r.memory.read(0xfee00030, 4), 0xffffffff);
  r.lapic.setIntr(true);
  assert.equal(r.cpu.intr, true);
  assert.equal(r.lapic.acknowledge(), 0x08);
  r.lapic.setIntr(false);
  assert.equal(r.cpu.intr, false);
});

test('local APIC: virtual wire mode passes the PIC through LINT0; a masked LINT0 blocks it', () => {
  const r = rig();
  r.lapic.setIntr(true);
  assert.equal(r.cpu.intr, true);
  assert.equal(r.take(), 0x08);
  assert.equal(r.pic.acks, 1);
  r.lapic.setIntr(false);
  assert.equal(r.cpu.intr, false);
  r.reg(0xf0, SVR_ON);
  r.reg(0x350, 0x10700); // masked, as Linux leaves it when the I/O APIC takes over
  r.lapic.setIntr(true);
  assert.equal(r.cpu.intr, false);
  r.reg(0x350, 0x8700); // level-triggered ExtINT, as SeaBIOS programs it
  assert.equal(r.cpu.intr, true);
  // The PIC's interrupt comes before a fixed one in the IRR (ExtINT ignores priorities).
  r.lapic.accept(0, 0x80, false);
  assert.equal(r.take(), 0x08);
  r.lapic.setIntr(false);
  assert.equal(r.take(), 0x80);
});

test('local APIC: IRR/ISR priority classes, TPR, PPR and nested EOIs', () => {
  const r = rig();
  r.lapic.accept(0, 0x45, false);
  assert.equal(r.cpu.intr, false, 'software-disabled: IRR is held');
  r.reg(0xf0, SVR_ON);
  assert.equal(r.cpu.intr, true);
  r.reg(0x80, 0x45); // TPR class 4 masks class 4
  assert.equal(r.cpu.intr, false);
  assert.equal(r.reg(0xa0), 0x45);
  r.reg(0x80, 0x3f);
  assert.equal(r.take(), 0x45);
  assert.equal(r.reg(0x100 + 0x10 * (0x45 >> 5)), 1 << (0x45 & 31), 'ISR bit');
  assert.equal(r.reg(0xa0), 0x40, 'PPR is the in-service class');
  r.lapic.accept(0, 0x41, false); // same class as the one in service: waits
  assert.equal(r.cpu.intr, false);
  r.lapic.accept(0, 0x61, false); // higher class: nests
  assert.equal(r.take(), 0x61);
  r.reg(0xb0, 0); // EOI of 0x61
  assert.equal(r.cpu.intr, false);
  r.reg(0xb0, 0); // EOI of 0x45
  assert.equal(r.take(), 0x41);
  r.reg(0xb0, 0);
  assert.equal(r.reg(0xa0), 0x3f);
  // Raised, then masked by TPR before the INTA cycle: the spurious vector.
  r.reg(0xf0, 0x1ef);
  r.lapic.accept(0, 0x55, false);
  r.reg(0x80, 0x60);
  assert.equal(r.lapic.acknowledge(), 0xef);
});

test('local APIC: ICR self IPIs (fixed, NMI to its own ID), illegal vector in ESR and the error LVT', () => {
  const r = rig();
  r.reg(0xf0, SVR_ON);
  r.reg(0x300, 0x40031); // shorthand self, fixed 0x31
  assert.equal(r.take(), 0x31);
  r.reg(0xb0, 0);
  r.reg(0x310, 0);
  r.reg(0x300, 0x400); // NMI, physical destination 0 (this APIC)
  assert.equal(r.cpu.nmis, 1);
  r.reg(0x300, 0x80051); // all including self, fixed 0x51
  assert.equal(r.take(), 0x51);
  r.reg(0xb0, 0);
  r.reg(0x300, 0xc0052); // all excluding self: nobody
  assert.equal(r.cpu.intr, false);
  r.reg(0xd0, 0x01000000); // logical flat: LDR bit 0
  r.reg(0x310, 0x01000000);
  r.reg(0x300, 0x853);
  assert.equal(r.take(), 0x53);
  r.reg(0xb0, 0);
  assert.equal(r.reg(0x300) & 0x1000, 0, 'delivery status idle');
  r.reg(0x370, 0xfe); // error LVT
  r.reg(0x300, 0x40005); // fixed vector 5: illegal
  assert.equal(r.reg(0x280), 0, 'ESR shows errors only after a write');
  r.reg(0x280, 0);
  assert.equal(r.reg(0x280), 0x20);
  assert.equal(r.take(), 0xfe);
});

test('local APIC timer: one-shot, periodic, divide configuration and TSC deadline', () => {
  const r = rig();
  r.reg(0xf0, SVR_ON);
  r.reg(0x3e0, 0x3); // divide by 16
  r.reg(0x320, 0x40); // one-shot, vector 0x40
  r.reg(0x380, 1000); // 16 µs
  r.advanceTo(8000);
  assert.equal(r.reg(0x390), 500);
  assert.equal(r.cpu.intr, false);
  r.advanceTo(16000);
  assert.equal(r.take(), 0x40);
  r.reg(0xb0, 0);
  assert.equal(r.reg(0x390), 0);
  r.advanceTo(100000);
  assert.equal(r.cpu.intr, false, 'one-shot fires once');
  // Periodic, divide by 1: every 1000 ns.
  r.reg(0x3e0, 0xb);
  r.reg(0x320, 0x20041);
  r.reg(0x380, 1000);
  let ticks = 0;
  for (let t = 100000 + 500; t <= 105000; t += 500) {
    r.advanceTo(t);
    if (r.take() === 0x41) {
      ticks++;
      r.reg(0xb0, 0);
    }
  }
  assert.equal(ticks, 5);
  assert.equal(r.reg(0x390), 1000);
  r.advanceTo(105250);
  assert.equal(r.reg(0x390), 750);
  // A masked timer counts but interrupts nobody.
  r.reg(0x320, 0x30041);
  r.advanceTo(110000);
  assert.equal(r.cpu.intr, false);
  // TSC-deadline mode: the mode change stops the count; the MSR arms the timer.
  r.reg(0x320, 0x40042);
  assert.equal(r.reg(0x390), 0);
  r.lapic.writeTscDeadline(5000, 120000);
  assert.equal(r.lapic.tscDeadline, 5000);
  r.advanceTo(119999);
  assert.equal(r.cpu.intr, false);
  r.advanceTo(120000);
  assert.equal(r.take(), 0x42);
  assert.equal(r.lapic.tscDeadline, 0, 'the deadline clears when it fires');
  r.reg(0x320, 0x42); // back to one-shot: deadline writes are ignored
  r.lapic.writeTscDeadline(1, 130000);
  assert.equal(r.lapic.tscDeadline, 0);
});

test('I/O APIC: version, edge entries, level entries with remote IRR and EOI broadcast, masking', () => {
  const r = rig();
  r.reg(0xf0, SVR_ON);
  assert.equal(r.ioRead(1), 0x170011);
  assert.equal(r.ioRead(0x10), 0x10000, 'entries masked from reset');
  // Pin 2 edge, vector 0x30, physical destination 0.
  r.ioWrite(0x14, 0x30);
  r.ioWrite(0x15, 0);
  r.ioApic.setPin(2, true);
  assert.equal(r.take(), 0x30);
  r.reg(0xb0, 0);
  r.ioApic.setPin(2, true); // no new edge
  assert.equal(r.cpu.intr, false);
  r.ioApic.setPin(2, false);
  r.ioApic.setPin(2, true);
  assert.equal(r.take(), 0x30);
  r.reg(0xb0, 0);
  // Pin 9 level, vector 0x39.
  r.ioWrite(0x22, 0x8039);
  r.ioApic.setPin(9, true);
  assert.equal(r.ioRead(0x22) & 0x4000, 0x4000, 'remote IRR set on delivery');
  assert.equal(r.take(), 0x39);
  assert.equal(r.reg(0x180 + 0x10 * (0x39 >> 5)) & (1 << (0x39 & 31)), 1 << (0x39 & 31), 'TMR marks it level');
  r.reg(0xb0, 0); // EOI while still asserted: remote IRR clears and the message comes again
  assert.equal(r.ioRead(0x22) & 0x4000, 0x4000);
  assert.equal(r.take(), 0x39);
  r.ioApic.setPin(9, false);
  r.reg(0xb0, 0);
  assert.equal(r.ioRead(0x22) & 0x4000, 0);
  assert.equal(r.cpu.intr, false);
  // Masked while asserted: nothing; unmasking sends it.
  r.ioWrite(0x22, 0x18039);
  r.ioApic.setPin(9, true);
  assert.equal(r.cpu.intr, false);
  r.ioWrite(0x22, 0x8039);
  assert.equal(r.take(), 0x39);
  // Logical destination and lowest priority reach this APIC through its LDR.
  r.reg(0xd0, 0x02000000);
  r.ioWrite(0x18, 0x934);
  r.ioWrite(0x19, 0x02000000);
  r.ioApic.setPin(4, true);
  assert.equal(r.reg(0x200 + 0x10 * (0x34 >> 5)) & (1 << (0x34 & 31)), 1 << (0x34 & 31), 'in IRR');
});

test('MSI: a write to 0xFEExxxxx is an interrupt message', () => {
  const r = rig();
  r.reg(0xf0, SVR_ON);
  assert.equal(r.bus.deliverMsi(0xfee00000, 0x4065), true);
  assert.equal(r.take(), 0x65);
  assert.equal(r.bus.deliverMsi(0xfee01000, 0x66), true); // destination 1: not this APIC
  r.reg(0xb0, 0);
  assert.equal(r.cpu.intr, false);
  assert.equal(r.bus.deliverMsi(0xfed00000, 0x66), false);
  r.bus.deliverMsi(0xfee00000, 0x400);
  assert.equal(r.cpu.nmis, 1);
});

test('APIC state survives save and restore; bad state is refused', () => {
  const a = rig();
  a.reg(0xf0, SVR_ON);
  a.reg(0x80, 0x20);
  a.reg(0x320, 0x20044);
  a.reg(0x380, 5000);
  a.lapic.accept(0, 0x90, true);
  a.ioWrite(0x12, 0x8035);
  a.ioApic.setPin(1, true);
  const lapicState = structuredClone(a.lapic.saveState());
  const ioState = structuredClone(a.ioApic.saveState());
  const b = rig();
  b.lapic.restoreState(lapicState);
  b.ioApic.restoreState(ioState);
  assert.deepEqual(b.lapic.saveState(), a.lapic.saveState());
  assert.deepEqual(b.ioApic.saveState(), a.ioApic.saveState());
  assert.equal(b.take(), 0x90);
  assert.equal(b.ioRead(0x12) & 0x4000, 0x4000);
  b.advanceTo(10000); // 5000 counts at the reset divider, 2
  assert.equal(b.reg(0x200 + 0x10 * (0x44 >> 5)) & (1 << 4), 1 << 4, 'restored timer fires');
  assert.throws(() => b.lapic.restoreState({ version: 2, fields: { ...lapicState.fields, irr: [1] } }), /^StateError: lapic0: state field irr: expected u32\[8\], got an array of 1$/);
  assert.throws(() => b.lapic.restoreState({ version: 2, fields: { ...lapicState.fields, base: 0xfee00001 } }), /lapic0: state field base: sets reserved bits/);
  assert.throws(() => b.ioApic.restoreState({ version: 2, fields: ioState.fields }), /^StateError: ioapic: state version 2 is not supported \(this build reads 1\)$/);
});
