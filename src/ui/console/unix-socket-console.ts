import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { unlinkSync } from 'node:fs';
import { TsvmError, errorMessage } from '../../base/errors.js';
import { type HostConsole, OutputBatcher } from './host-console.js';

/**
 * `-serial unix:PATH[,server][,nowait]`: the console on a UNIX socket. As a server it accepts one client at
 * a time; output while no client is connected is dropped (as in QEMU). `ready` resolves when the machine may
 * start: at once, or for a server without nowait, when the first client connects.
 */
export class UnixSocketConsole implements HostConsole {
  private socket: Socket | null = null;
  private server: Server | null = null;
  private listener: ((bytes: Uint8Array) => void) | null = null;
  private readonly out = new OutputBatcher((b) => this.socket?.write(b));
  readonly ready: Promise<void>;

  constructor(private readonly path: string, server: boolean, wait: boolean) {
    this.ready = server ? this.listen(wait) : this.connect();
  }

  private attach(socket: Socket): void {
    this.socket = socket;
    socket.on('data', (d) => this.listener?.(d));
    socket.on('error', () => {});
    socket.on('close', () => {
      if (this.socket === socket) this.socket = null;
    });
  }

  private listen(wait: boolean): Promise<void> {
    try {
      unlinkSync(this.path);
    } catch {
      // No stale socket file: nothing to remove.
    }
    return new Promise((resolve, reject) => {
      const server = createServer((s) => {
        if (this.socket) {
          s.destroy();
          return;
        }
        this.attach(s);
        resolve();
      });
      this.server = server;
      server.on('error', (e) => reject(new TsvmError(`could not listen on unix:${this.path}: ${errorMessage(e)}`)));
      server.listen(this.path, () => {
        if (!wait) resolve();
      });
    });
  }

  private connect(): Promise<void> {
    return new Promise((resolve, reject) => {
      const s = createConnection(this.path, () => resolve());
      s.once('error', (e) => reject(new TsvmError(`could not connect to unix:${this.path}: ${errorMessage(e)}`)));
      this.attach(s);
    });
  }

  write(bytes: Uint8Array): void {
    if (this.socket) this.out.push(bytes);
  }

  onInput(listener: (bytes: Uint8Array) => void): void {
    this.listener = listener;
  }

  async close(): Promise<void> {
    this.out.flush();
    this.socket?.end();
    if (this.server) {
      await new Promise<void>((r) => this.server!.close(() => r()));
      try {
        unlinkSync(this.path);
      } catch {
        // Already gone.
      }
    }
  }
}
