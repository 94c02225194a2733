import { closeSync, openSync, writeSync } from 'node:fs';
import { TsvmError, errorMessage } from '../../base/errors.js';
import { type HostConsole, OutputBatcher } from './host-console.js';

/** `-serial file:PATH`: guest output appended to a file (truncated at start, as QEMU does); no input. */
export class FileConsole implements HostConsole {
  private readonly fd: number;
  private readonly out: OutputBatcher;

  constructor(path: string) {
    try {
      this.fd = openSync(path, 'w');
    } catch (e) {
      throw new TsvmError(`could not open serial file '${path}': ${errorMessage(e)}`);
    }
    this.out = new OutputBatcher((b) => writeSync(this.fd, b));
  }

  write(bytes: Uint8Array): void {
    this.out.push(bytes);
  }

  onInput(): void {}

  async close(): Promise<void> {
    this.out.flush();
    closeSync(this.fd);
  }
}
