import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VirtualClock } from '../../base/clock.js';
import { GuestRam } from '../../memory/guest-ram.js';
import { PhysicalMemory } from '../../memory/physical-memory.js';
import { PortIoBus } from '../../memory/port-io-bus.js';
import { TimerQueue } from '../timer-queue.js';
import { Piix4Pm } from '../acpi/piix4-pm.js';
import { PM1A_CNT_BLK, PM_TMR_BLK } from '../acpi/pm-constants.js';
import { DualPic8259 } from './pic8259.js';
import { Pit8254, PIT_HZ } from './pit8254.js';
import { Uart16550 } from './uart16550.js';
import { I8042 } from './i8042.js';
import { Mc146818Rtc } from './mc146818-rtc.js';

/** A guest clock the test moves by hand. */
function manualClock(): VirtualClock {
  const c = new VirtualClock();
  c.pause();
  c.setNowNs(0);
  return c;
}

function programPic(io: PortIoBus): void {
  // ICW1-4 for master (vectors 0x20) and slave (0x28), cascade on IRQ 2, 8086 mode; unmask all.
  for (const [base, vec, icw3] of [[0x20, 0x20, 4], [0xa0, 0x28, 2]]) {
    io.write(base, 1, 0x11);
    io.write(base + 1, 1, vec);
    io.write(base + 1, 1, icw3);
    io.write(base + 1, 1, 0x01);
    io.write(base + 1, 1, 0x00);
  }
}

test('8259 pair: priority, cascade through IRQ 2, EOI, masking and state round trip', () => {
  const io = new PortIoBus();
  let intr = false;
  const pic = new DualPic8259(io, { setIntr: (l) => (intr = l) });
  programPic(io);
  pic.setIrq(12, true);
  pic.setIrq(3, true);
  assert.equal(intr, true);
  assert.equal(pic.acknowledge(), 0x28 + 4, 'slave IRQ 12 wins through IRQ 2 (higher priority than 3)');
  assert.equal(intr, false, 'IRQ 3 waits while IRQ 2 is in service');
  io.write(0xa0, 1, 0x20);
  io.write(0x20, 1, 0x20);
  assert.equal(intr, true);
  assert.equal(pic.acknowledge(), 0x23);
  io.write(0x20, 1, 0x20);
  io.write(0x21, 1, 0x01); // mask IRQ 0
  pic.setIrq(0, true);
  assert.equal(intr, false);
  const saved = pic.saveState();
  const other = new DualPic8259(new PortIoBus(), { setIntr: () => {} });
  other.restoreState(saved);
  assert.deepEqual(other.saveState(), saved);
  assert.throws(() => other.restoreState({ version: 9, fields: {} }), /pic: state version 9 is not supported/);
});

test('8254: counter 0 interrupts at the programmed rate; counter 2 and port 0x61 follow guest time', () => {
  const clock = manualClock();
  const timers = new TimerQueue(clock);
  const io = new PortIoBus();
  let edges = 0;
  let level = false;
  new Pit8254(io, { set: (l) => { if (l && !level) edges++; level = l; } }, timers);
  io.write(0x43, 1, 0x34); // counter 0, lsb/msb, mode 2
  io.write(0x40, 1, 1193 & 0xff);
  io.write(0x40, 1, 1193 >> 8); // ~1 kHz
  for (let t = 0; t <= 100e6; t += 0.25e6) {
    clock.setNowNs(t);
    timers.runExpired();
  }
  assert.ok(edges >= 99 && edges <= 101, `about 100 interrupts in 100 ms, got ${edges}`);
  // One-shot as Linux's clockevent programs it: mode 4, one interrupt when the count expires.
  io.write(0x43, 1, 0x38);
  const oneShotAt = clock.nowNs();
  io.write(0x40, 1, 100);
  io.write(0x40, 1, 0);
  const before = edges;
  for (let t = oneShotAt; t <= oneShotAt + 1e6; t += 1e4) {
    clock.setNowNs(t);
    timers.runExpired();
  }
  assert.equal(edges - before, 1, 'mode 4 fires once');
  // Counter 2, mode 0, gate via port 0x61: OUT2 rises after the count elapses.
  io.write(0x61, 1, 0x00);
  io.write(0x43, 1, 0xb0);
  io.write(0x42, 1, 0xff);
  io.write(0x42, 1, 0xff);
  io.write(0x61, 1, 0x01);
  const start = clock.nowNs();
  assert.equal(io.read(0x61, 1) & 0x20, 0);
  clock.setNowNs(start + (0x10000 / PIT_HZ) * 1e9 * 0.5);
  io.write(0x43, 1, 0x80); // latch counter 2
  const count = io.read(0x42, 1) | (io.read(0x42, 1) << 8);
  assert.ok(Math.abs(count - 0x8000) < 4, `half-way count ${count.toString(16)}`);
  clock.setNowNs(start + (0x10001 / PIT_HZ) * 1e9 + 1000);
  assert.equal(io.read(0x61, 1) & 0x20, 0x20);
});

test('8254: a one-shot interrupt whose time passed before the run loop saw it still arrives', () => {
  // The host can stall for longer than a short count (garbage collection between the guest's count write and
  // the timer being armed): guest time then jumps past the edge. Linux's one-shot clockevent waits for that
  // edge forever, so it must come late rather than never.
  let host = 1e9;
  const clock = { nowNs: () => (host += 60e3) } as unknown as VirtualClock; // every read: 60 us later
  const timers = new TimerQueue(clock);
  const io = new PortIoBus();
  let edges = 0;
  let level = false;
  new Pit8254(io, { set: (l) => { if (l && !level) edges++; level = l; } }, timers);
  io.write(0x43, 1, 0x38);
  io.write(0x40, 1, 59); // 49 us: less than one clock read
  io.write(0x40, 1, 0);
  timers.runExpired();
  assert.equal(edges, 1);
  timers.runExpired();
  assert.equal(edges, 1, 'and only once');
});

test('16550: transmits, raises THRE and RX interrupts, and never loses input while the guest is slow', () => {
  const io = new PortIoBus();
  const sent: number[] = [];
  let listener: (b: Uint8Array) => void = () => {};
  let irq = false;
  const clock = manualClock();
  const timers = new TimerQueue(clock);
  const uart = new Uart16550('serial0', io, 0x3f8, { set: (l) => (irq = l) }, {
    write: (b) => sent.push(...b),
    onInput: (l) => (listener = l),
  }, timers);
  io.write(0x3f8 + 4, 1, 0x08); // OUT2: IRQ enabled at the PIC side
  io.write(0x3f8, 1, 0x41);
  assert.deepEqual(sent, [0x41]);
  io.write(0x3f8 + 1, 1, 0x02); // THRE interrupt
  assert.equal(irq, true);
  assert.equal(io.read(0x3f8 + 2, 1) & 0x0f, 0x02);
  assert.equal(irq, false, 'reading IIR acknowledges THRE');
  const input = new Uint8Array(1000).map((_, i) => i & 0xff);
  listener(input); // typed ahead, before the driver is ready
  // A driver initializing the port drains the receiver; typed-ahead input must survive that.
  io.write(0x3f8 + 1, 1, 0x0f); // a probe enables every interrupt for an instant...
  io.write(0x3f8 + 1, 1, 0x00);
  clock.setNowNs(1e9);
  timers.runExpired();
  io.write(0x3f8 + 2, 1, 0x07); // FIFO on, cleared
  for (let i = 0; i < 1000; i++) {
    // A console driver printing: it polls LSR between the characters it sends.
    io.read(0x3f8 + 5, 1);
    io.write(0x3f8, 1, 0x2e);
  }
  io.read(0x3f8 + 5, 1);
  io.read(0x3f8, 1);
  io.read(0x3f8 + 2, 1);
  assert.equal(irq, false);
  io.write(0x3f8 + 1, 1, 0x01); // RX interrupt: now the guest reads
  clock.setNowNs(2e9);
  timers.runExpired();
  assert.equal(irq, true);
  const got: number[] = [];
  while (io.read(0x3f8 + 5, 1) & 1) got.push(io.read(0x3f8, 1));
  assert.deepEqual(got, Array.from(input));
  assert.equal(irq, false);
  // A break (Ctrl-A b): a NUL with LSR.BI and a line-status interrupt, which Linux takes as SysRq.
  io.write(0x3f8 + 1, 1, 0x05);
  uart.sendBreak();
  assert.equal(irq, true);
  assert.equal(io.read(0x3f8 + 2, 1) & 0x0f, 0x06);
  assert.equal(io.read(0x3f8 + 5, 1) & 0x11, 0x11, 'BI and DR');
  assert.equal(io.read(0x3f8, 1), 0);
  assert.equal(io.read(0x3f8 + 5, 1) & 0x11, 0, 'reading LSR clears BI');
  const state = uart.saveState();
  assert.equal(state.version, 2);
});

test('i8042: self-test, A20 through the output port, reset request', () => {
  const io = new PortIoBus();
  const memory = new PhysicalMemory(new GuestRam(2 ** 20));
  let resets = 0;
  const nop = { set: () => {} };
  new I8042(io, memory, nop, nop, { requestReset: () => resets++, requestPowerOff: () => {} });
  io.write(0x64, 1, 0xaa);
  assert.equal(io.read(0x64, 1) & 1, 1);
  assert.equal(io.read(0x60, 1), 0x55);
  io.write(0x64, 1, 0xd1);
  io.write(0x60, 1, 0x01); // A20 off, no reset
  assert.equal(memory.a20Enabled, false);
  io.write(0x64, 1, 0xd1);
  io.write(0x60, 1, 0x03);
  assert.equal(memory.a20Enabled, true);
  io.write(0x60, 1, 0xff); // keyboard reset
  assert.equal(io.read(0x60, 1), 0xfa);
  assert.equal(io.read(0x60, 1), 0xaa);
  io.write(0x64, 1, 0xfe);
  assert.equal(resets, 1);
});

test('RTC: BCD time from the host clock, binary mode, NVRAM', () => {
  const io = new PortIoBus();
  const rtc = new Mc146818Rtc(io, { set: () => {} }, new TimerQueue(new VirtualClock()));
  const read = (r: number) => {
    io.write(0x70, 1, r);
    return io.read(0x71, 1);
  };
  const now = new Date();
  const bcd = (v: number) => (v >> 4) * 10 + (v & 0xf);
  assert.equal(bcd(read(0x09)), now.getUTCFullYear() % 100);
  assert.equal(bcd(read(0x32)), Math.floor(now.getUTCFullYear() / 100));
  io.write(0x70, 1, 0x0b);
  io.write(0x71, 1, 0x06); // binary, 24 h
  assert.equal(read(0x08), now.getUTCMonth() + 1);
  rtc.setNvram(0x34, 0x12);
  assert.equal(read(0x34), 0x12);
});

test('PIIX4 PM: decodes where PMBA puts it; S5 through PM1a_CNT powers off; the PM timer runs at 3.58 MHz', () => {
  const io = new PortIoBus();
  const clock = manualClock();
  let off = 0;
  const pm = new Piix4Pm(io, { set: () => {} }, new TimerQueue(clock), { requestReset: () => {}, requestPowerOff: () => off++ });
  assert.equal(io.read(PM_TMR_BLK, 4), 0xffffffff, 'off the bus until the PCI function enables it');
  pm.mapAt(0xb000);
  assert.notEqual(io.read(0xb008, 4), 0xffffffff);
  pm.mapAt(PM_TMR_BLK - 8);
  assert.equal(io.read(0xb008, 4), 0xffffffff);
  const t0 = io.read(PM_TMR_BLK, 4);
  clock.setNowNs(1e6);
  assert.equal((io.read(PM_TMR_BLK, 4) - t0) & 0xffffff, 3579);
  io.write(PM1A_CNT_BLK, 2, (0 << 10) | 0x2000 | 1);
  assert.equal(off, 1);
});
