import type { Piix4Pm } from '../acpi/piix4-pm.js';
import { PCI_INTERRUPT_LINE, PciFunction } from './pci-function.js';
import type { IntxRouter } from './pci-bus.js';

const PIRQ_ROUTE = 0x60, PIRQ_DISABLED = 0x80;

/**
 * The PIIX3 PCI-to-ISA bridge (00:01.0): its PIRQ route control registers (0x60..0x63) connect PCI
 * interrupt lines A..D to ISA IRQs. A device in slot S raising INTx# (pin 1..4) drives PIRQ (S + pin - 1) mod 4,
 * the swizzle the firmware's $PIR table and the ACPI _PRT describe.
 */
export class Piix3IsaBridge extends PciFunction {
  constructor(private readonly routingChanged: () => void) {
    super('piix3', { vendor: 0x8086, device: 0x7000, classCode: 0x060100, headerType: 0x80, subsystemVendor: 0, subsystem: 0 });
    for (let i = 0; i < 4; i++) {
      this.config[PIRQ_ROUTE + i] = PIRQ_DISABLED;
      this.writeMask[PIRQ_ROUTE + i] = 0x8f;
    }
    this.config[0x4c] = 0x4d; // ISA I/O recovery timer, as after reset
    this.writeMask[0x4c] = 0xff;
    this.config[0x4e] = 0x03; // X-bus chip select
    this.writeMask[0x4e] = 0xff;
  }

  /** The ISA IRQ a pin reaches, or undefined while its PIRQ line is disabled. */
  readonly route: IntxRouter = (fn, pin) => {
    if (pin < 1 || pin > 4) return undefined;
    const pirq = ((fn.devfn >> 3) + pin - 1) & 3;
    const r = this.config[PIRQ_ROUTE + pirq];
    return r & PIRQ_DISABLED || r < 3 ? undefined : r & 0x0f;
  };

  /** Firmware defaults (SeaBIOS on QEMU): PIRQA..D to IRQ 10, 10, 11, 11. Used when booting Linux directly. */
  routeAsFirmwareDoes(): void {
    [10, 10, 11, 11].forEach((irq, i) => (this.config[PIRQ_ROUTE + i] = irq));
    this.routingChanged();
  }

  protected override configWritten(offset: number, size: number): void {
    if (offset < PIRQ_ROUTE + 4 && offset + size > PIRQ_ROUTE) this.routingChanged();
  }
}

const PMBA = 0x40, PMREGMISC = 0x80, DEVACTB = 0x58, SMBBA = 0x90, SMBHSTCFG = 0xd2;

/**
 * The PIIX4 power-management function's configuration space (00:01.3): PMBA and its enable bit place the
 * `Piix4Pm` registers in I/O space. APMC_EN reads as already set: tsvm has no System Management Mode, and this
 * is how QEMU tells SeaBIOS not to set it up (QEMU does the same when SMM is off).
 */
export class Piix4PmFunction extends PciFunction {
  constructor(private readonly pm: Piix4Pm) {
    super('piix4-pm-pci', { vendor: 0x8086, device: 0x7113, revision: 0x03, classCode: 0x068000, interruptPin: 1 });
    this.set32(PMBA, 1);
    this.setMask32(PMBA, 0xffc0);
    this.writeMask[PMREGMISC] = 0x01;
    this.config[DEVACTB + 3] = 0x02;
    this.set32(SMBBA, 1);
    this.setMask32(SMBBA, 0xfff0);
    this.writeMask[SMBHSTCFG] = 0x0f;
    this.config[PCI_INTERRUPT_LINE] = 9; // SCI
  }

  /** What SeaBIOS writes; used when booting Linux directly. */
  configureAsFirmwareDoes(): void {
    this.configWrite(PMBA, 4, 0x601);
    this.configWrite(PMREGMISC, 1, 1);
  }

  protected override configWritten(): void {
    this.pm.mapAt(this.config[PMREGMISC] & 1 ? this.get32(PMBA) & 0xffc0 : null);
  }

  override reset(): void {
    super.reset();
    this.configWritten();
  }
}
