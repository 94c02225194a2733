import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TcgRunner } from '../src/accel/tcg/tcg-runner.js';
import type { VersionedState } from '../src/base/state.js';
import { alterState } from '../src/base/state-testing.js';
import { fakeBzImage } from '../src/boot/testing/fake-bzimage.js';
import { DEFAULT_BIOS } from '../src/boot/firmware.js';
import { HAVE_BINUTILS, assembleFlat } from '../src/cpu/x86/testing/assemble.js';
import type { CharBackend } from '../src/devices/char-backend.js';
import { defaultMachineConfig, type MachineConfig } from '../src/machine/config.js';
import { PcMachine } from '../src/machine/pc-machine.js';
import type { NetBackend } from '../src/net/net-backend.js';
import { defaultGuestOrNull } from './guest-helpers.js';

/**
 * Whole-machine device state: every device and the CPU saved from a running machine, restored into a fresh
 * machine of the same configuration (RAM copied directly), saved again: the two must be equal, device by
 * device. Hostile states are refused with one line naming the device and the field, and leave the machine as
 * it was. A restored machine continues where the saved one was.
 */

/** A PcMachine with its run loop and its first serial port captured. */
class Rig {
  readonly pc: PcMachine;
  readonly runner: TcgRunner;
  output = '';

  constructor(config: MachineConfig) {
    const serial: CharBackend = { write: (b) => (this.output += Buffer.from(b).toString('latin1')), onInput: () => {} };
    // Back ends that go nowhere, for the network cards and virtio-serial ports the configuration names.
    const nowhere: NetBackend = { attach: () => {}, send: () => {}, receiveReady: () => {}, close: async () => {} };
    const nics = (config.nics ?? []).map((nic, i) => ({ config: nic, mac: Uint8Array.of(0x52, 0x54, 0, 0x12, 0x34, 0x56 + i), backend: nowhere }));
    const chardevs = new Map<string, CharBackend>([['c0', { write: () => {}, onInput: () => {} }]]);
    this.pc = new PcMachine(config, {
      serials: [serial], drives: [], nics, chardevs,
      requestReset: () => {}, requestPowerOff: () => {}, wake: () => this.runner.wake(), debugExit: () => {},
    });
    this.runner = new TcgRunner(this.pc.cpu, this.pc.timers, () => true, () => this.pc.ioPending(), config.icount ?? null);
  }

  async runUntil(done: () => boolean, timeoutMs: number): Promise<void> {
    this.pc.clock.resume();
    this.runner.start();
    const deadline = Date.now() + timeoutMs;
    while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    this.pause();
  }

  pause(): void {
    this.runner.pause();
    this.pc.clock.pause();
  }

  /** A fresh machine of the same configuration, paused, holding `from`'s RAM and device states. */
  static restoredFrom(config: MachineConfig, from: PcMachine, states: Record<string, VersionedState>): Rig {
    const rig = new Rig(config);
    rig.pause();
    rig.pc.ram.bytes.set(from.ram.bytes);
    rig.pc.restoreDeviceStates(states);
    return rig;
  }
}

/** Save, restore into a fresh machine, save again: one subtest per device, named by its id. */
async function roundTrip(t: { test: (name: string, fn: () => void) => Promise<void> }, config: MachineConfig, rig: Rig): Promise<void> {
  const first = rig.pc.saveDeviceStates();
  const copy = Rig.restoredFrom(config, rig.pc, structuredClone(first));
  const second = copy.pc.saveDeviceStates();
  assert.deepEqual(Object.keys(second).sort(), Object.keys(first).sort());
  for (const id of Object.keys(first)) await t.test(id, () => assert.deepEqual(second[id], first[id]));
}

test('every device of a booted Linux guest survives save, restore into a fresh machine, save', async (t) => {
  const { guest, reason } = await defaultGuestOrNull();
  if (!guest) return t.skip(reason);
  const config: MachineConfig = {
    ...defaultMachineConfig(), kernel: guest.kernel, initrd: guest.initrd, append: `${guest.cmdline} tsvm.bench=1`, serials: [{ kind: 'api' }],
    // One of each device that needs no disk image: an e1000, virtio-rng, -balloon and -serial.
    nics: [{ model: 'e1000', netdev: 'n0' }],
    virtioDevices: [{ kind: 'virtio-rng' }, { kind: 'virtio-balloon' }, { kind: 'virtio-serial', ports: [{ console: false, name: 'p0', chardev: 'c0' }] }],
  };
  const rig = new Rig(config);
  // Booted: the APIC timer, the I/O APIC, the serial port, the PIT have state, and the guest drives virtio-rng
  // and virtio-serial (its balloon driver is not loaded).
  await rig.runUntil(() => /tsvm-guest: ready/.test(rig.output), 180_000);
  assert.match(rig.output, /tsvm-guest: ready/);
  const virtio = rig.pc.saveDeviceStates();
  assert.equal(virtio['virtio-rng0'].fields.status, 15, 'virtio-rng is live (DRIVER_OK)');
  assert.equal(virtio['virtio-serial2'].fields.status, 15, 'virtio-serial is live (DRIVER_OK)');
  await roundTrip(t, config, rig);
});

test('every device after a few seconds of firmware boot survives save, restore into a fresh machine, save', { skip: existsSync(DEFAULT_BIOS) ? false : `no ${DEFAULT_BIOS}` }, async (t) => {
  const config: MachineConfig = { ...defaultMachineConfig(), serials: [{ kind: 'api' }] };
  const rig = new Rig(config);
  // SeaBIOS and the VGA BIOS run, probe the disks, find none and say so on the screen.
  const screen = () => rig.pc.vga.textScreen().join('\n');
  await rig.runUntil(() => /No bootable device/.test(screen()), 60_000);
  assert.match(screen(), /SeaBIOS/);
  await roundTrip(t, config, rig);
});

/**
 * A "kernel" that counts timer interrupts: the 8259s remapped to 0x20, the 8254 at about 1 kHz, and every
 * 20th tick prints the count of lines so far in hex on COM1 from the interrupt handler; the rest of the time
 * it halts.
 */
function countingKernel(): string {
  const code = assembleFlat(`
  .code32
  .globl _start
_start:
  cli
  movl $stack_top, %esp
  movl $irq0, %eax
  movw %ax, idt + 0x20 * 8
  movw %cs, idt + 0x20 * 8 + 2
  movw $0x8e00, idt + 0x20 * 8 + 4
  shrl $16, %eax
  movw %ax, idt + 0x20 * 8 + 6
  lidt idt_desc
  movb $0x11, %al; outb %al, $0x20; outb %al, $0xa0
  movb $0x20, %al; outb %al, $0x21
  movb $0x28, %al; outb %al, $0xa1
  movb $0x04, %al; outb %al, $0x21
  movb $0x02, %al; outb %al, $0xa1
  movb $0x01, %al; outb %al, $0x21; outb %al, $0xa1
  movb $0xfe, %al; outb %al, $0x21
  movb $0xff, %al; outb %al, $0xa1
  movb $0x34, %al; outb %al, $0x43
  movb $0xa9, %al; outb %al, $0x40
  movb $0x04, %al; outb %al, $0x40
  sti
1: hlt
  jmp 1b

irq0:
  pusha
  incl ticks
  movl ticks, %eax
  xorl %edx, %edx
  movl $20, %ecx
  divl %ecx
  testl %edx, %edx
  jnz 3f
  incl lines
  movl lines, %ebx
  movl $8, %ecx
  movw $0x3f8, %dx
2: roll $4, %ebx
  movl %ebx, %eax
  andl $15, %eax
  movb digits(%eax), %al
  outb %al, %dx
  loop 2b
  movb $10, %al
  outb %al, %dx
3: movb $0x20, %al
  outb %al, $0x20
  popa
  iret

digits: .ascii "0123456789abcdef"
  .align 8
idt_desc: .word 0x21 * 8 - 1
  .long idt
ticks: .long 0
lines: .long 0
  .align 8
idt: .fill 0x21 * 8, 1, 0
  .fill 1024, 4, 0
stack_top:
`, 0x100000);
  const path = join(mkdtempSync(join(tmpdir(), 'tsvm-state-')), 'bzImage');
  writeFileSync(path, fakeBzImage(code));
  return path;
}

const needBinutils = HAVE_BINUTILS ? false : 'GNU binutils (as, ld, objcopy) are not installed';

/** The counts the guest printed, checked to be whole lines counting up from 1. */
function counts(output: string): number[] {
  const lines = output.split('\n').slice(0, -1);
  const values = lines.map((l) => {
    assert.match(l, /^[0-9a-f]{8}$/, `a whole count line, got ${JSON.stringify(l)}`);
    return parseInt(l, 16);
  });
  values.forEach((v, i) => assert.equal(v, i + 1, `line ${i + 1}`));
  return values;
}

for (const jit of [false, true]) {
  test(`a restored machine continues: the counting guest goes on from where it was saved (${jit ? 'compiled blocks' : 'interpreted'})`, { skip: needBinutils }, async (t) => {
    const previous = process.env.TSVM_JIT_THRESHOLD;
    const previousJit = process.env.TSVM_JIT;
    process.env.TSVM_JIT = jit ? '1' : '0';
    process.env.TSVM_JIT_THRESHOLD = '1';
    t.after(() => {
      process.env.TSVM_JIT_THRESHOLD = previous;
      process.env.TSVM_JIT = previousJit;
      if (previous === undefined) delete process.env.TSVM_JIT_THRESHOLD;
      if (previousJit === undefined) delete process.env.TSVM_JIT;
    });
    const config: MachineConfig = { ...defaultMachineConfig(), memoryBytes: 16 * 2 ** 20, kernel: countingKernel(), serials: [{ kind: 'api' }] };
    const saved = new Rig(config);
    await saved.runUntil(() => saved.output.split('\n').length > 4, 20_000);
    const states = saved.pc.saveDeviceStates();
    const restored = Rig.restoredFrom(config, saved.pc, states);
    await restored.runUntil(() => restored.output.split('\n').length > 4, 20_000);
    // The two outputs together are one count: nothing repeated, nothing skipped, the partial line finished.
    const all = counts(saved.output + restored.output);
    assert.ok(all.length >= 8, `${all.length} lines`);
    await roundTrip(t, config, restored);
  });
}

test('hostile machine states are refused with one line naming the device and the field, and change nothing', { skip: needBinutils }, async () => {
  const config: MachineConfig = { ...defaultMachineConfig(), memoryBytes: 16 * 2 ** 20, kernel: countingKernel(), serials: [{ kind: 'api' }] };
  const rig = new Rig(config);
  await rig.runUntil(() => rig.output.includes('\n'), 20_000);
  const good = rig.pc.saveDeviceStates();
  const target = new Rig(config);
  target.pause();
  const before = target.pc.saveDeviceStates();
  const refuse = (states: Record<string, VersionedState>, message: RegExp) => {
    assert.throws(() => target.pc.restoreDeviceStates(states), (e: unknown) => {
      assert.ok(e instanceof Error && e.name === 'StateError', String(e));
      assert.doesNotMatch(e.message, /\n/, 'one line');
      assert.match(e.message, message);
      return true;
    });
    assert.deepEqual(target.pc.saveDeviceStates(), before, 'the machine is unchanged');
  };
  const alter = (id: string, path: (string | number)[], value: VersionedState['fields'][string] | undefined) =>
    ({ ...good, [id]: alterState(good[id], path, value) });
  // The CPU and the PIT come after other devices in the restore order: checking happens before any restore.
  refuse(alter('cpu0', ['registers', 'eip'], 'start'), /^cpu0: state field registers\.eip: expected an integer 0\.\.4294967295, got "start"$/);
  refuse(alter('pit', ['counters', 1, 'mode'], 9), /^pit: state field counters\[1\]\.mode: expected an integer 0\.\.5, got 9$/);
  refuse(alter('cpu0', ['fpu', 'top'], undefined), /^cpu0: state field fpu\.top: missing$/);
  refuse(alter('serial0', ['startReadingNs'], Infinity), /^serial0: state field startReadingNs: expected a finite number or null, got Infinity$/);
  refuse(alter('rtc', ['nvram'], new Uint8Array(64)), /^rtc: state field nvram: expected bytes\[128\], got Uint8Array\(64\)$/);
  refuse(alter('pic', ['master', 'extra'], 1), /^pic: state field master\.extra: not part of state version 2$/);
  refuse({ ...good, lapic0: { version: 7, fields: good.lapic0.fields } }, /^lapic0: state version 7 is not supported \(this build reads 2\)$/);
  refuse({ ...good, vga: { version: 2, fields: { ...good.vga.fields, vram: new Uint8Array(16) } } }, /^vga: state field vram: expected bytes\[16777216\]/);
  const { i8042: _dropped, ...missing } = good;
  refuse(missing, /^machine: the state has no 'i8042'/);
  refuse({ ...good, 'virtio-net0': { version: 1, fields: {} } }, /^machine: the state has 'virtio-net0', which this machine does not/);
  // And the good state then loads.
  target.pc.ram.bytes.set(rig.pc.ram.bytes);
  target.pc.restoreDeviceStates(good);
  assert.deepEqual(target.pc.saveDeviceStates(), good);
});
