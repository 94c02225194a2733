import type { VersionedState } from '../../base/state.js';
import type { BlockDriver } from '../../block/index.js';
import { type VirtioContext, type VirtioDevice, VirtioDeviceBase, featureBit, readLe, writeLe } from './virtio-device.js';
import type { Virtqueue, VirtqElement } from './virtqueue.js';

/** Feature bits (virtio 1.2, 5.2.3). */
const VIRTIO_BLK_F_SEG_MAX = 2, VIRTIO_BLK_F_RO = 5, VIRTIO_BLK_F_BLK_SIZE = 6, VIRTIO_BLK_F_FLUSH = 9,
  VIRTIO_BLK_F_CONFIG_WCE = 11, VIRTIO_BLK_F_DISCARD = 13, VIRTIO_BLK_F_WRITE_ZEROES = 14;
/** Request types and status values (5.2.6). */
const VIRTIO_BLK_T_IN = 0, VIRTIO_BLK_T_OUT = 1, VIRTIO_BLK_T_FLUSH = 4, VIRTIO_BLK_T_GET_ID = 8,
  VIRTIO_BLK_T_DISCARD = 11, VIRTIO_BLK_T_WRITE_ZEROES = 13;
const VIRTIO_BLK_S_OK = 0, VIRTIO_BLK_S_IOERR = 1, VIRTIO_BLK_S_UNSUPP = 2;
const SECTOR = 512, HEADER = 16, SEGMENT = 16, ID_BYTES = 20;
const QUEUE_SIZE = 256;
/** Largest data transfer of one request (Linux sends at most max_sectors_kb, 1280 KiB by default). */
const MAX_TRANSFER = 32 * 2 ** 20;
/** Largest discard / write-zeroes range of one segment, in sectors. */
const MAX_RANGE_SECTORS = 2 ** 22;
const CONFIG_SIZE = 60;

/** QEMU's -drive cache= modes (cache=none is writeback here: the host page cache is not bypassed). */
export type CacheMode = 'none' | 'writeback' | 'writethrough' | 'unsafe';

export interface VirtioBlkOptions {
  id: string;
  image: BlockDriver;
  cache: CacheMode;
  /** discard=unmap: the guest's discards free space in the image. */
  discard: boolean;
  /** What GET_ID answers (at most 20 bytes). */
  serial: string;
}

/**
 * virtio-blk (virtio 1.2, 5.2) on the block layer: read, write, flush, discard, write-zeroes and get-id, one
 * queue with any number of requests in flight (each an asynchronous block-layer call completing on its own).
 */
export class VirtioBlk extends VirtioDeviceBase implements VirtioDevice {
  readonly id: string;
  readonly deviceType = 2;
  readonly pciClass = 0x010000; // mass storage, SCSI (as QEMU's virtio-blk-pci)
  readonly queueSizes = [QUEUE_SIZE];
  readonly features: bigint;
  readonly configSize = CONFIG_SIZE;
  private readonly configBytes = new Uint8Array(CONFIG_SIZE);
  /** The guest's write cache setting (CONFIG_WCE): off means every write is flushed before it completes. */
  private writeback: boolean;

  constructor(private readonly options: VirtioBlkOptions) {
    super();
    this.id = options.id;
    const { image } = options;
    let features = featureBit(VIRTIO_BLK_F_SEG_MAX) | featureBit(VIRTIO_BLK_F_BLK_SIZE) | featureBit(VIRTIO_BLK_F_FLUSH)
      | featureBit(VIRTIO_BLK_F_CONFIG_WCE) | featureBit(VIRTIO_BLK_F_WRITE_ZEROES);
    if (image.readOnly) features |= featureBit(VIRTIO_BLK_F_RO);
    if (options.discard) features |= featureBit(VIRTIO_BLK_F_DISCARD);
    this.features = features;
    this.writeback = options.cache !== 'writethrough';
    const c = this.configBytes;
    const sectors = Math.floor(image.virtualSize / SECTOR);
    writeLe(c, 0, 4, sectors % 2 ** 32);
    writeLe(c, 4, 4, Math.floor(sectors / 2 ** 32));
    writeLe(c, 12, 4, QUEUE_SIZE - 2); // seg_max: header and status take two descriptors
    writeLe(c, 20, 4, SECTOR); // blk_size
    writeLe(c, 34, 2, 1); // num_queues
    writeLe(c, 36, 4, MAX_RANGE_SECTORS); // max_discard_sectors
    writeLe(c, 40, 4, 1); // max_discard_seg
    writeLe(c, 44, 4, 8); // discard_sector_alignment: 4 KiB
    writeLe(c, 48, 4, MAX_RANGE_SECTORS); // max_write_zeroes_sectors
    writeLe(c, 52, 4, 1); // max_write_zeroes_seg
    c[56] = options.discard ? 1 : 0; // write_zeroes_may_unmap
    this.updateWriteback();
  }

  configRead(offset: number, size: 1 | 2 | 4): number {
    return readLe(this.configBytes, offset, size);
  }

  configWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    if (offset === 32 && size === 1) {
      this.writeback = (value & 1) !== 0;
      this.updateWriteback();
    }
  }

  private updateWriteback(): void {
    this.configBytes[32] = this.writeback ? 1 : 0;
  }

  protected override resetDevice(): void {
    this.writeback = this.options.cache !== 'writethrough';
    this.updateWriteback();
  }

  queueNotified(queue: Virtqueue): void {
    this.popEach(queue, (element, context) => this.request(context, queue, element));
  }

  private request(context: VirtioContext, queue: Virtqueue, element: VirtqElement): void {
    if (element.readableBytes < HEADER || element.writableBytes < 1) {
      context.needsReset(`${this.id}: request without header or status byte`);
      return;
    }
    const header = queue.gather(element, 0, HEADER);
    const type = readLe(header, 0, 4), sector = readLe(header, 8, 4) + readLe(header, 12, 4) * 2 ** 32;
    const statusAt = element.writableBytes - 1;
    const finish = (status: number, written: number) => {
      queue.scatter(element, statusAt, Uint8Array.of(status));
      this.complete(context, queue, element, written + 1);
    };
    const run = (work: Promise<number>) => this.track(work, (_c, written, error) => finish(error === undefined ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR, error === undefined ? written! : 0));
    const { image } = this.options;
    switch (type) {
      case VIRTIO_BLK_T_IN: {
        const length = statusAt;
        if (!this.inRange(sector, length)) return finish(VIRTIO_BLK_S_IOERR, 0);
        const buf = new Uint8Array(length);
        const read = image.readInto ? image.readInto(sector * SECTOR, buf) : image.read(sector * SECTOR, length).then((d) => buf.set(d));
        return run(read.then(() => queue.scatter(element, 0, buf)));
      }
      case VIRTIO_BLK_T_OUT: {
        const length = element.readableBytes - HEADER;
        if (image.readOnly || !this.inRange(sector, length)) return finish(VIRTIO_BLK_S_IOERR, 0);
        const data = queue.gather(element, HEADER, length);
        return run(image.write(sector * SECTOR, data).then(() => this.writeDone()).then(() => 0));
      }
      case VIRTIO_BLK_T_FLUSH:
        return run(this.flush().then(() => 0));
      case VIRTIO_BLK_T_GET_ID: {
        const id = new TextEncoder().encode(this.options.serial).subarray(0, ID_BYTES);
        const bytes = new Uint8Array(Math.min(ID_BYTES, statusAt));
        bytes.set(id.subarray(0, bytes.length));
        return finish(VIRTIO_BLK_S_OK, queue.scatter(element, 0, bytes));
      }
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES: {
        if (type === VIRTIO_BLK_T_DISCARD && !this.options.discard) return finish(VIRTIO_BLK_S_UNSUPP, 0);
        if (image.readOnly) return finish(VIRTIO_BLK_S_IOERR, 0);
        const segments = queue.gather(element, HEADER, element.readableBytes - HEADER);
        if (segments.length === 0 || segments.length % SEGMENT !== 0 || segments.length / SEGMENT > 1) return finish(VIRTIO_BLK_S_UNSUPP, 0);
        const start = readLe(segments, 0, 4) + readLe(segments, 4, 4) * 2 ** 32, count = readLe(segments, 8, 4);
        if (!this.inRange(start, count * SECTOR, MAX_RANGE_SECTORS * SECTOR)) return finish(VIRTIO_BLK_S_IOERR, 0);
        if (type === VIRTIO_BLK_T_DISCARD) return run(image.discard(start * SECTOR, count * SECTOR).then(() => 0));
        // The UNMAP flag needs nothing more: the block layer's writeZeroes leaves zero clusters where it can.
        return run(image.writeZeroes(start * SECTOR, count * SECTOR).then(() => this.writeDone()).then(() => 0));
      }
      default:
        return finish(VIRTIO_BLK_S_UNSUPP, 0);
    }
  }

  /** The request's byte range lies on the disk and is whole sectors of a bounded size. */
  private inRange(sector: number, length: number, max = MAX_TRANSFER): boolean {
    return length % SECTOR === 0 && length <= max && sector * SECTOR + length <= this.options.image.virtualSize;
  }

  /** With the guest's write cache off (or cache=writethrough), a write is on disk before it completes. */
  private async writeDone(): Promise<void> {
    if (!this.writeback) await this.flush();
  }

  private async flush(): Promise<void> {
    // cache=unsafe: the image was opened without fsync, so flush() returns at once.
    await this.options.image.flush();
  }

  saveState(): VersionedState {
    return { version: 1, fields: { writeback: this.writeback } };
  }
}
