/**
 * The Intel 82540EM gigabit Ethernet controller (PCI 8086:100E, QEMU's `e1000`): registers in a 128 KiB memory
 * BAR (and the IOADDR/IODATA window in an I/O BAR), the EEPROM and PHY, interrupt cause and mask, and the
 * receive and transmit descriptor rings in guest memory. Transmit offloads (IP/TCP/UDP checksums and TCP
 * segmentation, set up by context descriptors) are done in software before frames go to the back end.
 *
 * Everything the guest gives is checked: a ring outside RAM or with head/tail beyond its length, or a buffer
 * outside RAM, resets the device (as a real card would hang); frames too large are dropped. tsvm never throws
 * for guest values. There is no option ROM (QEMU's efi-e1000.rom for network boot is not offered).
 */
import { StateError } from '../../base/errors.js';
import { debugLog } from '../../base/log.js';
import type { VersionedState } from '../../base/state.js';
import type { AccessSize } from '../../memory/bus-device.js';
import type { PhysicalMemory } from '../../memory/physical-memory.js';
import type { NetBackend, NetReceiver } from '../../net/net-backend.js';
import { ethernetCrc, insertChecksum, segment } from '../../net/offload.js';
import { PCI_COMMAND, PCI_COMMAND_IO, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY, PciFunction } from '../pci/pci-function.js';
import { EEPROM_WORDS, MicrowireEeprom, eepromImage } from './e1000-eeprom.js';
import { E1000Phy, PHY_ADDRESS } from './e1000-phy.js';

export const E1000_VENDOR = 0x8086, E1000_DEVICE = 0x100e;
const MMIO_SIZE = 0x20000, IO_SIZE = 0x40;

// Register offsets (bytes).
const CTRL = 0x0000, STATUS = 0x0008, EECD = 0x0010, EERD = 0x0014, MDIC = 0x0020;
const ICR = 0x00c0, ICS = 0x00c8, IMS = 0x00d0, IMC = 0x00d8;
const RCTL = 0x0100, TCTL = 0x0400;
const RDBAL = 0x2800, RDBAH = 0x2804, RDLEN = 0x2808, RDH = 0x2810, RDT = 0x2818;
const TDBAL = 0x3800, TDBAH = 0x3804, TDLEN = 0x3808, TDH = 0x3810, TDT = 0x3818;
const STATS_START = 0x4000, STATS_END = 0x4100;
const GPRC = 0x4074, GPTC = 0x4080, GORCL = 0x4088, GOTCL = 0x4090, TPR = 0x40d0, TPT = 0x40d4;
const MTA = 0x5200, RAL0 = 0x5400, RAH0 = 0x5404, RA_END = 0x5480, VFTA = 0x5600;
const VET = 0x0038, PBA = 0x1000, LEDCTL = 0x0e00;

const CTRL_SLU = 1 << 6, CTRL_RST = 1 << 26, CTRL_VME = 1 << 30, CTRL_PHY_RST = 1 << 31;
const STATUS_FD = 0x1, STATUS_LU = 0x2, STATUS_SPEED_1000 = 0x80, STATUS_ASDV_1000 = 0x200;
const EERD_START = 0x1, EERD_DONE = 0x10;
const MDIC_OP_WRITE = 1 << 26, MDIC_OP_READ = 2 << 26, MDIC_READY = 1 << 28, MDIC_ERROR = 1 << 30;

// Interrupt causes.
const ICR_TXDW = 0x01, ICR_TXQE = 0x02, ICR_RXDMT0 = 0x10, ICR_RXT0 = 0x80;

const RCTL_EN = 1 << 1, RCTL_UPE = 1 << 3, RCTL_MPE = 1 << 4, RCTL_LPE = 1 << 5, RCTL_BAM = 1 << 15, RCTL_VFE = 1 << 18;
const RCTL_BSEX = 1 << 25, RCTL_SECRC = 1 << 26;
const TCTL_EN = 1 << 1;

// Descriptor command bits (the byte at bits 31:24 of a descriptor's second dword, in every format).
const CMD_EOP = 0x01, CMD_IC = 0x04, CMD_TSE = 0x04, CMD_RS = 0x08, CMD_DEXT = 0x20, CMD_VLE = 0x40;
/** Context descriptor TUCMD: TCP (else UDP), IPv4 (else IPv6), TCP segmentation. */
const TUCMD_TCP = 0x01, TUCMD_IP = 0x02, TUCMD_TSE = 0x04;
const POPTS_IXSM = 0x01, POPTS_TXSM = 0x02;
const DESC_DD = 0x01, RX_EOP = 0x02, RX_IXSM = 0x04, RX_VP = 0x08;

const DESC_SIZE = 16;
const MIN_FRAME = 60;
/** Largest frame without RCTL.LPE (1518 plus a VLAN tag); with it, the most a 16 KiB buffer chain may take. */
const MAX_NORMAL_FRAME = 1522, MAX_LONG_FRAME = 16384;
/** The largest packet a transmit descriptor chain may build (a 64 KiB TCP segmentation payload and headers). */
const MAX_TX_PACKET = 0x10000 + 256;

/** The transmit context: where the IP and TCP/UDP headers are, and how to segment. */
interface TxContext {
  ipcss: number; ipcso: number; ipcse: number;
  tucss: number; tucso: number; tucse: number;
  tucmd: number; hdrLen: number; mss: number;
}

export interface E1000Options {
  id?: string;
  memory: PhysicalMemory;
  mac: Uint8Array;
  backend: NetBackend;
}

export class E1000 extends PciFunction implements NetReceiver {
  private readonly regs = new Uint32Array(MMIO_SIZE / 4);
  private readonly eeprom: MicrowireEeprom;
  private readonly phy = new E1000Phy();
  private readonly memory: PhysicalMemory;
  private readonly backend: NetBackend;
  private readonly mac: Uint8Array;
  private ioAddress = 0;
  /** The packet the transmit descriptors build, and whether a bad buffer spoiled it. */
  private readonly tx = new Uint8Array(MAX_TX_PACKET);
  private txLength = 0;
  private txBroken = false;
  /** Options of the packet being built, from its first data descriptor. */
  private txPopts = 0;
  private txTse = false;
  private txContext: TxContext = { ipcss: 0, ipcso: 0, ipcse: 0, tucss: 0, tucso: 0, tucse: 0, tucmd: 0, hdrLen: 0, mss: 0 };
  /** The back end holds a frame we refused: tell it when descriptors come. */
  private receiveRefused = false;

  constructor(options: E1000Options) {
    const id = options.id ?? 'e1000';
    const mmio = { read: (o: number, s: AccessSize) => this.mmioRead(o, s), write: (o: number, s: AccessSize, v: number) => this.mmioWrite(o, s, v) };
    const io = { read: (o: number, s: AccessSize) => this.ioRead(o, s), write: (o: number, s: AccessSize, v: number) => this.ioWrite(o, s, v) };
    super(id, {
      vendor: E1000_VENDOR, device: E1000_DEVICE, classCode: 0x020000, revision: 3,
      subsystemVendor: E1000_VENDOR, subsystem: E1000_DEVICE, interruptPin: 1,
    }, [{ kind: 'mem', size: MMIO_SIZE, device: mmio }, { kind: 'io', size: IO_SIZE, device: io }]);
    this.memory = options.memory;
    this.backend = options.backend;
    this.mac = options.mac.slice();
    this.eeprom = new MicrowireEeprom(eepromImage(this.mac, E1000_VENDOR, E1000_DEVICE));
    this.resetRegisters();
    this.backend.attach(this);
  }

  /** Assigns the BARs and enables decoding and bus mastering, as the firmware does before an OS boots. */
  configureAsFirmwareDoes(mmioBase: number, ioBase: number): void {
    this.configWrite(0x10, 4, mmioBase);
    this.configWrite(0x14, 4, ioBase | 1);
    this.configWrite(PCI_COMMAND, 2, this.configRead(PCI_COMMAND, 2) | PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
  }

  override reset(): void {
    super.reset();
    this.resetRegisters();
  }

  /** Power-on register values (also the software reset, CTRL.RST). */
  private resetRegisters(): void {
    const r = this.regs;
    r.fill(0);
    r[CTRL >> 2] = CTRL_SLU | 0x00000201; // full duplex, auto-speed detection
    r[LEDCTL >> 2] = 0x07068302;
    r[PBA >> 2] = 0x00100030; // 48 KiB receive, 16 KiB transmit packet buffer
    r[VET >> 2] = 0x8100;
    // The card loads its first receive address from the EEPROM.
    const m = this.mac;
    r[RAL0 >> 2] = (m[0] | (m[1] << 8) | (m[2] << 16) | (m[3] << 24)) >>> 0;
    r[RAH0 >> 2] = (m[4] | (m[5] << 8) | 0x80000000) >>> 0;
    this.eeprom.reset();
    this.phy.reset();
    this.txLength = 0;
    this.txBroken = false;
    this.txTse = false;
    this.txPopts = 0;
    this.ioAddress = 0;
    this.setIrq(false);
  }

  private updateIrq(): void {
    this.setIrq((this.regs[ICR >> 2] & this.regs[IMS >> 2]) !== 0);
  }

  private raise(cause: number): void {
    this.regs[ICR >> 2] |= cause;
    this.updateIrq();
  }

  // Register access.

  private mmioRead(offset: number, size: AccessSize): number {
    const value = this.readRegister(offset & ~3);
    return size === 4 ? value : (value >>> (8 * (offset & 3))) & (size === 2 ? 0xffff : 0xff);
  }

  private mmioWrite(offset: number, size: AccessSize, value: number): void {
    const aligned = offset & ~3;
    if (size !== 4) {
      // Narrow writes merge into the register (drivers use dwords; this only keeps odd guests harmless).
      const shift = 8 * (offset & 3), mask = (size === 2 ? 0xffff : 0xff) << shift;
      value = ((this.regs[aligned >> 2] & ~mask) | ((value << shift) & mask)) >>> 0;
    }
    this.writeRegister(aligned, value >>> 0);
  }

  /** IOADDR (offset 0) selects a register, IODATA (offset 4) reaches it. */
  private ioRead(offset: number, size: AccessSize): number {
    if (offset === 0 && size === 4) return this.ioAddress;
    if (offset === 4 && size === 4) return this.readRegister(this.ioAddress & (MMIO_SIZE - 4));
    return 0xffffffff >>> (32 - 8 * size);
  }

  private ioWrite(offset: number, size: AccessSize, value: number): void {
    if (offset === 0 && size === 4) this.ioAddress = value >>> 0;
    else if (offset === 4 && size === 4) this.writeRegister(this.ioAddress & (MMIO_SIZE - 4), value >>> 0);
  }

  private readRegister(offset: number): number {
    const r = this.regs;
    switch (offset) {
      case STATUS: {
        const up = this.phy.linkUp && (r[CTRL >> 2] & CTRL_SLU) !== 0;
        return STATUS_FD | STATUS_SPEED_1000 | STATUS_ASDV_1000 | (up ? STATUS_LU : 0);
      }
      case EECD: return this.eeprom.read();
      case ICR: {
        const v = r[ICR >> 2];
        r[ICR >> 2] = 0;
        this.updateIrq();
        return v;
      }
      case ICS: case IMC: return 0;
      default:
        if (offset >= STATS_START && offset < STATS_END) {
          // Statistics clear when read.
          const v = r[offset >> 2];
          r[offset >> 2] = 0;
          return v;
        }
        return r[offset >> 2];
    }
  }

  private writeRegister(offset: number, value: number): void {
    const r = this.regs;
    switch (offset) {
      case CTRL:
        if (value & CTRL_RST) {
          this.resetRegisters();
          return;
        }
        if (value & CTRL_PHY_RST) this.phy.reset();
        r[CTRL >> 2] = value & ~(CTRL_RST | CTRL_PHY_RST);
        return;
      case STATUS: return;
      case EECD: this.eeprom.write(value); return;
      case EERD: {
        const address = (value >>> 8) & 0xff;
        const data = value & EERD_START && address < EEPROM_WORDS ? this.eeprom.words[address] : 0;
        r[EERD >> 2] = value & EERD_START ? ((data << 16) | (address << 8) | EERD_DONE) >>> 0 : 0;
        return;
      }
      case MDIC: this.mdio(value); return;
      case ICR: r[ICR >> 2] &= ~value; this.updateIrq(); return;
      case ICS: this.raise(value); return;
      case IMS: r[IMS >> 2] |= value; this.updateIrq(); return;
      case IMC: r[IMS >> 2] &= ~value; this.updateIrq(); return;
      case RCTL:
        r[RCTL >> 2] = value;
        this.offerRoom();
        return;
      case TCTL:
        // Enabling the transmitter sends what the ring already holds (Linux enables it only once the link is up).
        r[TCTL >> 2] = value;
        this.transmit();
        return;
      case RDBAL: case TDBAL: r[offset >> 2] = value & ~0xf; return;
      case RDLEN: case TDLEN: r[offset >> 2] = value & 0xfff80; return;
      case RDH: case TDH: r[offset >> 2] = value & 0xffff; return;
      case RDT:
        r[RDT >> 2] = value & 0xffff;
        this.offerRoom();
        return;
      case TDT:
        r[TDT >> 2] = value & 0xffff;
        this.transmit();
        return;
      default:
        if (offset >= STATS_START && offset < STATS_END) return;
        r[offset >> 2] = value;
    }
  }

  /** MDIC: one PHY register read or write, complete at once. */
  private mdio(value: number): void {
    const reg = (value >>> 16) & 0x1f, phy = (value >>> 21) & 0x1f, op = value & (3 << 26);
    let result = value & ~(MDIC_READY | MDIC_ERROR | 0xffff);
    if (phy !== PHY_ADDRESS || (op !== MDIC_OP_READ && op !== MDIC_OP_WRITE)) {
      result |= MDIC_ERROR | (value & 0xffff);
    } else if (op === MDIC_OP_READ) {
      result |= this.phy.read(reg);
    } else {
      this.phy.write(reg, value & 0xffff);
      result |= value & 0xffff;
    }
    this.regs[MDIC >> 2] = (result | MDIC_READY) >>> 0;
  }

  /** A ring the guest set up wrongly: the device resets, as the card would stop; tsvm goes on. */
  private ringError(what: string): void {
    debugLog('net', `${this.id}: ${what}; device reset`);
    this.resetRegisters();
  }

  /** The ring's base address and descriptor count, or null (after a device reset) when it is not usable. */
  private ring(base: number, high: number, length: number, head: number, tail: number, what: string): { base: number; count: number } | null {
    const r = this.regs;
    const count = r[length >> 2] / DESC_SIZE;
    const address = r[base >> 2];
    if (r[high >> 2] !== 0 || count === 0 || r[head >> 2] >= count || r[tail >> 2] >= count || !this.memory.ramView(address, count * DESC_SIZE)) {
      this.ringError(`bad ${what} ring (base ${r[high >> 2].toString(16)}:${address.toString(16)}, ${count} descriptors, head ${r[head >> 2]}, tail ${r[tail >> 2]})`);
      return null;
    }
    return { base: address, count };
  }

  // Receive.

  /** Descriptors may have come: a back end holding a frame we refused may deliver it now. */
  private offerRoom(): void {
    if (!this.receiveRefused) return;
    this.receiveRefused = false;
    this.backend.receiveReady();
  }

  /** Receive buffer size from RCTL.BSIZE and BSEX. */
  private bufferSize(): number {
    const rctl = this.regs[RCTL >> 2];
    const bsize = (rctl >>> 16) & 3;
    if (rctl & RCTL_BSEX && bsize !== 0) return 16384 >> (bsize - 1);
    return 2048 >> bsize;
  }

  /** Destination address filtering: promiscuous modes, broadcast, the receive addresses and the multicast table. */
  private accepts(frame: Uint8Array): boolean {
    const r = this.regs, rctl = r[RCTL >> 2];
    const multicast = (frame[0] & 1) !== 0;
    if (!multicast) {
      if (rctl & RCTL_UPE) return true;
      for (let o = RAL0; o < RA_END; o += 8) {
        const low = r[o >> 2], high = r[(o + 4) >> 2];
        if (!(high & 0x80000000)) continue;
        if (low === ((frame[0] | (frame[1] << 8) | (frame[2] << 16) | (frame[3] << 24)) >>> 0) && (high & 0xffff) === (frame[4] | (frame[5] << 8))) return true;
      }
      return false;
    }
    if (frame.every((b, i) => i >= 6 || b === 0xff)) return (rctl & RCTL_BAM) !== 0 || (rctl & RCTL_MPE) !== 0;
    if (rctl & RCTL_MPE) return true;
    // The multicast table: 12 bits of the address, which ones by RCTL.MO.
    const shift = 4 - ((rctl >>> 12) & 3);
    const hash = (((frame[4] >> shift) | (frame[5] << (8 - shift))) & 0xfff);
    return ((r[(MTA >> 2) + (hash >> 5)] >>> (hash & 31)) & 1) !== 0;
  }

  receive(frame: Uint8Array): boolean {
    const r = this.regs, rctl = r[RCTL >> 2];
    // A NIC that is off, unlinked or not allowed to master the bus drops what comes (taken, never held).
    if (!(rctl & RCTL_EN) || !this.busMaster || frame.length < 14) return true;
    if (!this.accepts(frame)) return true;
    let special = 0;
    let status = DESC_DD | RX_EOP | RX_IXSM;
    const vet = r[VET >> 2] & 0xffff;
    const tagged = frame.length >= 18 && ((frame[12] << 8) | frame[13]) === vet;
    if (tagged && rctl & RCTL_VFE) {
      const vid = ((frame[14] << 8) | frame[15]) & 0xfff;
      if (!((r[(VFTA >> 2) + (vid >> 5)] >>> (vid & 31)) & 1)) return true;
    }
    if (tagged && r[CTRL >> 2] & CTRL_VME) {
      special = (frame[14] << 8) | frame[15];
      status |= RX_VP;
      const untagged = new Uint8Array(frame.length - 4);
      untagged.set(frame.subarray(0, 12));
      untagged.set(frame.subarray(16), 12);
      frame = untagged;
    }
    if (frame.length > (rctl & RCTL_LPE ? MAX_LONG_FRAME : MAX_NORMAL_FRAME)) return true;
    const data = this.wireBytes(frame, (rctl & RCTL_SECRC) === 0);
    const size = this.bufferSize();
    const needed = Math.ceil(data.length / size);
    const ring = this.ring(RDBAL, RDBAH, RDLEN, RDH, RDT, 'receive');
    if (!ring) return true;
    const available = (r[RDT >> 2] - r[RDH >> 2] + ring.count) % ring.count;
    if (available < needed) {
      this.receiveRefused = true;
      return false;
    }
    const writeback = new Uint8Array(8);
    const wb = new DataView(writeback.buffer);
    for (let done = 0; done < data.length; done += size) {
      const at = ring.base + r[RDH >> 2] * DESC_SIZE;
      const desc = this.memory.ramView(at, DESC_SIZE)!;
      const dv = new DataView(desc.buffer, desc.byteOffset, DESC_SIZE);
      const chunk = data.subarray(done, Math.min(done + size, data.length));
      if (dv.getUint32(4, true) !== 0 || !this.memory.writeBytes(dv.getUint32(0, true), chunk)) {
        this.ringError(`receive buffer outside RAM`);
        return true;
      }
      const last = done + size >= data.length;
      wb.setUint16(0, chunk.length, true);
      wb.setUint16(2, 0, true);
      writeback[4] = last ? status : status & ~RX_EOP;
      writeback[5] = 0;
      wb.setUint16(6, special, true);
      this.memory.writeBytes(at + 8, writeback);
      r[RDH >> 2] = (r[RDH >> 2] + 1) % ring.count;
    }
    r[GPRC >> 2]++;
    r[TPR >> 2]++;
    r[GORCL >> 2] += data.length;
    let cause = ICR_RXT0;
    // RCTL.RDMTS: interrupt when free descriptors fall to 1/2, 1/4 or 1/8 of the ring.
    const left = (r[RDT >> 2] - r[RDH >> 2] + ring.count) % ring.count;
    if (left <= ring.count >> (1 + ((rctl >>> 8) & 3))) cause |= ICR_RXDMT0;
    this.raise(cause);
    return true;
  }

  /** The frame as the card stores it: padded to the minimum length, with the FCS unless RCTL.SECRC strips it. */
  private wireBytes(frame: Uint8Array, withCrc: boolean): Uint8Array {
    const length = Math.max(frame.length, MIN_FRAME);
    const out = new Uint8Array(length + (withCrc ? 4 : 0));
    out.set(frame);
    if (withCrc) new DataView(out.buffer).setUint32(length, ethernetCrc(out.subarray(0, length)), true);
    return out;
  }

  // Transmit.

  /** Runs the transmit ring from head to tail (TDT written). */
  private transmit(): void {
    const r = this.regs;
    if (!(r[TCTL >> 2] & TCTL_EN) || !this.busMaster) return;
    const ring = this.ring(TDBAL, TDBAH, TDLEN, TDH, TDT, 'transmit');
    if (!ring) return;
    let sent = false;
    // At most one pass around the ring: the tail does not move while we run.
    while (r[TDH >> 2] !== r[TDT >> 2]) {
      const at = ring.base + r[TDH >> 2] * DESC_SIZE;
      const desc = this.memory.readBytes(at, DESC_SIZE)!;
      const cmd = desc[11];
      if (!this.descriptor(desc)) return;
      if (cmd & CMD_RS) this.memory.writeBytes(at + 12, Uint8Array.of(desc[12] | DESC_DD));
      r[TDH >> 2] = (r[TDH >> 2] + 1) % ring.count;
      sent = true;
    }
    if (sent) this.raise(ICR_TXDW | ICR_TXQE);
  }

  /** One transmit descriptor; false when it made the device reset. */
  private descriptor(desc: Uint8Array): boolean {
    const dv = new DataView(desc.buffer, desc.byteOffset, DESC_SIZE);
    const lower = dv.getUint32(8, true);
    const cmd = lower >>> 24;
    const extended = (cmd & CMD_DEXT) !== 0;
    const type = (lower >>> 20) & 0xf;
    if (extended && type === 0) {
      this.txContext = {
        ipcss: desc[0], ipcso: desc[1], ipcse: dv.getUint16(2, true),
        tucss: desc[4], tucso: desc[5], tucse: dv.getUint16(6, true),
        tucmd: cmd, hdrLen: desc[13], mss: dv.getUint16(14, true),
      };
      return true;
    }
    if (extended && type !== 1) return true; // unknown descriptor types carry nothing
    const length = extended ? lower & 0xfffff : lower & 0xffff;
    if (this.txLength === 0 && !this.txBroken) {
      // The first descriptor of a packet decides its offloads.
      this.txPopts = extended ? desc[13] : 0;
      this.txTse = extended && (cmd & CMD_TSE) !== 0 && (this.txContext.tucmd & TUCMD_TSE) !== 0;
    }
    if (dv.getUint32(4, true) !== 0) return this.bufferError();
    if (this.txLength + length > MAX_TX_PACKET) {
      this.txBroken = true; // too big: the packet is dropped at its end
    } else if (!this.txBroken && length > 0) {
      const data = this.memory.ramView(dv.getUint32(0, true), length);
      if (!data) return this.bufferError();
      this.tx.set(data, this.txLength);
      this.txLength += length;
    }
    if (!(cmd & CMD_EOP)) return true;
    if (!this.txBroken && this.txLength > 0) {
      const vlan = cmd & CMD_VLE && this.regs[CTRL >> 2] & CTRL_VME ? dv.getUint16(14, true) : undefined;
      const packet = this.tx.slice(0, this.txLength);
      if (extended) this.sendOffloaded(packet, vlan);
      else {
        if (cmd & CMD_IC) insertChecksum(packet, desc[13], packet.length, desc[10]);
        this.send(packet, vlan);
      }
    }
    this.txLength = 0;
    this.txBroken = false;
    return true;
  }

  private bufferError(): boolean {
    this.ringError('transmit buffer outside RAM');
    return false;
  }

  /** A packet from data descriptors: checksums and segmentation as the context and its options ask. */
  private sendOffloaded(packet: Uint8Array, vlan: number | undefined): void {
    const c = this.txContext;
    const ipv4 = (c.tucmd & TUCMD_IP) !== 0, tcp = (c.tucmd & TUCMD_TCP) !== 0;
    const checksums = (frame: Uint8Array, l4Length: number) => {
      if (this.txPopts & POPTS_IXSM) {
        frame[c.ipcso] = frame[c.ipcso + 1] = 0;
        insertChecksum(frame, c.ipcss, c.ipcse ? c.ipcse + 1 : frame.length, c.ipcso);
      }
      if (this.txPopts & POPTS_TXSM) insertChecksum(frame, c.tucss, c.tucse && !this.txTse ? c.tucse + 1 : frame.length, c.tucso, l4Length);
    };
    if (!this.txTse) {
      checksums(packet, 0);
      this.send(packet, vlan);
      return;
    }
    const segments = segment(packet, { headerLength: c.hdrLen, mss: c.mss, ipStart: c.ipcss, ipv4, l4Start: c.tucss, tcp });
    for (const s of segments) {
      // The driver's seed is the pseudo-header without the length; each segment adds its own.
      checksums(s, s.length - c.tucss);
      this.send(s, vlan);
    }
  }

  private send(frame: Uint8Array, vlan: number | undefined): void {
    if (vlan !== undefined) {
      const tagged = new Uint8Array(frame.length + 4);
      tagged.set(frame.subarray(0, 12));
      tagged[12] = (this.regs[VET >> 2] >> 8) & 0xff;
      tagged[13] = this.regs[VET >> 2] & 0xff;
      tagged[14] = vlan >> 8;
      tagged[15] = vlan & 0xff;
      tagged.set(frame.subarray(12), 16);
      frame = tagged;
    }
    const r = this.regs;
    r[GPTC >> 2]++;
    r[TPT >> 2]++;
    r[GOTCL >> 2] += frame.length;
    this.backend.send(frame);
  }

  override saveState(): VersionedState {
    const base = super.saveState();
    return {
      version: 1,
      fields: {
        ...base.fields,
        regs: this.regs.slice(),
        phy: this.phy.regs.slice(),
        ioAddress: this.ioAddress,
        txContext: { ...this.txContext },
      },
    };
  }

  override restoreState(state: VersionedState): void {
    super.restoreState(state);
    const f = state.fields;
    if (!(f.regs instanceof Uint32Array) || f.regs.length !== this.regs.length) throw new StateError(`${this.id}: bad registers in state`);
    if (!(f.phy instanceof Uint16Array) || f.phy.length !== this.phy.regs.length) throw new StateError(`${this.id}: bad PHY registers in state`);
    this.regs.set(f.regs);
    this.phy.regs.set(f.phy);
    this.ioAddress = typeof f.ioAddress === 'number' ? f.ioAddress >>> 0 : 0;
    const c = f.txContext as Partial<TxContext> | undefined;
    for (const k of Object.keys(this.txContext) as (keyof TxContext)[]) this.txContext[k] = Number(c?.[k] ?? 0) & 0xffff;
    this.txLength = 0;
    this.txBroken = false;
    this.updateIrq();
  }
}
