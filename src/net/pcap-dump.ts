/**
 * QEMU's `-object filter-dump,id=ID,netdev=NETDEV,file=F.pcap[,maxlen=N]`: every frame crossing a netdev, both
 * ways, into a classic libpcap file (LINKTYPE_ETHERNET, microsecond timestamps) that tcpdump and Wireshark read.
 * It sits between the NIC and the back end and changes nothing on the wire.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { TsvmError, errorMessage } from '../base/errors.js';
import type { NetBackend, NetReceiver } from './net-backend.js';

const PCAP_MAGIC = 0xa1b2c3d4;
const LINKTYPE_ETHERNET = 1;
/** QEMU's default snapshot length. */
export const DEFAULT_PCAP_MAXLEN = 65536;

export class PcapDump implements NetBackend {
  private fd: number | null;

  constructor(private readonly inner: NetBackend, file: string, private readonly maxlen = DEFAULT_PCAP_MAXLEN) {
    try {
      this.fd = openSync(file, 'w');
    } catch (e) {
      throw new TsvmError(`filter-dump: cannot write '${file}': ${errorMessage(e).replace(/^[A-Z]+: /, '')}`);
    }
    const header = Buffer.alloc(24);
    header.writeUInt32LE(PCAP_MAGIC, 0);
    header.writeUInt16LE(2, 4);
    header.writeUInt16LE(4, 6);
    header.writeUInt32LE(maxlen, 16);
    header.writeUInt32LE(LINKTYPE_ETHERNET, 20);
    writeSync(this.fd, header);
  }

  private record(frame: Uint8Array): void {
    if (this.fd === null) return;
    const captured = Math.min(frame.length, this.maxlen);
    const ms = Date.now();
    const out = Buffer.alloc(16 + captured);
    out.writeUInt32LE(Math.floor(ms / 1000), 0);
    out.writeUInt32LE((ms % 1000) * 1000, 4);
    out.writeUInt32LE(captured, 8);
    out.writeUInt32LE(frame.length, 12);
    out.set(frame.subarray(0, captured), 16);
    writeSync(this.fd, out);
  }

  attach(receiver: NetReceiver): void {
    this.inner.attach({
      receive: (frame) => {
        // Only frames the NIC took crossed the wire; a refused one comes again.
        const taken = receiver.receive(frame);
        if (taken) this.record(frame);
        return taken;
      },
    });
  }

  send(frame: Uint8Array): void {
    this.record(frame);
    this.inner.send(frame);
  }

  receiveReady(): void {
    this.inner.receiveReady();
  }

  async close(): Promise<void> {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
    await this.inner.close();
  }
}
