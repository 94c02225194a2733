/**
 * The PIIX3 IDE controller (PCI 8086:7010) in compatibility mode, as QEMU's `-M pc` has it: two channels at
 * the legacy ports (0x1F0-0x1F7 + 0x3F6 on IRQ 14, 0x170-0x177 + 0x376 on IRQ 15), a bus-master DMA block
 * at BAR4, and up to four drives: ATA hard disks and ATAPI CD/DVD-ROMs.
 *
 * Disk I/O is asynchronous. A command that needs the image sets BSY and starts the request; its completion
 * (a later turn of the event loop) fills the buffer, sets DRQ or finishes the command and raises the
 * interrupt. The guest polls the status or waits for the interrupt meanwhile. Every drive has a generation
 * number: a reset or a cancelled DMA bumps it, and completions of older requests are dropped.
 */
import { errorMessage } from '../../base/errors.js';
import { debugLog } from '../../base/log.js';
import type { VersionedState } from '../../base/state.js';
import { assign, bool, bytes, int, list, oneOf, pick, record, stateSchema, u32, u8, uint53, type ValueOf } from '../../base/state-schema.js';
import type { BlockDriver } from '../../block/index.js';
import type { AccessSize } from '../../memory/bus-device.js';
import type { PhysicalMemory } from '../../memory/physical-memory.js';
import type { PortIoBus } from '../../memory/port-io-bus.js';
import type { IrqLine } from '../device.js';
import { PCI_COMMAND, PCI_COMMAND_IO, PCI_COMMAND_MASTER, PCI_FUNCTION_FIELDS, PciFunction } from '../pci/pci-function.js';
import {
  type AtapiState, CD_SECTOR_SIZE, Sense, atapiCommand, setSense,
} from './atapi.js';
import {
  type BiosTranslation, type Chs, type DiskGeometry, MAX_MULT_SECTORS, autoTranslation, chsForSize, identifyDisk, identifyPacketDevice,
} from './identify.js';

/** One drive as the machine configures it. A CD-ROM is read-only; `image: null` is an empty tray. */
export type IdeDrive =
  /** `geometry`: from guessDiskGeometry (QEMU reads the MBR for it); default: the standard one for the size. */
  | { kind: 'disk'; image: BlockDriver; geometry?: DiskGeometry }
  | { kind: 'cdrom'; image: BlockDriver | null };

export interface Piix3IdeOptions {
  io: PortIoBus;
  memory: PhysicalMemory;
  /** IRQ 14 (primary) and IRQ 15 (secondary). */
  irqs: [IrqLine, IrqLine];
  /** Primary master, primary slave, secondary master, secondary slave. */
  drives: (IdeDrive | undefined)[];
}

/** What the machine reports about a drive position (e.g. `info block`). */
export interface IdeDriveInfo {
  index: number;
  bus: number;
  unit: number;
  kind: 'disk' | 'cdrom';
  /** Bytes of the medium (0: empty tray). */
  size: number;
  inserted: boolean;
  readOnly: boolean;
  trayOpen: boolean;
  locked: boolean;
  /** CHS a disk reports in IDENTIFY, and the BIOS translation for it. */
  geometry?: Chs;
  translation?: BiosTranslation;
}

// Status register.
const ST_ERR = 0x01, ST_DRQ = 0x08, ST_DSC = 0x10, ST_DRDY = 0x40, ST_BSY = 0x80;
// Error register.
const ER_ABRT = 0x04, ER_UNC = 0x40;
// Device control.
const DC_NIEN = 0x02, DC_SRST = 0x04, DC_HOB = 0x80;
// Bus master command and status.
const BM_START = 0x01, BM_TO_MEMORY = 0x08;
const BM_ACTIVE = 0x01, BM_ERROR = 0x02, BM_INT = 0x04;
// ATAPI interrupt reason (sector count register).
const IR_CD = 1, IR_IO = 2;

const SECTOR = 512;
/** Buffer of a drive: the most one request step moves (256 ATA sectors, 64 CD sectors). */
const BUF_SIZE = 128 * 1024;
const ATA_CHUNK = BUF_SIZE / SECTOR;
const CD_CHUNK = BUF_SIZE / CD_SECTOR_SIZE;

const FIRMWARE = '2.5+';

/** What the data port does. */
const enum Xfer { NONE = 0, IN = 1, OUT = 2 }
/** What happens when the current DRQ block has been moved. */
type Done = 'stop' | 'ata-read' | 'ata-write' | 'packet' | 'atapi';
/** The asynchronous request in flight (what a restored state restarts). */
type Op = 'none' | 'ata-read' | 'ata-write' | 'flush' | 'atapi-read';
/** The DMA a drive waits for or runs. */
type Dma = 'none' | 'ata-read' | 'ata-write' | 'atapi-read' | 'atapi-reply';

interface PrdCursor {
  /** Address of the next descriptor. */
  next: number;
  addr: number;
  left: number;
  /** The current region came from the descriptor marked end of table. */
  last: boolean;
}

class Unit {
  // Configuration.
  kind: 'none' | 'disk' | 'cdrom';
  image: BlockDriver | null;
  geometry: Chs = { cylinders: 0, heads: 0, sectors: 0 };
  translation: BiosTranslation = 'none';
  totalSectors = 0;
  readonly serial: string;

  // Task file (the previous value of each register is its "HOB" byte for 48-bit commands).
  feature = 0; nsector = 0; sector = 0; lcyl = 0; hcyl = 0;
  hobFeature = 0; hobNsector = 0; hobSector = 0; hobLcyl = 0; hobHcyl = 0;
  select = 0xa0;
  status = 0;
  error = 0;

  multSectors = MAX_MULT_SECTORS;
  xferMode = 0;
  writeCache = true;

  // Data transfer.
  buf = new Uint8Array(BUF_SIZE);
  pos = 0;
  end = 0;
  xfer = Xfer.NONE;
  done: Done = 'stop';
  /** Valid bytes of read-ahead data: buf[head, len). */
  head = 0;
  len = 0;
  /** Request: next sector to deliver/write, sectors (ATA) or bytes (ATAPI) still to move. */
  lba = 0;
  remaining = 0;
  /** ATA: 48-bit command; sectors per DRQ block. ATAPI: next sector and count still to read from the image. */
  ext = false;
  blockSectors = 1;
  fetchLba = 0;
  fetchLeft = 0;
  op: Op = 'none';
  dma: Dma = 'none';
  gen = 0;

  // ATAPI.
  atapiDma = false;
  bcl = 0;
  /** The packet command reads sectors (else its reply is in the buffer). */
  sectorRead = false;
  readonly atapi: AtapiState;

  constructor(drive: IdeDrive | undefined, index: number) {
    this.kind = drive?.kind ?? 'none';
    this.image = drive?.image ?? null;
    this.serial = `QM${String(index + 1).padStart(5, '0')}`;
    this.atapi = {
      sectors: 0, hasMedium: false, trayOpen: false, trayLocked: false, senseKey: 0, asc: 0, ascq: 0,
      unitAttention: false, mediaEvent: 0, model: 'QEMU DVD-ROM', firmware: FIRMWARE,
    };
    if (drive?.kind === 'disk') {
      this.totalSectors = Math.floor(drive.image.virtualSize / SECTOR);
      const g = drive.geometry;
      const valid = g && [g.cylinders, g.heads, g.sectors].every((v) => Number.isInteger(v) && v > 0) && g.heads <= 16 && g.sectors <= 255 && g.cylinders <= 65535;
      this.geometry = valid ? { cylinders: g.cylinders, heads: g.heads, sectors: g.sectors } : chsForSize(this.totalSectors);
      this.translation = (valid && g.translation) || autoTranslation(this.geometry);
    } else if (drive?.kind === 'cdrom') this.setMedium(drive.image);
  }

  get present(): boolean {
    return this.kind !== 'none';
  }

  setMedium(image: BlockDriver | null): void {
    this.image = image;
    this.atapi.hasMedium = image !== null;
    this.atapi.sectors = image ? Math.floor(image.virtualSize / CD_SECTOR_SIZE) : 0;
  }

  /** Device signature in the task file (after reset, diagnostics, or an aborted IDENTIFY on ATAPI). */
  setSignature(): void {
    this.select &= 0xf0;
    this.nsector = 1;
    this.sector = 1;
    if (this.kind === 'cdrom') {
      this.lcyl = 0x14;
      this.hcyl = 0xeb;
    } else if (this.kind === 'disk') {
      this.lcyl = 0;
      this.hcyl = 0;
    } else {
      this.lcyl = 0xff;
      this.hcyl = 0xff;
    }
  }

  /** Power-on / reset state of the device. */
  reset(): void {
    this.gen++;
    this.feature = this.nsector = this.sector = this.lcyl = this.hcyl = 0;
    this.hobFeature = this.hobNsector = this.hobSector = this.hobLcyl = this.hobHcyl = 0;
    this.multSectors = MAX_MULT_SECTORS;
    this.select = 0xa0;
    this.status = this.present ? ST_DRDY | ST_DSC : 0;
    this.error = 0;
    this.stopTransfer();
    this.head = this.len = 0;
    this.lba = this.remaining = 0;
    this.fetchLba = this.fetchLeft = 0;
    this.ext = false;
    this.op = 'none';
    this.dma = 'none';
    this.atapiDma = false;
    this.bcl = 0;
    const a = this.atapi;
    setSense(a, 0, 0, 0);
    a.trayLocked = false;
    a.trayOpen = false;
    a.unitAttention = false;
    this.setSignature();
  }

  stopTransfer(): void {
    this.xfer = Xfer.NONE;
    this.pos = this.end = 0;
    this.done = 'stop';
    this.status &= ~ST_DRQ;
  }

  startTransfer(xfer: Xfer, from: number, length: number, done: Done): void {
    this.xfer = xfer;
    this.pos = from;
    this.end = from + length;
    this.done = done;
    this.status |= ST_DRQ;
  }
}

/** Context the channels need from the controller. */
interface Host {
  readonly memory: PhysicalMemory;
  readonly busMaster: boolean;
  track(p: Promise<unknown>): void;
}

class Channel {
  readonly units: [Unit, Unit];
  unit = 0;
  devctl = 0;
  irqPending = false;
  private line = false;
  bmCmd = 0;
  bmStatus = 0;
  bmPrd = 0;
  cursor: PrdCursor = { next: 0, addr: 0, left: 0, last: false };
  /** A DMA transfer loop is running (for a drive whose `dma` is set). */
  dmaRunning = false;

  constructor(readonly index: number, private readonly host: Host, private readonly irq: IrqLine, drives: (IdeDrive | undefined)[]) {
    this.units = [new Unit(drives[0], 2 * index), new Unit(drives[1], 2 * index + 1)];
  }

  get selected(): Unit {
    return this.units[this.unit];
  }

  private get anyPresent(): boolean {
    return this.units[0].present || this.units[1].present;
  }

  // ---- interrupts ---------------------------------------------------------------------------------

  raise(): void {
    this.irqPending = true;
    this.bmStatus |= BM_INT;
    this.updateLine();
  }

  lower(): void {
    this.irqPending = false;
    this.updateLine();
  }

  updateLine(): void {
    const level = this.irqPending && (this.devctl & DC_NIEN) === 0;
    if (level === this.line) return;
    this.line = level;
    this.irq.set(level);
  }

  // ---- reset --------------------------------------------------------------------------------------

  reset(): void {
    for (const u of this.units) u.reset();
    this.unit = 0;
    this.devctl = 0;
    this.bmCmd = 0;
    this.bmStatus = 0;
    this.bmPrd = 0;
    this.cursor = { next: 0, addr: 0, left: 0, last: false };
    this.dmaRunning = false;
    this.irqPending = false;
    this.line = false;
    this.irq.set(false);
  }

  // ---- command block registers --------------------------------------------------------------------

  read(offset: number, size: AccessSize): number {
    if (offset === 0) return this.readData(size);
    let v = 0;
    for (let i = 0; i < size && offset + i < 8; i++) v |= this.readRegister(offset + i) << (8 * i);
    return v >>> 0;
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (offset === 0) return this.writeData(size, value);
    for (let i = 0; i < size && offset + i < 8; i++) this.writeRegister(offset + i, (value >>> (8 * i)) & 0xff);
  }

  private readRegister(reg: number): number {
    const u = this.selected;
    const hob = (this.devctl & DC_HOB) !== 0;
    const absent = !this.anyPresent || (this.unit === 1 && !u.present);
    switch (reg) {
      case 1: return absent ? 0 : hob ? u.hobFeature : u.error;
      case 2: return absent ? 0 : hob ? u.hobNsector : u.nsector;
      case 3: return absent ? 0 : hob ? u.hobSector : u.sector;
      case 4: return absent ? 0 : hob ? u.hobLcyl : u.lcyl;
      case 5: return absent ? 0 : hob ? u.hobHcyl : u.hcyl;
      case 6: return this.anyPresent ? u.select : 0;
      default: {
        const st = absent ? 0 : u.status;
        this.lower();
        return st;
      }
    }
  }

  private writeRegister(reg: number, v: number): void {
    const sel = this.selected;
    if (reg === 7) return this.command(v);
    // The task file is ignored while the selected device is busy or transferring data.
    if (sel.status & (ST_BSY | ST_DRQ)) return;
    this.devctl &= ~DC_HOB;
    for (const u of this.units) {
      switch (reg) {
        case 1: u.hobFeature = u.feature; u.feature = v; break;
        case 2: u.hobNsector = u.nsector; u.nsector = v; break;
        case 3: u.hobSector = u.sector; u.sector = v; break;
        case 4: u.hobLcyl = u.lcyl; u.lcyl = v; break;
        case 5: u.hobHcyl = u.hcyl; u.hcyl = v; break;
        case 6: u.select = v | 0xa0; break;
      }
    }
    if (reg === 6) this.unit = (v >> 4) & 1;
  }

  readAltStatus(): number {
    const u = this.selected;
    return !this.anyPresent || (this.unit === 1 && !u.present) ? 0 : u.status;
  }

  writeDeviceControl(v: number): void {
    const was = this.devctl;
    this.devctl = v;
    if (!(was & DC_SRST) && v & DC_SRST) {
      // Reset asserted: both devices busy until it is released.
      this.cancelDma();
      for (const u of this.units) {
        u.gen++;
        u.op = 'none';
        u.dma = 'none';
        u.stopTransfer();
        if (u.present) {
          u.status = ST_BSY | ST_DSC;
          u.error = 0x01;
        }
      }
      this.irqPending = false;
    } else if (was & DC_SRST && !(v & DC_SRST)) {
      for (const u of this.units) {
        u.reset();
        u.status = u.kind === 'disk' ? ST_DRDY | ST_DSC : 0; // ATAPI devices leave DRDY clear
        u.error = 0x01;
      }
      this.unit = 0;
    }
    this.updateLine();
  }

  // ---- data port ----------------------------------------------------------------------------------

  private readData(size: AccessSize): number {
    const u = this.selected;
    if (u.xfer !== Xfer.IN) return 0;
    let v = 0;
    for (let i = 0; i < size; i++) if (u.pos + i < u.end) v |= u.buf[u.pos + i] << (8 * i);
    u.pos += size;
    if (u.pos >= u.end) this.blockDone(u);
    return v >>> 0;
  }

  private writeData(size: AccessSize, value: number): void {
    const u = this.selected;
    if (u.xfer !== Xfer.OUT) return;
    for (let i = 0; i < size; i++) if (u.pos + i < u.end) u.buf[u.pos + i] = (value >>> (8 * i)) & 0xff;
    u.pos += size;
    if (u.pos >= u.end) this.blockDone(u);
  }

  private blockDone(u: Unit): void {
    const done = u.done;
    const end = u.end;
    u.stopTransfer();
    switch (done) {
      case 'stop':
        u.status = ST_DRDY | ST_DSC;
        break;
      case 'ata-read':
        this.ataReadBlockDone(u, end);
        break;
      case 'ata-write':
        this.ataWriteBlock(u);
        break;
      case 'packet':
        this.packet(u);
        break;
      case 'atapi':
        u.remaining -= end - u.head;
        u.head = end;
        this.atapiPioNext(u);
        break;
    }
  }

  // ---- ATA commands -------------------------------------------------------------------------------

  private command(cmd: number): void {
    const u = this.selected;
    if (!u.present) {
      if (this.unit === 1) return; // commands to an absent slave are ignored
      return;
    }
    // Only DEVICE RESET to an ATAPI device is accepted while busy or transferring.
    if (u.status & (ST_BSY | ST_DRQ) && !(cmd === 0x08 && u.kind === 'cdrom')) return;
    this.devctl &= ~DC_HOB;
    this.lower();
    u.error = 0;
    debugLog('ide', `ide${this.index}.${this.unit} command 0x${cmd.toString(16)}`);
    if (u.kind === 'cdrom') this.atapiDeviceCommand(u, cmd);
    else this.diskCommand(u, cmd);
  }

  private complete(u: Unit): void {
    u.status = ST_DRDY | ST_DSC;
    this.raise();
  }

  private abort(u: Unit): void {
    u.stopTransfer();
    u.status = ST_DRDY | ST_ERR;
    u.error = ER_ABRT;
    this.raise();
  }

  private diskCommand(u: Unit, cmd: number): void {
    switch (cmd) {
      case 0xec: // IDENTIFY DEVICE
        u.buf.set(identifyDisk({
          totalSectors: u.totalSectors, geometry: u.geometry, serial: u.serial, model: 'QEMU HARDDISK',
          firmware: FIRMWARE, multSectors: u.multSectors, xferMode: u.xferMode, writeCache: u.writeCache,
        }));
        u.status = ST_DRDY | ST_DSC;
        u.startTransfer(Xfer.IN, 0, SECTOR, 'stop');
        this.raise();
        return;
      case 0x20: case 0x21: return this.ataRw(u, false, false, 1);
      case 0x24: return this.ataRw(u, true, false, 1);
      case 0x30: case 0x31: return this.ataRw(u, false, true, 1);
      case 0x34: return this.ataRw(u, true, true, 1);
      case 0xc4: case 0x29: case 0xc5: case 0x39:
        if (!u.multSectors) return this.abort(u);
        return this.ataRw(u, cmd === 0x29 || cmd === 0x39, cmd === 0xc5 || cmd === 0x39, u.multSectors);
      case 0xc8: case 0xc9: return this.ataDma(u, false, false);
      case 0x25: return this.ataDma(u, true, false);
      case 0xca: case 0xcb: return this.ataDma(u, false, true);
      case 0x35: return this.ataDma(u, true, true);
      case 0x40: case 0x41: case 0x42: { // READ VERIFY SECTORS (EXT)
        const r = this.lbaCount(u, cmd === 0x42);
        if (!r || r.lba + r.count > u.totalSectors) return this.abort(u);
        this.setLba(u, r.lba + r.count - 1);
        return this.complete(u);
      }
      case 0xc6: { // SET MULTIPLE MODE
        const n = u.nsector;
        if (n !== 0 && (n > MAX_MULT_SECTORS || (n & (n - 1)) !== 0)) return this.abort(u);
        u.multSectors = n;
        return this.complete(u);
      }
      case 0xe7: case 0xea: return this.flush(u);
      case 0xef: return this.setFeatures(u);
      case 0x91: // INITIALIZE DEVICE PARAMETERS: the geometry stays what IDENTIFY reports
        return this.complete(u);
      case 0xf8: case 0x27: { // READ NATIVE MAX ADDRESS (EXT)
        u.ext = cmd === 0x27;
        this.setLba(u, Math.max(0, u.totalSectors - 1));
        return this.complete(u);
      }
      case 0x90: return this.diagnostic(u);
      case 0x70: // SEEK
      case 0xe0: case 0xe1: case 0xe2: case 0xe3: case 0xe6: // standby / idle / sleep
        return this.complete(u);
      case 0xe5: // CHECK POWER MODE: active or idle
        u.nsector = 0xff;
        return this.complete(u);
      default:
        if (cmd >= 0x10 && cmd <= 0x1f) return this.complete(u); // RECALIBRATE
        // IDENTIFY PACKET DEVICE, PACKET, DEVICE RESET, SMART, ...: not a disk's.
        return this.abort(u);
    }
  }

  private atapiDeviceCommand(u: Unit, cmd: number): void {
    switch (cmd) {
      case 0xa1: // IDENTIFY PACKET DEVICE
        u.buf.set(identifyPacketDevice({ serial: u.serial, model: 'QEMU DVD-ROM', firmware: FIRMWARE, xferMode: u.xferMode }));
        u.status = ST_DRDY | ST_DSC;
        u.startTransfer(Xfer.IN, 0, SECTOR, 'stop');
        this.raise();
        return;
      case 0xa0: // PACKET
        u.atapiDma = (u.feature & 1) !== 0;
        u.bcl = u.lcyl | (u.hcyl << 8);
        u.nsector = (u.nsector & ~7) | IR_CD;
        u.status = ST_DRDY | ST_DSC;
        u.startTransfer(Xfer.OUT, 0, 12, 'packet');
        return;
      case 0x08: // DEVICE RESET
        this.cancelDmaOf(u);
        u.gen++;
        u.op = 'none';
        u.dma = 'none';
        u.stopTransfer();
        u.setSignature();
        u.status = 0;
        u.error = 0x01;
        return;
      case 0x90: return this.diagnostic(u);
      case 0xef: return this.setFeatures(u);
      case 0xe5:
        u.nsector = 0xff;
        return this.complete(u);
      case 0xe0: case 0xe1: case 0xe2: case 0xe3: case 0xe6:
        return this.complete(u);
      default:
        // IDENTIFY DEVICE and the disk commands: aborted with the signature, so that hosts find ATAPI.
        u.setSignature();
        return this.abort(u);
    }
  }

  private diagnostic(u: Unit): void {
    u.setSignature();
    u.status = u.kind === 'cdrom' ? 0 : ST_DRDY | ST_DSC;
    u.error = 0x01;
    this.raise();
  }

  private setFeatures(u: Unit): void {
    switch (u.feature) {
      case 0x02: u.writeCache = true; break;
      case 0x82: u.writeCache = false; break;
      case 0x03: {
        const kind = u.nsector >> 3;
        if (kind !== 0 && kind !== 1 && kind !== 2 && kind !== 4 && kind !== 8) return this.abort(u);
        u.xferMode = u.nsector;
        break;
      }
      case 0x05: case 0x85: case 0x42: case 0xc2: case 0x66: case 0xcc: case 0xaa: case 0x55:
      case 0x31: case 0x69: case 0x67: case 0x96: case 0x9a:
        break;
      default:
        return this.abort(u);
    }
    this.complete(u);
  }

  /** The address and sector count of a read/write command (LBA48, LBA28 or CHS), undefined if invalid. */
  private lbaCount(u: Unit, ext: boolean): { lba: number; count: number } | undefined {
    u.ext = ext;
    const low24 = (u.hcyl << 16) | (u.lcyl << 8) | u.sector;
    if (ext) {
      const high = (u.hobHcyl << 16) | (u.hobLcyl << 8) | u.hobSector;
      return { lba: high * 2 ** 24 + low24, count: ((u.hobNsector << 8) | u.nsector) || 65536 };
    }
    const count = u.nsector || 256;
    if (u.select & 0x40) return { lba: ((u.select & 0x0f) << 24 | low24) >>> 0, count };
    const { heads, sectors } = u.geometry;
    const cyl = (u.hcyl << 8) | u.lcyl, head = u.select & 0x0f;
    if (u.sector === 0 || u.sector > sectors || head >= heads) return undefined;
    return { lba: (cyl * heads + head) * sectors + u.sector - 1, count };
  }

  /** Puts a sector address back into the task file (the last sector moved, as after a command). */
  private setLba(u: Unit, lba: number): void {
    if (u.ext || u.select & 0x40) {
      u.sector = lba & 0xff;
      u.lcyl = (lba >>> 8) & 0xff;
      u.hcyl = (lba >>> 16) & 0xff;
      const high = Math.floor(lba / 2 ** 24);
      if (u.ext) {
        u.hobSector = high & 0xff;
        u.hobLcyl = (high >>> 8) & 0xff;
        u.hobHcyl = (high >>> 16) & 0xff;
      } else u.select = (u.select & 0xf0) | (high & 0x0f);
      return;
    }
    const { heads, sectors } = u.geometry;
    const cyl = Math.floor(lba / (heads * sectors));
    const r = lba % (heads * sectors);
    u.lcyl = cyl & 0xff;
    u.hcyl = (cyl >> 8) & 0xff;
    u.select = (u.select & 0xf0) | Math.floor(r / sectors);
    u.sector = (r % sectors) + 1;
  }

  private ataRw(u: Unit, ext: boolean, write: boolean, blockSectors: number): void {
    const r = this.lbaCount(u, ext);
    if (!r || r.lba + r.count > u.totalSectors) return this.abort(u);
    u.lba = r.lba;
    u.remaining = r.count;
    u.blockSectors = blockSectors;
    u.head = u.len = 0;
    if (write) {
      u.status = ST_DRDY | ST_DSC;
      u.startTransfer(Xfer.OUT, 0, Math.min(blockSectors, u.remaining) * SECTOR, 'ata-write');
    } else {
      u.fetchLba = r.lba;
      u.fetchLeft = r.count;
      this.ataReadNext(u);
    }
  }

  /** PIO read: the next DRQ block from the read-ahead buffer, filling it first when empty. */
  private ataReadNext(u: Unit): void {
    if (u.head >= u.len) return this.ataFetch(u);
    const n = Math.min(u.blockSectors, u.remaining, (u.len - u.head) / SECTOR);
    u.status = ST_DRDY | ST_DSC;
    this.setLba(u, u.lba + n - 1);
    u.startTransfer(Xfer.IN, u.head, n * SECTOR, 'ata-read');
    this.raise();
  }

  private ataFetch(u: Unit): void {
    const n = Math.min(u.fetchLeft, ATA_CHUNK);
    const gen = u.gen;
    u.op = 'ata-read';
    u.status = ST_DRDY | ST_DSC | ST_BSY;
    this.io(u.image!.read(u.fetchLba * SECTOR, n * SECTOR), (data) => {
      if (u.gen !== gen) return;
      u.op = 'none';
      if (!data) return this.ioError(u, false);
      u.buf.set(data, 0);
      u.head = 0;
      u.len = n * SECTOR;
      u.fetchLba += n;
      u.fetchLeft -= n;
      this.ataReadNext(u);
    });
  }

  private ataReadBlockDone(u: Unit, end: number): void {
    const n = (end - u.head) / SECTOR;
    u.head = end;
    u.lba += n;
    u.remaining -= n;
    if (u.remaining <= 0) {
      u.status = ST_DRDY | ST_DSC;
      return;
    }
    this.ataReadNext(u);
  }

  /** PIO write: the host filled a DRQ block; write it, then ask for the next one or finish. */
  private ataWriteBlock(u: Unit): void {
    const n = Math.min(u.blockSectors, u.remaining);
    const gen = u.gen;
    u.op = 'ata-write';
    u.status = ST_DRDY | ST_DSC | ST_BSY;
    const data = u.buf.slice(0, n * SECTOR);
    this.io(this.writeImage(u, u.lba * SECTOR, data), (ok) => {
      if (u.gen !== gen) return;
      u.op = 'none';
      if (ok === undefined) return this.ioError(u, true);
      this.setLba(u, u.lba + n - 1);
      u.lba += n;
      u.remaining -= n;
      u.status = ST_DRDY | ST_DSC;
      if (u.remaining > 0) u.startTransfer(Xfer.OUT, 0, Math.min(u.blockSectors, u.remaining) * SECTOR, 'ata-write');
      this.raise();
    });
  }

  private writeImage(u: Unit, offset: number, data: Uint8Array): Promise<void> {
    const image = u.image!;
    if (image.readOnly) return Promise.reject(new Error('read-only image'));
    return image.write(offset, data).then(() => (u.writeCache ? undefined : image.flush()));
  }

  private flush(u: Unit): void {
    const gen = u.gen;
    u.op = 'flush';
    u.status = ST_DRDY | ST_DSC | ST_BSY;
    const image = u.image!;
    this.io(image.readOnly ? Promise.resolve() : image.flush(), (ok) => {
      if (u.gen !== gen) return;
      u.op = 'none';
      if (ok === undefined) return this.ioError(u, true);
      this.complete(u);
    });
  }

  private ioError(u: Unit, write: boolean): void {
    u.stopTransfer();
    u.status = ST_DRDY | ST_ERR;
    u.error = write ? ER_ABRT : ER_UNC | ER_ABRT;
    this.raise();
  }

  /**
   * Runs an I/O promise; the callback gets its value, or undefined when it failed (an I/O error of the
   * image is an ATA error for the guest, never an exception for the host).
   */
  private io<T>(p: Promise<T>, then: (value: T | undefined) => void): void {
    const q = p
      .then(
        (v) => then(v === undefined ? (null as T) : v),
        (e: unknown) => {
          debugLog('ide', `ide${this.index}: I/O error: ${errorMessage(e)}`);
          then(undefined);
        },
      )
      .catch((e: unknown) => {
        // A bug in the completion path: report it, never let it take the process down.
        process.stderr.write(`tsvm: ide${this.index}: internal error: ${errorMessage(e)}\n`);
      });
    this.host.track(q);
  }

  // ---- DMA ----------------------------------------------------------------------------------------

  private ataDma(u: Unit, ext: boolean, write: boolean): void {
    const r = this.lbaCount(u, ext);
    if (!r || r.lba + r.count > u.totalSectors) return this.abort(u);
    u.lba = r.lba;
    u.remaining = r.count;
    u.dma = write ? 'ata-write' : 'ata-read';
    u.status = ST_DRDY | ST_DSC | ST_DRQ;
    this.tryDma();
  }

  /** Starts the transfer of a drive waiting for DMA once the bus master is started. */
  tryDma(): void {
    if (!(this.bmCmd & BM_START) || this.dmaRunning) return;
    const u = this.units.find((x) => x.dma !== 'none');
    if (!u) return;
    this.dmaRunning = true;
    this.runDma(u);
  }

  writeBm(offset: number, v: number): void {
    switch (offset) {
      case 0: {
        const was = this.bmCmd;
        this.bmCmd = v & (BM_START | BM_TO_MEMORY);
        if (!(was & BM_START) && v & BM_START) {
          this.bmStatus |= BM_ACTIVE;
          this.cursor = { next: this.bmPrd, addr: 0, left: 0, last: false };
          this.tryDma();
        } else if (was & BM_START && !(v & BM_START)) {
          this.cancelDma();
          this.bmStatus &= ~BM_ACTIVE;
        }
        break;
      }
      case 2:
        this.bmStatus = (this.bmStatus & ~(v & (BM_ERROR | BM_INT)) & ~0x60) | (v & 0x60);
        break;
      case 4: case 5: case 6: case 7: {
        const shift = 8 * (offset - 4);
        this.bmPrd = ((this.bmPrd & ~(0xff << shift)) | ((v & 0xff) << shift)) >>> 0;
        this.bmPrd = (this.bmPrd & ~3) >>> 0;
        break;
      }
    }
  }

  readBm(offset: number): number {
    switch (offset) {
      case 0: return this.bmCmd;
      case 2: return this.bmStatus;
      case 4: case 5: case 6: case 7: return (this.bmPrd >>> (8 * (offset - 4))) & 0xff;
      default: return 0;
    }
  }

  /** The guest stopped the bus master (or reset the channel) while a transfer ran: it is abandoned. */
  private cancelDma(): void {
    for (const u of this.units) this.cancelDmaOf(u);
  }

  private cancelDmaOf(u: Unit): void {
    if (u.dma === 'none') return;
    const running = this.dmaRunning;
    u.dma = 'none';
    this.dmaRunning = false;
    if (!running) return;
    u.gen++;
    u.op = 'none';
    u.stopTransfer();
    u.status = ST_DRDY | ST_ERR;
    u.error = ER_ABRT;
  }

  /**
   * Moves `length` bytes between guest memory and a buffer along the PRD table from cursor `c` (which it
   * advances). 'error': a descriptor or region is not RAM or bus mastering is off (nothing is written to
   * that region); 'short': the table ended first.
   */
  private walkPrd(c: PrdCursor, length: number, toMemory: boolean, data: Uint8Array): 'ok' | 'error' | 'short' {
    const memory = this.host.memory;
    if (!this.host.busMaster) return 'error';
    let off = 0;
    while (off < length) {
      if (c.left === 0) {
        if (c.last) return 'short';
        const e = memory.readBytes(c.next, 8);
        if (!e) return 'error';
        c.addr = ((e[0] | (e[1] << 8) | (e[2] << 16) | (e[3] << 24)) & ~1) >>> 0;
        c.left = ((e[4] | (e[5] << 8)) & 0xfffe) || 0x10000;
        c.last = (e[7] & 0x80) !== 0;
        c.next = (c.next + 8) >>> 0;
        continue;
      }
      const n = Math.min(c.left, length - off);
      if (toMemory) {
        if (!memory.writeBytes(c.addr, data.subarray(off, off + n))) return 'error';
      } else {
        const src = memory.ramView(c.addr, n);
        if (!src) return 'error';
        data.set(src, off);
      }
      c.addr += n;
      c.left -= n;
      off += n;
    }
    return 'ok';
  }

  /** The DMA loop of one command: chunk by chunk (async image I/O), then completion or an error. */
  private runDma(u: Unit): void {
    const gen = u.gen;
    const sectorSize = u.kind === 'cdrom' ? CD_SECTOR_SIZE : SECTOR;
    const alive = () => u.gen === gen && this.dmaRunning;
    const fail = (result: 'error' | 'short' | 'io', write = false) => {
      this.dmaRunning = false;
      u.dma = 'none';
      u.op = 'none';
      this.bmStatus = (this.bmStatus & ~BM_ACTIVE) | (result === 'error' ? BM_ERROR : 0);
      if (u.kind === 'cdrom') {
        if (result === 'io') this.atapiError(u, Sense.MEDIUM_ERROR, 0x11, 0);
        else this.atapiError(u, Sense.ILLEGAL_REQUEST, 0, 0);
      } else if (result === 'io') this.ioError(u, write);
      else this.abort(u);
    };
    const finish = () => {
      this.dmaRunning = false;
      u.dma = 'none';
      u.op = 'none';
      this.bmStatus &= ~BM_ACTIVE;
      if (u.kind === 'cdrom') this.atapiOk(u);
      else this.complete(u);
    };
    const step = (): void => {
      if (!alive()) return;
      if (u.dma === 'atapi-reply') {
        const r = this.walkPrd(this.cursor, u.remaining, true, u.buf);
        if (r !== 'ok') return fail(r);
        u.remaining = 0;
        return finish();
      }
      if (u.remaining <= 0) return finish();
      if (u.dma === 'ata-write') {
        const n = Math.min(u.remaining, ATA_CHUNK);
        const c = { ...this.cursor };
        const data = new Uint8Array(n * SECTOR);
        const r = this.walkPrd(c, data.length, false, data);
        if (r !== 'ok') return fail(r);
        u.op = 'none';
        this.io(this.writeImage(u, u.lba * SECTOR, data), (ok) => {
          if (!alive()) return;
          if (ok === undefined) return fail('io', true);
          this.cursor = c;
          this.setLba(u, u.lba + n - 1);
          u.lba += n;
          u.remaining -= n;
          step();
        });
        return;
      }
      // Reads (ATA sectors, or CD sectors where `remaining` counts bytes).
      const cd = u.dma === 'atapi-read';
      const n = cd ? Math.min(u.fetchLeft, CD_CHUNK) : Math.min(u.remaining, ATA_CHUNK);
      const lba = cd ? u.fetchLba : u.lba;
      this.io(u.image!.read(lba * sectorSize, n * sectorSize), (data) => {
        if (!alive()) return;
        if (!data) return fail('io');
        const r = this.walkPrd(this.cursor, data.length, true, data);
        if (r !== 'ok') return fail(r);
        if (cd) {
          u.fetchLba += n;
          u.fetchLeft -= n;
          u.remaining -= n * CD_SECTOR_SIZE;
        } else {
          this.setLba(u, u.lba + n - 1);
          u.lba += n;
          u.remaining -= n;
        }
        step();
      });
    };
    step();
  }

  // ---- ATAPI --------------------------------------------------------------------------------------

  private packet(u: Unit): void {
    const cdb = u.buf.slice(0, 12);
    debugLog('ide', `ide${this.index}.${this.unit} packet ${Array.from(cdb, (b) => b.toString(16).padStart(2, '0')).join(' ')}`);
    const r = atapiCommand(u.atapi, cdb);
    switch (r.kind) {
      case 'ok':
        return this.atapiOk(u);
      case 'error':
        return this.atapiError(u, r.key, r.asc, r.ascq ?? 0);
      case 'data':
        u.buf.set(r.data, 0);
        u.head = 0;
        u.len = r.data.length;
        u.remaining = r.data.length;
        u.fetchLeft = 0;
        u.sectorRead = false;
        if (u.remaining === 0) return this.atapiOk(u);
        if (u.atapiDma) return this.atapiStartDma(u, 'atapi-reply');
        return this.atapiPioNext(u);
      case 'read':
        u.fetchLba = r.lba;
        u.fetchLeft = r.count;
        u.remaining = r.count * CD_SECTOR_SIZE;
        u.head = u.len = 0;
        u.sectorRead = true;
        if (u.atapiDma) return this.atapiStartDma(u, 'atapi-read');
        return this.atapiPioNext(u);
    }
  }

  private atapiStartDma(u: Unit, dma: Dma): void {
    u.dma = dma;
    u.status = ST_DRDY | ST_DSC | ST_DRQ;
    u.nsector = (u.nsector & ~7) | IR_IO;
    this.tryDma();
  }

  atapiOk(u: Unit): void {
    u.stopTransfer();
    setSense(u.atapi, Sense.NO_SENSE, 0, 0);
    u.error = 0;
    u.status = ST_DRDY | ST_DSC;
    u.nsector = (u.nsector & ~7) | IR_IO | IR_CD;
    this.raise();
  }

  atapiError(u: Unit, key: number, asc: number, ascq: number): void {
    u.stopTransfer();
    setSense(u.atapi, key, asc, ascq);
    u.error = key << 4;
    u.status = ST_DRDY | ST_ERR;
    u.nsector = (u.nsector & ~7) | IR_IO | IR_CD;
    this.raise();
  }

  /** PIO data-in of a packet command: the next DRQ block within the byte-count limit. */
  private atapiPioNext(u: Unit): void {
    if (u.remaining <= 0) return this.atapiOk(u);
    if (u.head >= u.len) return u.fetchLeft > 0 ? this.atapiFetch(u) : this.atapiOk(u);
    let limit = u.bcl & ~1;
    if (limit === 0 || u.bcl === 0xffff) limit = 0xfffe;
    // Sector data goes in whole sectors when the limit allows it.
    if (u.sectorRead && limit >= CD_SECTOR_SIZE) limit -= limit % CD_SECTOR_SIZE;
    const n = Math.min(u.remaining, u.len - u.head, limit);
    u.status = ST_DRDY | ST_DSC;
    u.nsector = (u.nsector & ~7) | IR_IO;
    u.lcyl = n & 0xff;
    u.hcyl = (n >> 8) & 0xff;
    u.startTransfer(Xfer.IN, u.head, n, 'atapi');
    this.raise();
  }

  private atapiFetch(u: Unit): void {
    const n = Math.min(u.fetchLeft, CD_CHUNK);
    const gen = u.gen;
    u.op = 'atapi-read';
    u.status = ST_DRDY | ST_DSC | ST_BSY;
    this.io(u.image!.read(u.fetchLba * CD_SECTOR_SIZE, n * CD_SECTOR_SIZE), (data) => {
      if (u.gen !== gen) return;
      u.op = 'none';
      if (!data) return this.atapiError(u, Sense.MEDIUM_ERROR, 0x11, 0);
      u.buf.set(data, 0);
      u.head = 0;
      u.len = data.length;
      u.fetchLba += n;
      u.fetchLeft -= n;
      this.atapiPioNext(u);
    });
  }

  /** After restoring a state: restart the request that was in flight when it was saved. */
  resume(): void {
    for (const u of this.units) {
      if (u.dma !== 'none' && this.dmaRunning) {
        this.dmaRunning = false;
        this.tryDma();
        continue;
      }
      switch (u.op) {
        case 'ata-read': this.ataFetch(u); break;
        case 'ata-write': this.ataWriteBlock(u); break;
        case 'flush': this.flush(u); break;
        case 'atapi-read': this.atapiFetch(u); break;
      }
    }
  }
}

// ---- state ---------------------------------------------------------------------------------------------

const byte = u8, bufPos = int(0, BUF_SIZE), count = uint53;
const UNIT_STATE = record({
  feature: byte, nsector: byte, sector: byte, lcyl: byte, hcyl: byte,
  hobFeature: byte, hobNsector: byte, hobSector: byte, hobLcyl: byte, hobHcyl: byte,
  select: byte, status: byte, error: byte, multSectors: byte, xferMode: byte,
  pos: bufPos, end: bufPos, head: bufPos, len: bufPos,
  lba: count, remaining: count, fetchLba: count, fetchLeft: count, blockSectors: int(0, ATA_CHUNK), bcl: count,
  writeCache: bool, ext: bool, atapiDma: bool, sectorRead: bool,
  xfer: oneOf(Xfer.NONE, Xfer.IN, Xfer.OUT),
  done: oneOf('stop', 'ata-read', 'ata-write', 'packet', 'atapi'),
  /** A request to the image that was in flight: the restored device issues it again (reads and writes are idempotent). */
  op: oneOf('none', 'ata-read', 'ata-write', 'flush', 'atapi-read'),
  dma: oneOf('none', 'ata-read', 'ata-write', 'atapi-read', 'atapi-reply'),
  /** The buffer up to what is in use. */
  buf: bytes({ max: BUF_SIZE }),
  atapi: record({
    trayOpen: bool, trayLocked: bool, senseKey: int(0, 15), asc: u8, ascq: u8, unitAttention: bool, mediaEvent: int(0, 15),
  }),
}, (u) => {
  if (u.pos > u.end) return ['pos', `${u.pos} is past end ${u.end}`];
  if (u.head > u.len) return ['head', `${u.head} is past len ${u.len}`];
  if ((u.op === 'ata-read' || u.op === 'atapi-read') && u.fetchLeft === 0) return ['fetchLeft', 'is 0 while a read is in progress'];
  return undefined;
});
type UnitState = ValueOf<typeof UNIT_STATE>;

const CHANNEL_STATE = record({
  unit: int(0, 1), devctl: u8, irqPending: bool, bmCmd: u8, bmStatus: u8, bmPrd: u32,
  cursor: record({ next: int(0, 2 ** 33), addr: int(0, 2 ** 33), left: int(0, 0x10000), last: bool }),
  dmaRunning: bool,
  units: list(UNIT_STATE, 2),
});

/** What a unit's state may hold given the drive there: a state cannot make an absent drive busy, nor a disk run ATAPI. */
function unitFits(u: UnitState, kind: Unit['kind']): [string, string] | undefined {
  const busy = u.op !== 'none' || u.dma !== 'none' || u.xfer !== Xfer.NONE;
  if (kind === 'none' && busy) return ['op', 'transfer state for an absent drive'];
  const atapi = u.op === 'atapi-read' || u.dma === 'atapi-read' || u.dma === 'atapi-reply' || u.done === 'packet' || u.done === 'atapi';
  if (kind === 'disk' && atapi) return ['op', 'ATAPI transfer state for a disk'];
  const ata = u.op === 'ata-read' || u.op === 'ata-write' || u.op === 'flush' || u.dma === 'ata-read' || u.dma === 'ata-write';
  if (kind === 'cdrom' && ata) return ['op', 'disk transfer state for a CD-ROM'];
  return undefined;
}

/** Version 2 adds the INTx# pin (of the PCI function). The drives there decide which transfer states fit. */
function ideState(kinds: Unit['kind'][][]) {
  return stateSchema(2, { ...PCI_FUNCTION_FIELDS, channels: list(CHANNEL_STATE, 2) }, {
    rule: (s) => {
      for (const [i, ch] of s.channels.entries()) {
        for (const [j, u] of ch.units.entries()) {
          const broken = unitFits(u, kinds[i][j]);
          if (broken) return [`channels[${i}].units[${j}].${broken[0]}`, broken[1]];
        }
      }
      return undefined;
    },
  });
}

/** The unit's own properties its state holds under the same names. */
const UNIT_PROPERTIES = [
  'feature', 'nsector', 'sector', 'lcyl', 'hcyl', 'hobFeature', 'hobNsector', 'hobSector', 'hobLcyl', 'hobHcyl',
  'select', 'status', 'error', 'multSectors', 'xferMode', 'pos', 'end', 'head', 'len',
  'lba', 'remaining', 'fetchLba', 'fetchLeft', 'blockSectors', 'bcl', 'writeCache', 'ext', 'atapiDma', 'sectorRead',
  'xfer', 'done', 'op', 'dma',
] as const;
const ATAPI_PROPERTIES = ['trayOpen', 'trayLocked', 'senseKey', 'asc', 'ascq', 'unitAttention', 'mediaEvent'] as const;

function saveUnit(u: Unit): UnitState {
  return {
    ...pick(u, UNIT_PROPERTIES),
    buf: u.buf.subarray(0, Math.max(u.end, u.len, u.op === 'ata-write' ? u.blockSectors * SECTOR : 0)),
    atapi: pick(u.atapi, ATAPI_PROPERTIES),
  };
}

function restoreUnit(u: Unit, s: UnitState): void {
  assign(u, s, UNIT_PROPERTIES);
  u.buf.fill(0);
  u.buf.set(s.buf);
  assign(u.atapi, s.atapi, ATAPI_PROPERTIES);
  // Completions of requests issued before the restore are stale.
  u.gen++;
}

const IDETIM = 0x40;

/**
 * The controller: PCI function 8086:7010 (class 01:01:80, legacy mode, bus master at BAR4) and its two
 * channels on the ISA ports and IRQs.
 */
export class Piix3Ide extends PciFunction {
  private readonly channels: [Channel, Channel];
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly stateSchema: ReturnType<typeof ideState>;

  constructor(options: Piix3IdeOptions) {
    const busMasterBlock = {
      read: (offset: number) => this.channels[offset >> 3].readBm(offset & 7),
      write: (offset: number, _size: AccessSize, value: number) => this.channels[offset >> 3].writeBm(offset & 7, value & 0xff),
    };
    super('piix3-ide', { vendor: 0x8086, device: 0x7010, classCode: 0x010180, subsystemVendor: 0, subsystem: 0 }, [
      undefined, undefined, undefined, undefined, { kind: 'io', size: 16, device: busMasterBlock, sizes: 1 },
    ]);
    if (options.drives.length > 4) throw new Error('piix3-ide: at most four drives');
    const self = this;
    const host: Host = {
      memory: options.memory,
      get busMaster() {
        return self.busMaster;
      },
      track: (p) => {
        this.inFlight.add(p);
        void p.finally(() => this.inFlight.delete(p));
      },
    };
    const d = options.drives;
    this.channels = [new Channel(0, host, options.irqs[0], [d[0], d[1]]), new Channel(1, host, options.irqs[1], [d[2], d[3]])];
    this.stateSchema = ideState(this.channels.map((ch) => ch.units.map((u) => u.kind)));
    // Device-specific registers (IDE timing, slave timing, ...) are plain read/write bytes.
    for (let o = 0x40; o < 0x100; o++) this.writeMask[o] = 0xff;
    this.setPowerOnConfig();
    const { io } = options;
    const ports: [number, number, string][] = [[0x1f0, 0x3f6, 'ide0'], [0x170, 0x376, 'ide1']];
    ports.forEach(([cmd, ctl, name], i) => {
      const ch = this.channels[i];
      io.register(cmd, 8, { read: (o, s) => ch.read(o, s), write: (o, s, v) => ch.write(o, s, v) }, { sizes: 1 | 2 | 4, name });
      io.register(ctl, 1, { read: () => ch.readAltStatus(), write: (_o, _s, v) => ch.writeDeviceControl(v) }, { sizes: 1, name: `${name}-ctl` });
    });
    for (const ch of this.channels) ch.reset();
  }

  private setPowerOnConfig(): void {
    this.set16(0x06, 0x0280); // fast back-to-back capable, medium DEVSEL timing
  }

  /** What SeaBIOS sets up (for booting Linux without firmware): decoding on, bus master at `bmBase`. */
  configureAsFirmwareDoes(bmBase = 0xc040): void {
    this.configWrite(IDETIM, 2, 0x8000);
    this.configWrite(IDETIM + 2, 2, 0x8000);
    this.configWrite(0x20, 4, bmBase | 1);
    this.configWrite(PCI_COMMAND, 2, this.configRead(PCI_COMMAND, 2) | PCI_COMMAND_IO | PCI_COMMAND_MASTER);
  }

  override reset(): void {
    super.reset();
    this.setPowerOnConfig();
    for (const ch of this.channels) ch.reset();
  }

  /** The drives at their positions (primary master ... secondary slave), for the machine to report. */
  drives(): (IdeDriveInfo | undefined)[] {
    return this.channels.flatMap((ch) => ch.units).map((u, index) => {
      if (!u.present) return undefined;
      const info: IdeDriveInfo = {
        index, bus: index >> 1, unit: index & 1, kind: u.kind as 'disk' | 'cdrom',
        size: u.image?.virtualSize ?? 0, inserted: u.image !== null, readOnly: u.kind === 'cdrom' || (u.image?.readOnly ?? true),
        trayOpen: u.atapi.trayOpen, locked: u.atapi.trayLocked,
      };
      if (u.kind === 'disk') {
        info.geometry = { ...u.geometry };
        info.translation = u.translation;
      }
      return info;
    });
  }

  /**
   * CMOS byte 0x39 as QEMU sets it for SeaBIOS: two bits per disk position (0 none, 1 LBA, 2 large).
   */
  cmosDiskTranslation(): number {
    let v = 0;
    this.channels.flatMap((ch) => ch.units).forEach((u, i) => {
      if (u.kind === 'disk') v |= { none: 0, lba: 1, large: 2 }[u.translation] << (2 * i);
    });
    return v;
  }

  /**
   * Changes the medium of the CD-ROM at `index` (null ejects). Refused (false) while the guest keeps the
   * tray locked, unless forced. The guest sees a unit attention and a media event.
   */
  changeMedium(index: number, image: BlockDriver | null, force = false): boolean {
    const ch = this.channels[index >> 1];
    const u = ch?.units[index & 1];
    if (!u || u.kind !== 'cdrom') throw new Error(`piix3-ide: no CD-ROM drive at position ${index}`);
    if (u.atapi.trayLocked && !force) return false;
    if (u.op !== 'none' || u.dma !== 'none' || u.xfer !== Xfer.NONE) {
      u.gen++;
      u.op = 'none';
      u.dma = 'none';
      ch.atapiError(u, Sense.NOT_READY, 0x3a, 0);
    }
    u.setMedium(image);
    u.atapi.trayOpen = false;
    u.atapi.unitAttention = true;
    u.atapi.mediaEvent = image ? 2 : 3;
    return true;
  }

  /** Image requests are in flight (the guest is probably polling for their completion). */
  get busy(): boolean {
    return this.inFlight.size > 0;
  }

  /** Waits for the image requests in flight (call before closing the images). */
  async close(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  override saveState(): VersionedState {
    return this.stateSchema.save({
      ...this.pciState(),
      channels: this.channels.map((ch) => ({
        unit: ch.unit, devctl: ch.devctl, irqPending: ch.irqPending, bmCmd: ch.bmCmd, bmStatus: ch.bmStatus, bmPrd: ch.bmPrd >>> 0,
        cursor: { ...ch.cursor }, dmaRunning: ch.dmaRunning, units: ch.units.map(saveUnit),
      })),
    });
  }

  override checkState(state: VersionedState): void {
    this.stateSchema.restore(this.id, state);
  }

  /**
   * Requests to the images that were in flight when the state was saved are issued again. The machine
   * restores only while none of its own is in flight (PcMachine.ioPending).
   */
  override restoreState(state: VersionedState): void {
    const s = this.stateSchema.restore(this.id, state);
    this.loadPciState(s);
    s.channels.forEach((saved, i) => {
      const ch = this.channels[i];
      ch.unit = saved.unit;
      ch.devctl = saved.devctl;
      ch.irqPending = saved.irqPending;
      ch.bmCmd = saved.bmCmd & (BM_START | BM_TO_MEMORY);
      ch.bmStatus = saved.bmStatus & 0x67;
      ch.bmPrd = (saved.bmPrd & ~3) >>> 0;
      ch.cursor = { ...saved.cursor };
      saved.units.forEach((u, j) => restoreUnit(ch.units[j], u));
      ch.dmaRunning = saved.dmaRunning && ch.units.some((u) => u.dma !== 'none');
      ch.updateLine();
    });
    for (const ch of this.channels) ch.resume();
  }
}
