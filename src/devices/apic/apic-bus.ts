/** Delivery modes of interrupt messages (ICR, I/O APIC redirection entries, MSI data, LVT entries). */
export const DeliveryMode = {
  FIXED: 0,
  LOWEST_PRIORITY: 1,
  SMI: 2,
  NMI: 4,
  INIT: 5,
  STARTUP: 6,
  EXTINT: 7,
} as const;

/** An interrupt message on the APIC bus (the system bus on xAPIC machines). */
export interface ApicMessage {
  /** Physical APIC ID, or a logical destination (LDR bit mask in flat or cluster form). */
  destination: number;
  logical: boolean;
  deliveryMode: number;
  vector: number;
  /** Level-triggered: the receiver sets TMR and answers its EOI with an EOI broadcast. */
  levelTriggered: boolean;
}

/** What the bus needs of a local APIC. */
export interface ApicBusCpu {
  /** Whether `destination` addresses this APIC (physical ID or logical match). */
  isDestination(destination: number, logical: boolean): boolean;
  /** Arbitration priority, for lowest-priority delivery. */
  readonly arbitrationPriority: number;
  accept(deliveryMode: number, vector: number, levelTriggered: boolean): void;
}

/** What the bus needs of an I/O APIC: the EOI broadcast of a level-triggered vector. */
export interface ApicBusIoApic {
  endOfInterrupt(vector: number): void;
}

/** MSI address window: a device write to 0xFEExxxxx is an interrupt message, not memory. */
export const MSI_ADDRESS_BASE = 0xfee00000;

/**
 * The wire between the local APICs and the I/O APICs (on xAPIC machines, messages on the system bus):
 * interrupts from I/O APICs, MSIs and IPIs travel to the local APICs they address, EOIs of level-triggered
 * vectors back to every I/O APIC.
 */
export class ApicBus {
  private readonly cpus: ApicBusCpu[] = [];
  private readonly ioApics: ApicBusIoApic[] = [];

  addCpu(cpu: ApicBusCpu): void {
    this.cpus.push(cpu);
  }

  addIoApic(ioApic: ApicBusIoApic): void {
    this.ioApics.push(ioApic);
  }

  /** Delivers to every addressed APIC; lowest priority to the one addressed APIC with the lowest arbitration priority. */
  deliver(m: ApicMessage): void {
    if (m.deliveryMode === DeliveryMode.LOWEST_PRIORITY) {
      let target: ApicBusCpu | null = null;
      for (const c of this.cpus) {
        if (c.isDestination(m.destination, m.logical) && (target === null || c.arbitrationPriority < target.arbitrationPriority)) target = c;
      }
      target?.accept(DeliveryMode.FIXED, m.vector, m.levelTriggered);
      return;
    }
    for (const c of this.cpus) if (c.isDestination(m.destination, m.logical)) c.accept(m.deliveryMode, m.vector, m.levelTriggered);
  }

  /** Delivers to every APIC but `except` (IPI shorthands "all" and "all excluding self"). */
  deliverToAll(except: ApicBusCpu | null, deliveryMode: number, vector: number, levelTriggered: boolean): void {
    for (const c of this.cpus) if (c !== except) c.accept(deliveryMode, vector, levelTriggered);
  }

  broadcastEoi(vector: number): void {
    for (const io of this.ioApics) io.endOfInterrupt(vector);
  }

  /**
   * A message-signalled interrupt: a PCI device's 32-bit write of `data` to `address`. Address bits 19:12 are the
   * destination, bit 2 logical mode; data bits 7:0 the vector, 10:8 the delivery mode, 15 level-triggered.
   * Returns false when the address is outside the MSI window (the write is then not an interrupt).
   */
  deliverMsi(address: number, data: number): boolean {
    if (((address >>> 20) << 20) >>> 0 !== MSI_ADDRESS_BASE) return false;
    this.deliver({
      destination: (address >>> 12) & 0xff,
      logical: (address & 4) !== 0,
      deliveryMode: (data >>> 8) & 7,
      vector: data & 0xff,
      levelTriggered: (data & 0x8000) !== 0,
    });
    return true;
  }
}
