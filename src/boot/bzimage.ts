import { TsvmError } from '../base/errors.js';

/** What the loader needs from a bzImage's setup header (Documentation/arch/x86/boot.rst). */
export interface BzImage {
  /** Protocol version, e.g. 0x020f. */
  protocol: number;
  setupSectors: number;
  /** The setup header bytes (0x1F1 up to its end), copied into boot_params. */
  setupHeader: Uint8Array;
  /** The 32-bit kernel (everything after the real-mode setup code). */
  protectedModeKernel: Uint8Array;
  loadFlags: number;
  code32Start: number;
  initrdAddressMax: number;
  commandLineSize: number;
  relocatable: boolean;
  kernelAlignment: number;
  initSize: number;
}

const HEADER_OFFSET = 0x1f1;
/** The smallest protocol with everything the 32-bit entry needs (cmdline_size, initrd_addr_max...). */
const MIN_PROTOCOL = 0x0206;
/** Setup code larger than this is not a kernel (the field is one byte; 64 sectors is already huge). */
const MAX_SETUP_SECTORS = 64;

export function parseBzImage(name: string, bytes: Uint8Array): BzImage {
  if (bytes.length < 0x264) throw new TsvmError(`${name}: not a Linux kernel image (file too small)`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dv.getUint32(0x202, true) !== 0x53726448 /* "HdrS" */ || dv.getUint16(0x1fe, true) !== 0xaa55) {
    throw new TsvmError(`${name}: not a Linux bzImage (no "HdrS" setup header)`);
  }
  const protocol = dv.getUint16(0x206, true);
  if (protocol < MIN_PROTOCOL) throw new TsvmError(`${name}: Linux boot protocol ${(protocol >> 8)}.${protocol & 0xff} is too old (need 2.06)`);
  let setupSectors = bytes[0x1f1];
  if (setupSectors === 0) setupSectors = 4;
  if (setupSectors > MAX_SETUP_SECTORS) throw new TsvmError(`${name}: corrupt setup header (setup_sects ${setupSectors})`);
  const kernelOffset = (setupSectors + 1) * 512;
  if (kernelOffset >= bytes.length) throw new TsvmError(`${name}: truncated kernel image`);
  const loadFlags = bytes[0x211];
  if ((loadFlags & 1) === 0) throw new TsvmError(`${name}: not a bzImage (zImage kernels are not supported)`);
  const syssize = dv.getUint32(0x1f4, true);
  const payloadEnd = kernelOffset + syssize * 16;
  if (syssize === 0 || payloadEnd > bytes.length) throw new TsvmError(`${name}: truncated kernel image`);
  const headerEnd = 0x202 + bytes[0x201];
  return {
    protocol,
    setupSectors,
    setupHeader: bytes.slice(HEADER_OFFSET, headerEnd),
    protectedModeKernel: bytes.subarray(kernelOffset),
    loadFlags,
    code32Start: dv.getUint32(0x214, true),
    initrdAddressMax: dv.getUint32(0x22c, true),
    commandLineSize: dv.getUint32(0x238, true),
    relocatable: bytes[0x234] !== 0,
    kernelAlignment: dv.getUint32(0x230, true),
    initSize: protocol >= 0x020a ? dv.getUint32(0x260, true) : 0,
  };
}
