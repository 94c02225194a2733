import { VirtualClock } from '../../../base/clock.js';
import { GuestRam } from '../../../memory/guest-ram.js';
import { PhysicalMemory } from '../../../memory/physical-memory.js';
import { PortIoBus } from '../../../memory/port-io-bus.js';
import { X86Cpu } from '../cpu.js';
import { CS, FLAT_CODE32_ATTRIBUTES, FLAT_DATA32_ATTRIBUTES } from '../registers.js';

/**
 * A CPU with RAM and nothing else but a debug port (0xE9) that collects output, for CPU tests. Code is
 * loaded at a physical address and started in real mode or flat 32-bit protected mode (paging off).
 */
export class BareMachine {
  readonly memory: PhysicalMemory;
  readonly io = new PortIoBus();
  readonly cpu: X86Cpu;
  output = '';

  /** `jit`: false to interpret only; a number compiles blocks after that many executions (1 = at once). */
  constructor(ramBytes = 16 * 2 ** 20, jit: false | number = false) {
    this.memory = new PhysicalMemory(new GuestRam(ramBytes));
    this.io.register(0xe9, 1, {
      read: () => 0xe9,
      write: (_o, _s, v) => {
        this.output += String.fromCharCode(v & 0xff);
      },
    }, { name: 'debugcon' });
    this.cpu = new X86Cpu({
      memory: this.memory, io: this.io, interrupts: { acknowledge: () => 0x20 }, clock: new VirtualClock(),
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
    let left = budget;
    while (left > 0) {
      left -= this.cpu.run(Math.min(left, 100_000));
      if (this.cpu.stopReason === 'halt' || this.cpu.stopReason === 'triple-fault') return this.cpu.stopReason;
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
