/**
 * The host side of a guest character device (a serial port, the debug console): where the guest's bytes go
 * and where input for the guest comes from. The device side (e.g. the 16550 UART) queues input itself, so
 * a console only pushes bytes as they arrive.
 */
export interface HostConsole {
  /** Bytes the guest sent. */
  write(bytes: Uint8Array): void;
  /** Input for the guest. One listener (the device). */
  onInput(listener: (bytes: Uint8Array) => void): void;
  /** A break on the line (Ctrl-A b on a terminal); optional. */
  onBreak?(listener: () => void): void;
  /** Writes out what is buffered and releases the host resource (terminal mode, socket, file). */
  close(): Promise<void>;
}

/**
 * Guest output is produced a byte at a time; writing each byte to the host would cost a system call per
 * character of a kernel's boot log. This collects bytes and hands them on once per event-loop turn.
 */
export class OutputBatcher {
  private chunks: Uint8Array[] = [];
  private scheduled = false;

  constructor(private readonly sink: (bytes: Uint8Array) => void) {}

  push(bytes: Uint8Array): void {
    this.chunks.push(bytes.slice());
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.scheduled = false;
    if (this.chunks.length === 0) return;
    const all = Buffer.concat(this.chunks);
    this.chunks = [];
    this.sink(all);
  }
}

/** A console that drops output and never has input (`-serial none`). */
export class NullConsole implements HostConsole {
  write(): void {}
  onInput(): void {}
  async close(): Promise<void> {}
}
