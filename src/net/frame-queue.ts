import type { NetReceiver } from './net-backend.js';

/**
 * Frames from the network waiting for a NIC that said it had no room: the back end stops reading its host socket
 * while any wait (streams), or drops beyond `limit` (datagram sockets cannot be paused).
 */
export class FrameQueue {
  private readonly frames: Uint8Array[] = [];
  receiver: NetReceiver | null = null;

  constructor(private readonly limit: number) {}

  get holding(): boolean {
    return this.frames.length > 0;
  }

  /** Delivers a frame, or holds it when the NIC refuses (or earlier frames wait); false when dropped. */
  offer(frame: Uint8Array): boolean {
    if (this.frames.length === 0 && (!this.receiver || this.receiver.receive(frame))) return true;
    if (this.frames.length >= this.limit) return false;
    this.frames.push(frame);
    return true;
  }

  /** Delivers held frames until the NIC refuses again; true when none is left. */
  drain(): boolean {
    while (this.frames.length > 0 && this.receiver) {
      if (!this.receiver.receive(this.frames[0])) return false;
      this.frames.shift();
    }
    return this.frames.length === 0;
  }

  clear(): void {
    this.frames.length = 0;
  }
}
