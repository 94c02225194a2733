/** The disk-image block layer: raw, qcow2 and qcow (v1) images compatible with QEMU 7.2's qemu-img. */
export type { BlockDriver, BlockStatus, ImageFormat, OpenImageOptions, CreateImageOptions } from './block-driver.js';
export { openImage, createImage, probeFormat, resolveBackingPath } from './block-driver.js';
export { BlockFile } from './file.js';
export { RawImage } from './raw.js';
export { Qcow2Image, type Qcow2OpenOptions, type Qcow2CheckResult, type Qcow2Info, type SnapshotInfo } from './qcow2/qcow2.js';
export { createQcow2, type Qcow2CreateOptions } from './qcow2/create.js';
export { QcowImage, createQcow, type QcowCreateOptions, type QcowOpenOptions } from './qcow/qcow.js';
export { convertImage, copyImage, type ConvertOptions, type CopyOptions } from './convert.js';
