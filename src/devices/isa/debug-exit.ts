import type { VersionedState } from '../../base/state.js';
import { stateSchema } from '../../base/state-schema.js';
import type { PortIoBus } from '../../memory/port-io-bus.js';
import type { Device } from '../device.js';

/** The device has no state of its own; its (empty) state still has a version. */
const DEBUG_EXIT_STATE = stateSchema(1, {});

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
    return DEBUG_EXIT_STATE.save({});
  }

  checkState(state: VersionedState): void {
    DEBUG_EXIT_STATE.restore(this.id, state);
  }

  restoreState(state: VersionedState): void {
    DEBUG_EXIT_STATE.restore(this.id, state);
  }
}
