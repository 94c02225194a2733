import { LOCAL_APIC_DEFAULT_BASE, LOCAL_APIC_VERSION } from '../devices/apic/local-apic.js';
import { IO_APIC_DEFAULT_BASE, IO_APIC_VERSION } from '../devices/apic/io-apic.js';
import { checksum, le16, le32 } from './acpi-tables.js';

/** A PCI function's INTx pin and the ISA IRQ (and I/O APIC pin) it is routed to. */
export interface PciInterruptRoute {
  device: number;
  /** 1 = INTA# .. 4 = INTD#. */
  pin: number;
  irq: number;
}

export interface MpTableOptions {
  /** CPUID.1 EAX and EDX of the processor. */
  cpuSignature: number;
  cpuFeatures: number;
  pciInterrupts: PciInterruptRoute[];
  /** ISA IRQs wired level-triggered, active high (the MADT's overrides). */
  levelIsaIrqs: number[];
}

const PCI_BUS_ID = 0, ISA_BUS_ID = 1;
const IO_APIC_ID = 0;
const INT = 0, NMI = 1, EXTINT = 3;
/** Interrupt flags: polarity bits 1:0, trigger bits 3:2 (0 = as the bus defines). */
const LEVEL_ACTIVE_HIGH = 0xd;

/**
 * The MultiProcessor Specification 1.4 tables for an OS booted without firmware and without ACPI: a floating
 * pointer structure and, after it, the configuration table (processor, PCI and ISA buses, the I/O APIC, I/O
 * interrupt assignments as the MADT gives them, ExtINT on LINT0 and NMI on LINT1), to be placed at `address`
 * (16-byte aligned, in the BIOS area 0xF0000-0xFFFFF where the OS searches). What SeaBIOS builds on QEMU's pc.
 */
export function buildMpTable(address: number, options: MpTableOptions): Uint8Array {
  const entries: number[][] = [];
  const text = (s: string, n: number) => [...s.padEnd(n, ' ').slice(0, n)].map((c) => c.charCodeAt(0));
  // Processor 0: APIC ID 0, enabled and the bootstrap processor.
  entries.push([0, 0, LOCAL_APIC_VERSION & 0xff, 0x03, ...le32(options.cpuSignature), ...le32(options.cpuFeatures), ...new Array(8).fill(0)]);
  entries.push([1, PCI_BUS_ID, ...text('PCI', 6)], [1, ISA_BUS_ID, ...text('ISA', 6)]);
  entries.push([2, IO_APIC_ID, IO_APIC_VERSION & 0xff, 0x01, ...le32(IO_APIC_DEFAULT_BASE)]);
  const ioInterrupt = (type: number, flags: number, bus: number, busIrq: number, pin: number) =>
    entries.push([3, type, ...le16(flags), bus, busIrq, IO_APIC_ID, pin]);
  for (const r of options.pciInterrupts) ioInterrupt(INT, 0, PCI_BUS_ID, (r.device << 2) | (r.pin - 1), r.irq);
  for (let irq = 0; irq < 16; irq++) {
    if (irq === 2) continue; // the cascade: nothing arrives there
    ioInterrupt(INT, options.levelIsaIrqs.includes(irq) ? LEVEL_ACTIVE_HIGH : 0, ISA_BUS_ID, irq, irq === 0 ? 2 : irq);
  }
  entries.push([4, EXTINT, ...le16(0), ISA_BUS_ID, 0, 0xff, 0], [4, NMI, ...le16(0), ISA_BUS_ID, 0, 0xff, 1]);

  const body = entries.flat();
  const table = new Uint8Array(44 + body.length);
  const dv = new DataView(table.buffer);
  table.set(text('PCMP', 4), 0);
  dv.setUint16(4, table.length, true);
  table[6] = 4; // specification revision 1.4
  table.set(text('TSVM', 8), 8);
  table.set(text('TSVMPC', 12), 16);
  dv.setUint16(34, entries.length, true);
  dv.setUint32(36, LOCAL_APIC_DEFAULT_BASE, true);
  table.set(body, 44);
  table[7] = checksum(table);

  const floating = new Uint8Array(16);
  floating.set(text('_MP_', 4), 0);
  new DataView(floating.buffer).setUint32(4, address + 16, true);
  floating[8] = 1; // length in 16-byte units
  floating[9] = 4;
  floating[10] = checksum(floating);

  const out = new Uint8Array(16 + table.length);
  out.set(floating, 0);
  out.set(table, 16);
  return out;
}
