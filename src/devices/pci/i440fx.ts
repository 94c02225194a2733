import { PciFunction } from './pci-function.js';

/**
 * The i440FX host bridge (00:00.0). Its PAM registers (0x59..0x5F) and SMRAM control (0x72) are kept so that
 * firmware reads back what it wrote, but tsvm does not switch 0xC0000..0xFFFFF between ROM and RAM: that range
 * is always RAM, loaded with the BIOS's last 128 KiB at power-on. SeaBIOS only ever asks for RAM there (it
 * "unlocks" shadow RAM, copies itself and option ROMs in, and locks it again); locking is not enforced.
 */
export class I440fxHostBridge extends PciFunction {
  constructor() {
    super('i440fx', { vendor: 0x8086, device: 0x1237, revision: 0x02, classCode: 0x060000 });
    for (let o = 0x59; o <= 0x5f; o++) this.writeMask[o] = 0x33;
    this.writeMask[0x72] = 0x78; // SMRAM: D_OPEN, D_CLS, D_LCK, G_SMRAME (C_BASE_SEG is fixed)
    this.config[0x72] = 0x02;
  }
}
