import { Duplex } from 'node:stream';
import type { HostConsole } from './host-console.js';

/**
 * The console as a Node stream for programs that embed tsvm: read the guest's output from `stream`, write
 * input to it. Input written before the guest reads is queued by the device, never lost.
 */
export class StreamConsole implements HostConsole {
  private listener: ((bytes: Uint8Array) => void) | null = null;
  private pending: Uint8Array[] = [];
  readonly stream: Duplex;

  constructor() {
    this.stream = new Duplex({
      read: () => {},
      write: (chunk: Buffer, _encoding, callback) => {
        if (this.listener) this.listener(chunk);
        else this.pending.push(chunk);
        callback();
      },
    });
  }

  write(bytes: Uint8Array): void {
    this.stream.push(Buffer.from(bytes));
  }

  onInput(listener: (bytes: Uint8Array) => void): void {
    this.listener = listener;
    for (const p of this.pending) listener(p);
    this.pending = [];
  }

  async close(): Promise<void> {
    this.stream.push(null);
  }
}
