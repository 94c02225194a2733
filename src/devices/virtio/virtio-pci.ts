import { debugLog } from '../../base/log.js';
import { StateError } from '../../base/errors.js';
import type { VersionedState } from '../../base/state.js';
import type { AccessSize, BusDevice } from '../../memory/bus-device.js';
import type { PhysicalMemory } from '../../memory/physical-memory.js';
import { PciFunction } from '../pci/pci-function.js';
import {
  VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, type VirtioContext, type VirtioDevice, VirtioStatus,
  featureBit, readLe, writeLe,
} from './virtio-device.js';
import { Virtqueue, VirtqueueError } from './virtqueue.js';

/** The PCI vendor of virtio devices; modern device IDs are 0x1040 + the virtio device type. */
const VIRTIO_PCI_VENDOR = 0x1af4, VIRTIO_PCI_MODERN_BASE = 0x1040;
const NO_VECTOR = 0xffff;

/** Layout of the virtio BAR (BAR 4): one page per capability region. */
const COMMON_OFFSET = 0x0000, ISR_OFFSET = 0x1000, DEVICE_OFFSET = 0x2000, NOTIFY_OFFSET = 0x3000, REGIONS_SIZE = 0x4000;
const NOTIFY_MULTIPLIER = 4;
const COMMON_SIZE = 0x40;
/** The MSI-X BAR (BAR 1): the table, then the pending-bit array. */
const MSIX_PBA_OFFSET = 0x800, MSIX_BAR_SIZE = 0x1000;
const MSIX_BAR = 1, REGIONS_BAR = 4;

/** Capability placement in configuration space. */
const CAP_MSIX = 0x40, CAP_COMMON = 0x4c, CAP_ISR = 0x5c, CAP_DEVICE = 0x6c, CAP_NOTIFY = 0x7c, CAP_PCI_CFG = 0x90;
const PCI_CAP_ID_MSIX = 0x11, PCI_CAP_ID_VNDR = 0x09;
const enum CfgType { COMMON = 1, NOTIFY = 2, ISR = 3, DEVICE = 4, PCI_CFG = 5 }
const MSIX_ENABLE = 0x8000, MSIX_FUNCTION_MASK = 0x4000;

/** Features the transport implements for every device. */
const TRANSPORT_FEATURES = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_INDIRECT_DESC) | featureBit(VIRTIO_F_EVENT_IDX);

/** How the transport raises interrupts outside the PCI function itself. */
export interface VirtioPciHost {
  memory: PhysicalMemory;
  /** An MSI: a 32-bit write of `data` to `address`; false when the address is not the APIC's window. */
  deliverMsi(address: number, data: number): boolean;
}

/**
 * The virtio 1.x PCI transport, modern only (virtio 1.2, 4.1): vendor capabilities for the common, notify, ISR
 * and device configuration regions in BAR 4 and the PCI-configuration access window; MSI-X in BAR 1, INTx
 * through the bus's PIRQ routing while MSI-X is off. Everything device-specific is behind `VirtioDevice`.
 */
export class VirtioPciFunction extends PciFunction implements VirtioContext {
  readonly queues: Virtqueue[];
  negotiated = 0n;
  private readonly offered: bigint;
  private status = 0;
  private deviceFeatureSelect = 0;
  private driverFeatureSelect = 0;
  private driverFeatures = 0n;
  private queueSelect = 0;
  private configVector = NO_VECTOR;
  private configGeneration = 0;
  private isr = 0;
  private readonly msixTable: Uint32Array;
  private readonly msixPending: Uint8Array;

  constructor(readonly device: VirtioDevice, private readonly host: VirtioPciHost) {
    const holder: { fn?: VirtioPciFunction } = {};
    const regions: BusDevice = {
      read: (offset, size) => holder.fn!.regionRead(offset, size),
      write: (offset, size, value) => holder.fn!.regionWrite(offset, size, value),
    };
    const msix: BusDevice = {
      read: (offset, size) => holder.fn!.msixRead(offset, size),
      write: (offset, size, value) => holder.fn!.msixWrite(offset, size, value),
    };
    const bars = [];
    bars[MSIX_BAR] = { kind: 'mem' as const, size: MSIX_BAR_SIZE, device: msix, sizes: 4 };
    bars[REGIONS_BAR] = { kind: 'mem' as const, size: REGIONS_SIZE, device: regions };
    super(device.id, {
      vendor: VIRTIO_PCI_VENDOR, device: VIRTIO_PCI_MODERN_BASE + device.deviceType, revision: 1, classCode: device.pciClass,
      subsystemVendor: VIRTIO_PCI_VENDOR, subsystem: 0x1100, interruptPin: 1,
    }, bars);
    holder.fn = this;
    this.queues = device.queueSizes.map((n, i) => new Virtqueue(i, n, host.memory));
    this.offered = device.features | TRANSPORT_FEATURES;
    const vectors = this.queues.length + 1;
    this.msixTable = new Uint32Array(4 * vectors);
    this.msixPending = new Uint8Array(vectors);
    this.resetMsixTable();
    this.buildCapabilities(vectors);
  }

  private buildCapabilities(vectors: number): void {
    const c = this.config;
    c[0x06] |= 0x10; // status: capabilities list
    c[0x34] = CAP_MSIX;
    c.set([PCI_CAP_ID_MSIX, CAP_COMMON], CAP_MSIX);
    this.set16(CAP_MSIX + 2, vectors - 1);
    this.writeMask[CAP_MSIX + 3] = (MSIX_ENABLE | MSIX_FUNCTION_MASK) >> 8;
    this.set32(CAP_MSIX + 4, MSIX_BAR);
    this.set32(CAP_MSIX + 8, MSIX_PBA_OFFSET | MSIX_BAR);
    const vendorCap = (at: number, next: number, type: CfgType, offset: number, length: number, capLength = 16) => {
      c.set([PCI_CAP_ID_VNDR, next, capLength, type, REGIONS_BAR, 0, 0, 0], at);
      this.set32(at + 8, offset);
      this.set32(at + 12, length);
    };
    vendorCap(CAP_COMMON, CAP_ISR, CfgType.COMMON, COMMON_OFFSET, COMMON_SIZE);
    vendorCap(CAP_ISR, CAP_DEVICE, CfgType.ISR, ISR_OFFSET, 1);
    vendorCap(CAP_DEVICE, CAP_NOTIFY, CfgType.DEVICE, DEVICE_OFFSET, Math.max(this.device.configSize, 4));
    vendorCap(CAP_NOTIFY, CAP_PCI_CFG, CfgType.NOTIFY, NOTIFY_OFFSET, NOTIFY_MULTIPLIER * this.queues.length, 20);
    this.set32(CAP_NOTIFY + 16, NOTIFY_MULTIPLIER);
    // The configuration access window: the driver picks bar/offset/length, then reads or writes pci_cfg_data.
    vendorCap(CAP_PCI_CFG, 0, CfgType.PCI_CFG, 0, 0, 20);
    c[CAP_PCI_CFG + 4] = 0;
    this.writeMask[CAP_PCI_CFG + 4] = 0xff;
    this.setMask32(CAP_PCI_CFG + 8, 0xffffffff);
    this.setMask32(CAP_PCI_CFG + 12, 0xffffffff);
    this.setMask32(CAP_PCI_CFG + 16, 0xffffffff);
    this.captureInitialConfig();
  }

  get live(): boolean {
    return (this.status & VirtioStatus.DRIVER_OK) !== 0 && (this.status & VirtioStatus.DEVICE_NEEDS_RESET) === 0;
  }

  /** Requests in flight in the device. */
  get busy(): boolean {
    return this.device.busy;
  }

  // ---- the device's side (VirtioContext) ---------------------------------------------------------

  notify(queue: Virtqueue): void {
    if (!queue.shouldInterrupt()) return;
    this.interrupt(queue.msixVector, 1);
  }

  configChanged(): void {
    this.configGeneration = (this.configGeneration + 1) & 0xff;
    if (this.status & VirtioStatus.DRIVER_OK) this.interrupt(this.configVector, 2);
  }

  needsReset(reason: string): void {
    debugLog('virtio', `${this.id}: ${reason}: device needs reset`);
    if (this.status & VirtioStatus.DEVICE_NEEDS_RESET) return;
    this.status |= VirtioStatus.DEVICE_NEEDS_RESET;
    this.configChanged();
  }

  // ---- interrupts ----------------------------------------------------------------------------------

  private get msixEnabled(): boolean {
    return (this.config[CAP_MSIX + 3] & (MSIX_ENABLE >> 8)) !== 0;
  }

  /** One interrupt: an MSI-X vector while MSI-X is on, else the ISR bit and INTx. */
  private interrupt(vector: number, isrBit: number): void {
    if (this.msixEnabled) {
      if (vector < this.msixPending.length) this.sendMsix(vector);
      return;
    }
    this.isr |= isrBit;
    this.setIrq(true);
  }

  private sendMsix(vector: number): void {
    const masked = (this.config[CAP_MSIX + 3] & (MSIX_FUNCTION_MASK >> 8)) !== 0 || (this.msixTable[4 * vector + 3] & 1) !== 0;
    if (masked) {
      this.msixPending[vector] = 1;
      return;
    }
    this.msixPending[vector] = 0;
    const address = this.msixTable[4 * vector], high = this.msixTable[4 * vector + 1], data = this.msixTable[4 * vector + 2];
    if (high !== 0 || !this.busMaster) return;
    if (!this.host.deliverMsi(address, data)) {
      // Not the APIC's window: an MSI is a plain memory write.
      const bytes = new Uint8Array(4);
      writeLe(bytes, 0, 4, data);
      this.host.memory.writeBytes(address, bytes);
    }
  }

  /** Delivers vectors whose mask was lifted while they were pending. */
  private deliverUnmasked(): void {
    for (let v = 0; v < this.msixPending.length; v++) if (this.msixPending[v]) this.sendMsix(v);
  }

  private msixRead(offset: number, _size: AccessSize): number {
    if (offset < this.msixTable.length * 4) return this.msixTable[offset >> 2];
    if (offset >= MSIX_PBA_OFFSET) {
      let bits = 0;
      const first = (offset - MSIX_PBA_OFFSET) * 8;
      for (let i = 0; i < 32; i++) if (this.msixPending[first + i]) bits |= 1 << i;
      return bits >>> 0;
    }
    return 0;
  }

  private msixWrite(offset: number, _size: AccessSize, value: number): void {
    if (offset >= this.msixTable.length * 4) return;
    const word = offset >> 2;
    this.msixTable[word] = (word & 3) === 3 ? value & 1 : value;
    if ((word & 3) === 3) this.deliverUnmasked();
  }

  private resetMsixTable(): void {
    this.msixTable.fill(0);
    for (let v = 0; v < this.msixPending.length; v++) this.msixTable[4 * v + 3] = 1; // masked
    this.msixPending.fill(0);
  }

  protected override configWritten(offset: number, size: number): void {
    if (offset < CAP_MSIX + 4 && offset + size > CAP_MSIX + 2) {
      if (this.msixEnabled) {
        this.setIrq(false);
        this.deliverUnmasked();
      }
    }
    if (offset <= CAP_PCI_CFG + 16 && offset + size > CAP_PCI_CFG + 16) {
      const window = this.cfgWindow();
      if (window) this.regionWrite(window.offset, window.size, this.get32(CAP_PCI_CFG + 16) & (0xffffffff >>> (32 - 8 * window.size)));
    }
  }

  override configRead(offset: number, size: 1 | 2 | 4): number {
    if (offset >= CAP_PCI_CFG + 16 && offset < CAP_PCI_CFG + 20) {
      const window = this.cfgWindow();
      if (window) this.set32(CAP_PCI_CFG + 16, this.regionRead(window.offset, window.size));
    }
    return super.configRead(offset, size);
  }

  /** The BAR 4 access the PCI-configuration window describes, if it is a valid one. */
  private cfgWindow(): { offset: number; size: AccessSize } | null {
    const length = this.get32(CAP_PCI_CFG + 12), offset = this.get32(CAP_PCI_CFG + 8);
    if (this.config[CAP_PCI_CFG + 4] !== REGIONS_BAR || (length !== 1 && length !== 2 && length !== 4)) return null;
    if (offset % length !== 0 || offset + length > REGIONS_SIZE) return null;
    return { offset, size: length };
  }

  // ---- BAR 4: common configuration, ISR, device configuration, notifications -------------------------

  private regionRead(offset: number, size: AccessSize): number {
    if (offset < COMMON_OFFSET + COMMON_SIZE) return this.commonRead(offset - COMMON_OFFSET, size);
    if (offset === ISR_OFFSET) {
      const v = this.isr;
      this.isr = 0;
      this.setIrq(false);
      return v;
    }
    if (offset >= DEVICE_OFFSET && offset + size <= DEVICE_OFFSET + this.device.configSize) return this.device.configRead(offset - DEVICE_OFFSET, size);
    return 0;
  }

  private regionWrite(offset: number, size: AccessSize, value: number): void {
    if (offset < COMMON_OFFSET + COMMON_SIZE) this.commonWrite(offset - COMMON_OFFSET, size, value);
    else if (offset >= DEVICE_OFFSET && offset + size <= DEVICE_OFFSET + this.device.configSize) this.device.configWrite(offset - DEVICE_OFFSET, size, value);
    else if (offset >= NOTIFY_OFFSET && offset < NOTIFY_OFFSET + NOTIFY_MULTIPLIER * this.queues.length) this.queueNotify((offset - NOTIFY_OFFSET) / NOTIFY_MULTIPLIER | 0);
  }

  private queueNotify(index: number): void {
    const queue = this.queues[index];
    if (!this.live || !queue?.enabled) return;
    this.device.queueNotified(queue);
  }

  private selectedQueue(): Virtqueue | undefined {
    return this.queues[this.queueSelect];
  }

  /** The common configuration structure (virtio 1.2, 4.1.4.3) as bytes, for reads of any width. */
  private commonBytes(): Uint8Array {
    const b = new Uint8Array(COMMON_SIZE);
    const q = this.selectedQueue();
    writeLe(b, 0x00, 4, this.deviceFeatureSelect);
    writeLe(b, 0x04, 4, this.deviceFeatureSelect < 2 ? Number((this.offered >> BigInt(32 * this.deviceFeatureSelect)) & 0xffffffffn) : 0);
    writeLe(b, 0x08, 4, this.driverFeatureSelect);
    writeLe(b, 0x0c, 4, this.driverFeatureSelect < 2 ? Number((this.driverFeatures >> BigInt(32 * this.driverFeatureSelect)) & 0xffffffffn) : 0);
    writeLe(b, 0x10, 2, this.configVector);
    writeLe(b, 0x12, 2, this.queues.length);
    b[0x14] = this.status;
    b[0x15] = this.configGeneration;
    writeLe(b, 0x16, 2, this.queueSelect);
    if (q) {
      writeLe(b, 0x18, 2, q.size);
      writeLe(b, 0x1a, 2, q.msixVector);
      writeLe(b, 0x1c, 2, q.enabled ? 1 : 0);
      writeLe(b, 0x1e, 2, q.index);
      writeLe(b, 0x20, 4, q.descAddress % 2 ** 32);
      writeLe(b, 0x24, 4, Math.floor(q.descAddress / 2 ** 32));
      writeLe(b, 0x28, 4, q.driverAddress % 2 ** 32);
      writeLe(b, 0x2c, 4, Math.floor(q.driverAddress / 2 ** 32));
      writeLe(b, 0x30, 4, q.deviceAddress % 2 ** 32);
      writeLe(b, 0x34, 4, Math.floor(q.deviceAddress / 2 ** 32));
    }
    return b;
  }

  private commonRead(offset: number, size: AccessSize): number {
    return readLe(this.commonBytes(), offset, size);
  }

  private commonWrite(offset: number, size: AccessSize, value: number): void {
    const q = this.selectedQueue();
    // Queue registers only change before the driver enables the queue (and DRIVER_OK).
    const queueWritable = q !== undefined && !q.enabled;
    const setHalf = (current: number, high: boolean) => (high ? (current % 2 ** 32) + value * 2 ** 32 : Math.floor(current / 2 ** 32) * 2 ** 32 + (value >>> 0));
    switch (offset) {
      case 0x00: this.deviceFeatureSelect = value >>> 0; break;
      case 0x08: this.driverFeatureSelect = value >>> 0; break;
      case 0x0c:
        if (this.driverFeatureSelect < 2 && !(this.status & VirtioStatus.FEATURES_OK)) {
          const shift = BigInt(32 * this.driverFeatureSelect);
          this.driverFeatures = (this.driverFeatures & ~(0xffffffffn << shift)) | (BigInt(value >>> 0) << shift);
        }
        break;
      case 0x10: this.configVector = this.validVector(value); break;
      case 0x14: this.writeStatus(value & 0xff); break;
      case 0x16: this.queueSelect = value & 0xffff; break;
      case 0x18:
        if (queueWritable) q.size = value & 0xffff;
        break;
      case 0x1a:
        if (q) q.msixVector = this.validVector(value);
        break;
      case 0x1c:
        if (queueWritable && (value & 1)) this.enableQueue(q);
        break;
      case 0x20: case 0x24: if (queueWritable) q.descAddress = setHalf(q.descAddress, offset === 0x24); break;
      case 0x28: case 0x2c: if (queueWritable) q.driverAddress = setHalf(q.driverAddress, offset === 0x2c); break;
      case 0x30: case 0x34: if (queueWritable) q.deviceAddress = setHalf(q.deviceAddress, offset === 0x34); break;
      default: debugLog('virtio', `${this.id}: ignored ${size}-byte write at common configuration 0x${offset.toString(16)}`);
    }
  }

  /** A vector the table has, else NO_VECTOR (which the driver reads back as the refusal). */
  private validVector(value: number): number {
    const v = value & 0xffff;
    return v < this.msixPending.length ? v : NO_VECTOR;
  }

  private enableQueue(q: Virtqueue): void {
    try {
      q.enable();
    } catch (e) {
      if (!(e instanceof VirtqueueError)) throw e;
      this.needsReset(e.message);
    }
  }

  private writeStatus(value: number): void {
    if (value === 0) {
      this.resetTransport();
      return;
    }
    const rising = value & ~this.status;
    let next = value | (this.status & VirtioStatus.DEVICE_NEEDS_RESET);
    if (rising & VirtioStatus.FEATURES_OK) {
      const accepted = (this.driverFeatures & ~this.offered) === 0n && (this.driverFeatures & featureBit(VIRTIO_F_VERSION_1)) !== 0n;
      if (accepted) this.negotiated = this.driverFeatures;
      else next &= ~VirtioStatus.FEATURES_OK;
    }
    this.status = next;
    if (rising & VirtioStatus.DRIVER_OK && this.status & VirtioStatus.FEATURES_OK) {
      for (const q of this.queues) {
        q.eventIndex = (this.negotiated & featureBit(VIRTIO_F_EVENT_IDX)) !== 0n;
        q.indirect = (this.negotiated & featureBit(VIRTIO_F_INDIRECT_DESC)) !== 0n;
      }
      this.device.activate(this);
      // Buffers made available before DRIVER_OK (and their doorbells, ignored then) are served now.
      for (const q of this.queues) if (q.hasAvailable()) this.queueNotify(q.index);
    }
  }

  private resetTransport(): void {
    this.device.reset();
    for (const q of this.queues) q.reset();
    this.status = 0;
    this.negotiated = this.driverFeatures = 0n;
    this.deviceFeatureSelect = this.driverFeatureSelect = this.queueSelect = 0;
    this.configVector = NO_VECTOR;
    this.isr = 0;
    this.setIrq(false);
  }

  override reset(): void {
    super.reset();
    this.resetTransport();
    this.resetMsixTable();
  }

  override saveState(): VersionedState {
    const base = super.saveState();
    const device = this.device.saveState();
    return {
      version: 1,
      fields: {
        ...base.fields,
        status: this.status, isr: this.isr, configVector: this.configVector, queueSelect: this.queueSelect,
        negotiated: this.negotiated.toString(), driverFeatures: this.driverFeatures.toString(),
        msixTable: new Uint32Array(this.msixTable), msixPending: this.msixPending.slice(),
        queues: this.queues.map((q) => q.saveState()),
        device: { version: device.version, fields: device.fields },
      },
    };
  }

  override restoreState(_state: VersionedState): void {
    throw new StateError(`${this.id}: restoring virtio device state is not supported yet`);
  }
}
