import type { VersionedState } from '../../base/state.js';
import { bool, stateSchema } from '../../base/state-schema.js';
import type { PhysicalMemory } from '../../memory/physical-memory.js';
import type { PortIoBus } from '../../memory/port-io-bus.js';
import type { Device } from '../device.js';
import type { SystemControl } from '../system-control.js';

/** Version 2 adds the A20 gate (the memory's, which port 0x92 and the i8042's output port both drive). */
const PORT92_STATE = stateSchema(2, { a20: bool });

/**
 * System control port A (0x92: bit 1 A20 gate, bit 0 fast reset) and the PIIX reset control register
 * (0xCF9: writing bit 2 with bit 1 set resets the system).
 */
export class SystemPorts implements Device {
  readonly id = 'port92';

  constructor(io: PortIoBus, private readonly memory: PhysicalMemory, private readonly control: SystemControl) {
    io.register(0x92, 1, {
      read: () => (this.memory.a20Enabled ? 2 : 0),
      write: (_o, _s, v) => {
        this.memory.setA20((v & 2) !== 0);
        if (v & 1) this.control.requestReset();
      },
    }, { sizes: 1, name: 'port92' });
    io.register(0xcf9, 1, {
      read: () => 0,
      write: (_o, _s, v) => {
        if (v & 4) this.control.requestReset();
      },
    }, { sizes: 1, name: 'reset-control' });
  }

  reset(): void {}

  saveState(): VersionedState {
    return PORT92_STATE.save({ a20: this.memory.a20Enabled });
  }

  checkState(state: VersionedState): void {
    PORT92_STATE.restore(this.id, state);
  }

  restoreState(state: VersionedState): void {
    this.memory.setA20(PORT92_STATE.restore(this.id, state).a20);
  }
}
