/** The installer CD (an "OS installer CD" built from Debian packages) and the install-then-boot flow. */
export * from './installer-cd.js';
export * from './install-flow.js';
export { patchBootCode, readBootCode } from './grub-boot-code.js';
export * from './debian-installer-cd.js';
