/** The typed API: everything a program needs to build and run VMs. */
export { Machine, type MachineExit, type MachineConfig, defaultMachineConfig } from './machine.js';
export type { SerialConfig, DriveConfig, BootConfig } from '../machine/config.js';
export { ensureDefaultGuest, findDefaultGuest, type GuestInfo } from '../guest/default-guest.js';
export { TSVM_VERSION } from './version.js';
