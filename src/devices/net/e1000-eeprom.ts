/**
 * The 82540EM's serial EEPROM: 64 16-bit words behind the EECD register's Microwire pins (Linux's e1000 driver
 * bit-bangs it on this chip) and the EERD read register. The words hold the MAC address, the PCI identity and
 * the checksum the driver verifies (all 64 words sum to 0xBABA).
 */
export const EEPROM_WORDS = 64;
const CHECKSUM_TARGET = 0xbaba;

// EECD bits.
export const EECD_SK = 0x01, EECD_CS = 0x02, EECD_DI = 0x04, EECD_DO = 0x08;
const EECD_REQ = 0x40, EECD_GNT = 0x80, EECD_PRES = 0x100;
/** Bits the driver owns (clock, select, data in, request); the rest the device drives. */
const EECD_DRIVER_BITS = EECD_SK | EECD_CS | EECD_DI | EECD_REQ;

/** Microwire READ: start bit 1, opcode 10, then a 6-bit word address. */
const READ_COMMAND = 0b110;
const COMMAND_BITS = 3 + 6;

// Word offsets the driver reads.
const WORD_ID_LED = 0x04, WORD_INIT_CONTROL1 = 0x0a, WORD_SUBSYSTEM = 0x0b, WORD_SUBSYSTEM_VENDOR = 0x0c;
const WORD_DEVICE = 0x0d, WORD_VENDOR = 0x0e, WORD_INIT_CONTROL2 = 0x0f;

/** The EEPROM image for a MAC address and PCI identity, with its checksum word. */
export function eepromImage(mac: Uint8Array, vendor: number, device: number): Uint16Array {
  const w = new Uint16Array(EEPROM_WORDS);
  for (let i = 0; i < 3; i++) w[i] = mac[2 * i] | (mac[2 * i + 1] << 8);
  w[WORD_ID_LED] = 0xffff; // the driver's default LED modes
  w[WORD_INIT_CONTROL1] = 0x6400; // signature 01b in bits 15:14, load subsystem IDs
  w[WORD_SUBSYSTEM] = device;
  w[WORD_SUBSYSTEM_VENDOR] = vendor;
  w[WORD_DEVICE] = device;
  w[WORD_VENDOR] = vendor;
  w[WORD_INIT_CONTROL2] = 0x0000; // no pause frames: the virtual wire never needs flow control frames
  let sum = 0;
  for (let i = 0; i < EEPROM_WORDS - 1; i++) sum += w[i];
  w[EEPROM_WORDS - 1] = (CHECKSUM_TARGET - sum) & 0xffff;
  return w;
}

/** The Microwire side: a shift register clocked by the driver's writes to EECD. */
export class MicrowireEeprom {
  private pins = 0;
  private shifted = 0;
  private bitsIn = 0;
  /** Word address being read out, or -1 while a command is still being shifted in. */
  private readAddress = -1;
  /** Data bits clocked out so far (the next rising edge presents bit 15 - outBits % 16). */
  private outBits = 0;

  constructor(readonly words: Uint16Array) {}

  reset(): void {
    this.pins = 0;
    this.deselect();
  }

  private deselect(): void {
    this.shifted = 0;
    this.bitsIn = 0;
    this.readAddress = -1;
    this.outBits = -1;
  }

  /** EECD as the driver reads it: its own pins, the grant when requested, presence, and the data out pin. */
  read(): number {
    let v = (this.pins & EECD_DRIVER_BITS) | EECD_PRES;
    if (this.pins & EECD_REQ) v |= EECD_GNT;
    if (this.readAddress >= 0 && this.outBits >= 0) {
      const word = this.words[(this.readAddress + (this.outBits >> 4)) % EEPROM_WORDS];
      if ((word >> (15 - (this.outBits & 15))) & 1) v |= EECD_DO;
    }
    return v;
  }

  write(value: number): void {
    const before = this.pins;
    this.pins = value & EECD_DRIVER_BITS;
    if (!(this.pins & EECD_CS)) {
      this.deselect();
      return;
    }
    const risingClock = (this.pins & EECD_SK) !== 0 && (before & EECD_SK) === 0;
    if (!risingClock) return;
    if (this.readAddress >= 0) {
      this.outBits++;
      return;
    }
    // A command starts with a 1 bit: leading zeros are ignored.
    if (this.bitsIn === 0 && !(this.pins & EECD_DI)) return;
    this.shifted = (this.shifted << 1) | (this.pins & EECD_DI ? 1 : 0);
    if (++this.bitsIn < COMMAND_BITS) return;
    if (this.shifted >> 6 === READ_COMMAND) {
      this.readAddress = this.shifted & 0x3f;
      this.outBits = -1;
    } else {
      this.shifted = 0; // write/erase commands are not offered: the contents are fixed
      this.bitsIn = 0;
    }
  }
}
