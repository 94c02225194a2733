/**
 * The 82540EM's copper PHY (a Marvell 88E1011 on the card) as the MAC reaches it through MDIC: the MII
 * registers the e1000 driver reads and writes at PHY address 1. The wire is virtual, so auto-negotiation
 * completes at once at 1000 Mb/s full duplex whenever the link is up.
 */
export const PHY_ADDRESS = 1;

const PHY_CTRL = 0x00, PHY_STATUS = 0x01, PHY_ID1 = 0x02, PHY_ID2 = 0x03, PHY_AUTONEG_ADV = 0x04, PHY_LP_ABILITY = 0x05;
const PHY_AUTONEG_EXP = 0x06, PHY_1000T_CTRL = 0x09, PHY_1000T_STATUS = 0x0a, PHY_EXT_STATUS = 0x0f;
const M88_SPEC_CTRL = 0x10, M88_SPEC_STATUS = 0x11, M88_EXT_SPEC_CTRL = 0x14;

const CTRL_RESET = 0x8000, CTRL_RESTART_AUTONEG = 0x0200;
const STATUS_LINK = 0x0004, STATUS_AUTONEG_COMPLETE = 0x0020;
/** 100BASE-TX/10BASE-T full and half duplex, auto-negotiation ability, extended status, preamble suppression. */
const STATUS_ABILITIES = 0x7949;
/** 88E1011's identifier (OUI 0x005043) as the driver expects for an 82540. */
const ID1 = 0x0141, ID2 = 0x0c20;
/** M88 specific status: 1000 Mb/s, full duplex, speed and duplex resolved, real-time link. */
const SPEC_STATUS_LINK_1000_FD = 0x8000 | 0x2000 | 0x0800 | 0x0400;

const REGISTERS = 32;
/** Registers the driver may change; the rest are status and identity. */
const WRITABLE = new Set([PHY_CTRL, PHY_AUTONEG_ADV, PHY_1000T_CTRL, M88_SPEC_CTRL, M88_EXT_SPEC_CTRL, 0x18, 0x19, 0x1a, 0x1d, 0x1e]);

export class E1000Phy {
  readonly regs = new Uint16Array(REGISTERS);

  constructor() {
    this.reset();
  }

  reset(): void {
    const r = this.regs;
    r.fill(0);
    r[PHY_CTRL] = 0x1140; // auto-negotiation enabled, full duplex, 1000 Mb/s selected
    r[PHY_ID1] = ID1;
    r[PHY_ID2] = ID2;
    r[PHY_AUTONEG_ADV] = 0x0de1;
    r[PHY_1000T_CTRL] = 0x0e00;
    r[PHY_EXT_STATUS] = 0x3000; // 1000BASE-T full and half duplex capable
    r[M88_SPEC_CTRL] = 0x0068;
    r[M88_EXT_SPEC_CTRL] = 0x0d60;
    this.setLink(true);
  }

  /** Link state of the virtual wire: with it up, negotiation is complete and the partner offers what we do. */
  setLink(up: boolean): void {
    const r = this.regs;
    r[PHY_STATUS] = STATUS_ABILITIES | (up ? STATUS_LINK | STATUS_AUTONEG_COMPLETE : 0);
    r[PHY_LP_ABILITY] = up ? 0x45e1 : 0;
    r[PHY_AUTONEG_EXP] = up ? 0x0001 : 0;
    r[PHY_1000T_STATUS] = up ? 0x3c00 : 0;
    r[M88_SPEC_STATUS] = up ? SPEC_STATUS_LINK_1000_FD : 0;
  }

  get linkUp(): boolean {
    return (this.regs[PHY_STATUS] & STATUS_LINK) !== 0;
  }

  read(reg: number): number {
    return this.regs[reg & (REGISTERS - 1)];
  }

  write(reg: number, value: number): void {
    reg &= REGISTERS - 1;
    if (!WRITABLE.has(reg)) return;
    // Reset and restart-negotiation complete at once (they are self-clearing bits on the chip).
    if (reg === PHY_CTRL) value &= ~(CTRL_RESET | CTRL_RESTART_AUTONEG);
    this.regs[reg] = value & 0xffff;
  }
}
