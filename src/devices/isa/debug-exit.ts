import type { VersionedState } from '../../base/state.js';
import type { PortIoBus } from '../../memory/port-io-bus.js';
import type { Device } from '../device.js';

/**
 * QEMU's isa-debug-exit: a write of V to its ports ends the emulator with exit status (V << 1) | 1, so a test
 * guest can report success or failure as the process's status (it can never be 0, a normal exit).
 */
export class IsaDebugExit implements Device {
  readonly id = 'isa-debug-exit';

  constructor(io: PortIoBus, iobase: number, iosize: number, exit: (status: number) => void) {
    io.register(iobase, iosize, {
      read: () => 0xffffffff,
      write: (_o, _s, v) => exit(((v << 1) | 1) >>> 0),
    }, { name: 'isa-debug-exit' });
  }

  reset(): void {}

  saveState(): VersionedState {
    return { version: 1, fields: {} };
  }

  restoreState(): void {}
}
