import { VirtualClock } from '../../../base/clock.js';
import { ApicBus } from '../../../devices/apic/apic-bus.js';
import { IO_APIC_DEFAULT_BASE, IoApic } from '../../../devices/apic/io-apic.js';
import { LocalApic } from '../../../devices/apic/local-apic.js';
import { TimerQueue } from '../../../devices/timer-queue.js';
import { GuestRam } from '../../../memory/guest-ram.js';
import { PhysicalMemory } from '../../../memory/physical-memory.js';
import { PortIoBus } from '../../../memory/port-io-bus.js';
import { X86Cpu } from '../cpu.js';
import { CS, FLAT_CODE32_ATTRIBUTES, FLAT_DATA32_ATTRIBUTES } from '../registers.js';

/** Port of the test interrupt source with `apic`: writing `pin | level << 7` drives an I/O APIC pin. */
export const BARE_IRQ_PORT = 0xeb;
/** Guest nanoseconds per executed instruction with `apic` (a deterministic clock). */
const NS_PER_INSTRUCTION = 1;

/**
 * A CPU with RAM and nothing else but a debug port (0xE9) that collects output, for CPU tests. Code is
 * loaded at a physical address and started in real mode or flat 32-bit protected mode (paging off).
 * With `apic`, a local APIC and an I/O APIC (pins driven through port BARE_IRQ_PORT) on a guest clock that
 * advances with executed instructions and jumps to the next timer while the CPU halts.
 */
export class BareMachine {
  readonly memory: PhysicalMemory;
  readonly io = new PortIoBus();
  readonly cpu: X86Cpu;
  private readonly clock = new VirtualClock();
  private readonly timers: TimerQueue | null = null;
  output = '';

  /** `jit`: false to interpret only; a number compiles blocks after that many executions (1 = at once). */
  constructor(ramBytes = 16 * 2 ** 20, jit: false | number = false, options: { apic?: boolean } = {}) {
    this.memory = new PhysicalMemory(new GuestRam(ramBytes));
    this.io.register(0xe9, 1, {
      read: () => 0xe9,
      write: (_o, _s, v) => {
        this.output += String.fromCharCode(v & 0xff);
      },
    }, { name: 'debugcon' });
    const pic = { acknowledge: () => 0x20 };
    let lapic: LocalApic | undefined;
    if (options.apic) {
      this.clock.pause();
      this.clock.setNowNs(0);
      const timers = this.timers = new TimerQueue(this.clock);
      const bus = new ApicBus();
      const pins = { setIntr: (level: boolean) => this.cpu.setIntr(level), raiseNmi: () => this.cpu.raiseNmi() };
      lapic = new LocalApic({ id: 0, bsp: true, memory: this.memory, bus, timers, cpu: pins, pic });
      const ioApic = new IoApic(this.memory.mmio, IO_APIC_DEFAULT_BASE, bus);
      this.io.register(BARE_IRQ_PORT, 1, { read: () => 0xff, write: (_o, _s, v) => ioApic.setPin(v & 0x1f, (v & 0x80) !== 0) }, { name: 'bare-irq' });
    }
    this.cpu = new X86Cpu({
      memory: this.memory, io: this.io, interrupts: lapic ?? pic, clock: this.clock, apic: lapic,
      jit: jit !== false, jitThreshold: jit === false ? undefined : jit,
    });
  }

  load(address: number, code: Uint8Array): void {
    this.memory.ram.bytes.set(code, address);
  }

  startReal(cs: number, ip: number): void {
    const r = this.cpu.getRegisters();
    r.segments[CS] = { selector: cs, base: cs << 4, limit: 0xffff, attributes: 0x93 };
    r.eip = ip;
    r.gpr[4] = 0x7000;
    this.cpu.setRegisters(r);
  }

  startFlat32(eip: number, esp = 0x90000): void {
    const r = this.cpu.getRegisters();
    r.cr0 |= 1;
    r.segments = r.segments.map((_, i) =>
      i === CS
        ? { selector: 0x08, base: 0, limit: 0xffffffff, attributes: FLAT_CODE32_ATTRIBUTES }
        : { selector: 0x10, base: 0, limit: 0xffffffff, attributes: FLAT_DATA32_ATTRIBUTES },
    );
    r.eip = eip;
    r.gpr[4] = esp;
    this.cpu.setRegisters(r);
  }

  /** Runs until HLT (with IF clear) or the budget is spent; returns the stop reason. */
  runUntilHalt(budget = 10_000_000): string {
    if (process.env.TSVM_TRACE_CPU) return this.traceUntilHalt(budget);
    if (this.timers) return this.runWithTimers(this.timers, budget);
    let left = budget;
    while (left > 0) {
      left -= this.cpu.run(Math.min(left, 100_000));
      if (this.cpu.stopReason === 'halt' || this.cpu.stopReason === 'triple-fault') return this.cpu.stopReason;
    }
    return 'budget';
  }

  /** The same with guest time and timers: a HLT waits for the next timer; with none armed, it ends the run. */
  private runWithTimers(timers: TimerQueue, budget: number): string {
    let left = budget;
    while (left > 0) {
      const n = this.cpu.run(Math.min(left, 1000));
      left -= Math.max(n, 1);
      this.clock.setNowNs(this.clock.nowNs() + n * NS_PER_INSTRUCTION);
      if (this.cpu.stopReason === 'triple-fault') return 'triple-fault';
      if (this.cpu.stopReason === 'halt') {
        const next = timers.nextDeadlineNs();
        if (next === Infinity) return 'halt';
        this.clock.setNowNs(Math.max(next, this.clock.nowNs()));
      }
      timers.runExpired();
    }
    return 'budget';
  }

  /** Single-steps and prints the last instructions' addresses when it stops (TSVM_TRACE_CPU=1). */
  private traceUntilHalt(budget: number): string {
    const recent: string[] = [];
    for (let i = 0; i < budget; i++) {
      const r = this.cpu.getRegisters();
      recent.push(`eip=${r.eip.toString(16)} eax=${r.gpr[0].toString(16)} esp=${r.gpr[4].toString(16)} cr0=${r.cr0.toString(16)}`);
      if (recent.length > 30) recent.shift();
      this.cpu.run(1);
      if (this.cpu.stopReason === 'halt' || this.cpu.stopReason === 'triple-fault' || this.output.length > Number(process.env.TSVM_TRACE_CPU_OUTPUT ?? Infinity)) {
        process.stderr.write(recent.join('\n') + `\nstop: ${this.cpu.stopReason} output=${JSON.stringify(this.output)}\n`);
        return this.cpu.stopReason;
      }
    }
    return 'budget';
  }
}
