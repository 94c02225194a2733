import { type HostConsole, OutputBatcher } from './host-console.js';

const CTRL_A = 0x01;

/**
 * The serial console on the process's stdin/stdout. On a terminal, stdin is switched to raw mode (keys,
 * including Ctrl-C, go to the guest) and QEMU's escape character works: Ctrl-A x quits, Ctrl-A b sends a break
 * (Linux's SysRq), Ctrl-A Ctrl-A sends Ctrl-A, Ctrl-A h prints help. When stdin is not a terminal, bytes pass through untouched and are queued by
 * the device until the guest reads them.
 */
export class StdioConsole implements HostConsole {
  private readonly out = new OutputBatcher((b) => process.stdout.write(b));
  private listener: ((bytes: Uint8Array) => void) | null = null;
  private breakListener: (() => void) | null = null;
  private pending: Uint8Array[] = [];
  private escape = false;
  private readonly raw: boolean;
  private readonly onData = (chunk: Buffer) => this.input(chunk);

  constructor(private readonly onQuit: () => void) {
    this.raw = process.stdin.isTTY === true;
    if (this.raw) process.stdin.setRawMode(true);
    process.stdin.on('data', this.onData);
    process.stdin.on('error', () => {});
    process.stdout.on('error', () => {});
  }

  write(bytes: Uint8Array): void {
    this.out.push(bytes);
  }

  onInput(listener: (bytes: Uint8Array) => void): void {
    this.listener = listener;
    for (const p of this.pending) listener(p);
    this.pending = [];
  }

  onBreak(listener: () => void): void {
    this.breakListener = listener;
  }

  private deliver(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    if (this.listener) this.listener(bytes);
    else this.pending.push(bytes);
  }

  private input(chunk: Buffer): void {
    if (!this.raw) {
      this.deliver(chunk);
      return;
    }
    const passed: number[] = [];
    for (const byte of chunk) {
      if (this.escape) {
        this.escape = false;
        if (byte === 0x78 /* x */) {
          this.out.flush();
          process.stdout.write('\r\ntsvm: terminated\r\n');
          this.onQuit();
          return;
        }
        if (byte === 0x68 /* h */) {
          this.out.flush();
          process.stdout.write('\r\nC-a h    print this help\r\nC-a x    exit emulator\r\nC-a b    send break\r\nC-a C-a  sends C-a\r\n');
          continue;
        }
        if (byte === 0x62 /* b */) {
          this.deliver(Uint8Array.from(passed));
          passed.length = 0;
          this.breakListener?.();
          continue;
        }
        if (byte === CTRL_A) passed.push(CTRL_A);
        continue;
      }
      if (byte === CTRL_A) this.escape = true;
      else passed.push(byte);
    }
    this.deliver(Uint8Array.from(passed));
  }

  async close(): Promise<void> {
    this.out.flush();
    process.stdin.off('data', this.onData);
    if (this.raw) process.stdin.setRawMode(false);
    process.stdin.pause();
    await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
  }
}
