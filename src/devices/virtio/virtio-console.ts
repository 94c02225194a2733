import type { VersionedState } from '../../base/state.js';
import type { CharBackend } from '../char-backend.js';
import { type VirtioContext, type VirtioDevice, VirtioDeviceBase, featureBit, readLe, writeLe } from './virtio-device.js';
import type { Virtqueue } from './virtqueue.js';

const VIRTIO_CONSOLE_F_MULTIPORT = 1;
/** Control events (virtio 1.2, 5.3.6.2). */
const enum Control {
  DEVICE_READY = 0, DEVICE_ADD = 1, PORT_READY = 3, CONSOLE_PORT = 4, PORT_OPEN = 6, PORT_NAME = 7,
}
const CONTROL_RX = 2, CONTROL_TX = 3;
const QUEUE_SIZE = 128;

export interface VirtioConsolePort {
  /** A console (the guest's /dev/hvcN) or a named port (/dev/virtio-ports/NAME). */
  console: boolean;
  name?: string;
  backend: CharBackend;
}

interface Port extends VirtioConsolePort {
  id: number;
  /** Host input not yet in a guest buffer. */
  pending: Uint8Array[];
  /** The guest has the port open. */
  guestOpen: boolean;
}

/**
 * virtio-console (virtio 1.2, 5.3) with multiple ports: a receive and a transmit queue per port (port 0 on
 * queues 0 and 1, port N on 2N+2 and 2N+3) and the control queues (2, 3) over which ports are announced, named
 * and marked as consoles. Consoles take port 0 first, as on QEMU.
 */
export class VirtioConsole extends VirtioDeviceBase implements VirtioDevice {
  readonly deviceType = 3;
  readonly pciClass = 0x078000; // communication controller, other
  readonly queueSizes: number[];
  readonly features = featureBit(VIRTIO_CONSOLE_F_MULTIPORT);
  readonly configSize = 12;
  private readonly ports: Port[];
  private readonly maxPorts: number;
  /** Control messages the guest has no buffer for yet. */
  private controlPending: Uint8Array[] = [];

  constructor(readonly id: string, ports: VirtioConsolePort[]) {
    super();
    let next = ports.some((p) => p.console) ? 0 : 1;
    const ordered = [...ports.filter((p) => p.console), ...ports.filter((p) => !p.console)];
    this.ports = ordered.map((p) => ({ ...p, id: next++, pending: [], guestOpen: false }));
    this.maxPorts = Math.max(next, 1);
    this.queueSizes = new Array<number>(2 * this.maxPorts + 2).fill(QUEUE_SIZE);
    for (const port of this.ports) {
      port.backend.onInput((bytes) => {
        port.pending.push(bytes.slice());
        this.fillReceive(port);
      });
    }
  }

  configRead(offset: number, size: 1 | 2 | 4): number {
    const bytes = new Uint8Array(12);
    writeLe(bytes, 4, 4, this.maxPorts);
    return readLe(bytes, offset, size);
  }

  configWrite(): void {}

  private get multiport(): boolean {
    return ((this.context?.negotiated ?? 0n) & featureBit(VIRTIO_CONSOLE_F_MULTIPORT)) !== 0n;
  }

  private receiveQueue(context: VirtioContext, port: Port): Virtqueue | undefined {
    return context.queues[port.id === 0 ? 0 : 2 * port.id + 2];
  }

  private portOfQueue(index: number): Port | undefined {
    const id = index < 2 ? 0 : (index - 2) >> 1;
    return this.ports.find((p) => p.id === id);
  }

  queueNotified(queue: Virtqueue): void {
    const index = queue.index;
    if (this.multiport && index === CONTROL_TX) return this.popEach(queue, (element, context) => {
      this.controlMessage(queue.gather(element, 0, element.readableBytes));
      this.complete(context, queue, element, 0);
    });
    if (this.multiport && index === CONTROL_RX) return this.flushControl();
    const port = this.portOfQueue(index);
    if (index % 2 === 0) {
      if (port) this.fillReceive(port);
      return;
    }
    this.popEach(queue, (element, context) => {
      port?.backend.write(queue.gather(element, 0, element.readableBytes));
      this.complete(context, queue, element, 0);
    });
  }

  /** Moves pending host input into the port's receive buffers. */
  private fillReceive(port: Port): void {
    const context = this.context;
    const queue = context && this.receiveQueue(context, port);
    if (!context || !queue?.enabled || port.pending.length === 0) return;
    this.popEach(queue, (element) => {
      let written = 0;
      while (port.pending.length > 0 && written < element.writableBytes) {
        const chunk = port.pending[0];
        const n = queue.scatter(element, written, chunk);
        written += n;
        if (n < chunk.length) port.pending[0] = chunk.subarray(n);
        else port.pending.shift();
      }
      this.complete(context, queue, element, written);
    }, () => port.pending.length > 0);
  }

  private controlMessage(bytes: Uint8Array): void {
    if (bytes.length < 8) return;
    const id = readLe(bytes, 0, 4), event = readLe(bytes, 4, 2), value = readLe(bytes, 6, 2);
    const port = this.ports.find((p) => p.id === id);
    switch (event) {
      case Control.DEVICE_READY:
        if (value === 1) for (const p of this.ports) this.sendControl(p.id, Control.DEVICE_ADD, 0);
        break;
      case Control.PORT_READY:
        if (!port || value !== 1) break;
        if (port.console) this.sendControl(port.id, Control.CONSOLE_PORT, 1);
        if (port.name) this.sendControl(port.id, Control.PORT_NAME, 0, new TextEncoder().encode(port.name));
        this.sendControl(port.id, Control.PORT_OPEN, 1); // the host side is always connected
        break;
      case Control.PORT_OPEN:
        if (port) port.guestOpen = value === 1;
        if (port?.guestOpen) this.fillReceive(port);
        break;
    }
  }

  private sendControl(id: number, event: Control, value: number, extra?: Uint8Array): void {
    const message = new Uint8Array(8 + (extra?.length ?? 0));
    writeLe(message, 0, 4, id);
    writeLe(message, 4, 2, event);
    writeLe(message, 6, 2, value);
    if (extra) message.set(extra, 8);
    this.controlPending.push(message);
    this.flushControl();
  }

  private flushControl(): void {
    const context = this.context, queue = context?.queues[CONTROL_RX];
    if (!context || !queue?.enabled || this.controlPending.length === 0) return;
    this.popEach(queue, (element) => {
      const message = this.controlPending.shift();
      const written = queue.scatter(element, 0, message!);
      this.complete(context, queue, element, written);
    }, () => this.controlPending.length > 0);
  }

  protected override activated(): void {
    for (const port of this.ports) this.fillReceive(port);
  }

  protected override resetDevice(): void {
    this.controlPending = [];
    for (const port of this.ports) port.guestOpen = false;
  }

  saveState(): VersionedState {
    return { version: 1, fields: { open: this.ports.map((p) => p.guestOpen) } };
  }
}
