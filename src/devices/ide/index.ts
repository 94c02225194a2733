/** The PIIX3 IDE controller with ATA disks and ATAPI CD/DVD-ROMs (see piix3-ide.ts). */
export { Piix3Ide, type IdeDrive, type IdeDriveInfo, type Piix3IdeOptions } from './piix3-ide.js';
export { type BiosTranslation, type Chs, type DiskGeometry, autoTranslation, chsForSize, guessDiskGeometry } from './identify.js';
