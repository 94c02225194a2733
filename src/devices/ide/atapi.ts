/**
 * The ATAPI CD/DVD-ROM command set (SCSI MMC commands carried by the ATA PACKET command): decoding a
 * 12-byte packet and building the reply data. The transport (PIO with byte-count limits, DMA, interrupts)
 * is the channel's job; reads of sectors are returned as a request for it to carry out.
 */

export const CD_SECTOR_SIZE = 2048;
/** More 2048-byte sectors than a CD (80 minutes) holds: the medium is reported as a DVD. */
export const CD_MAX_SECTORS = 80 * 60 * 75;

export const enum Sense {
  NO_SENSE = 0,
  NOT_READY = 2,
  MEDIUM_ERROR = 3,
  ILLEGAL_REQUEST = 5,
  UNIT_ATTENTION = 6,
}

export const ASC_INVALID_OPCODE = 0x20;
export const ASC_LBA_OUT_OF_RANGE = 0x21;
export const ASC_INVALID_FIELD = 0x24;
export const ASC_MEDIUM_MAY_HAVE_CHANGED = 0x28;
export const ASC_INCOMPATIBLE_FORMAT = 0x30;
export const ASC_SAVING_PARAMETERS_NOT_SUPPORTED = 0x39;
export const ASC_MEDIUM_NOT_PRESENT = 0x3a;
export const ASC_MEDIA_REMOVAL_PREVENTED = 0x53;

/** What the command set keeps of a drive (all plain data; part of the device state). */
export interface AtapiState {
  /** 2048-byte sectors of the inserted medium (0: none). */
  sectors: number;
  hasMedium: boolean;
  trayOpen: boolean;
  trayLocked: boolean;
  senseKey: number;
  asc: number;
  ascq: number;
  /** A unit attention (medium changed) waits to be reported to the next command that does not allow it. */
  unitAttention: boolean;
  /** Media events for GET EVENT STATUS NOTIFICATION: 0 none, 2 new media, 3 media removal. */
  mediaEvent: number;
  /** INQUIRY's product and revision. */
  model: string;
  firmware: string;
}

export type AtapiResult =
  | { kind: 'ok' }
  | { kind: 'data'; data: Uint8Array }
  | { kind: 'error'; key: number; asc: number; ascq?: number }
  | { kind: 'read'; lba: number; count: number };

const OK: AtapiResult = { kind: 'ok' };
const error = (key: number, asc: number, ascq = 0): AtapiResult => ({ kind: 'error', key, asc, ascq });
const invalidField = () => error(Sense.ILLEGAL_REQUEST, ASC_INVALID_FIELD);

const be16 = (b: Uint8Array, o: number) => (b[o] << 8) | b[o + 1];
const be32 = (b: Uint8Array, o: number) => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >> 8) & 0xff;
  b[o + 1] = v & 0xff;
}
function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 24) & 0xff;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}

/** Data up to the allocation length the command gave. */
function reply(data: Uint8Array, allocation: number): AtapiResult {
  return { kind: 'data', data: data.length > allocation ? data.subarray(0, allocation) : data };
}

const enum Flag {
  /** Completes even while a unit attention is pending. */
  ALLOW_UA = 1,
  /** Needs a medium (else NOT READY, MEDIUM NOT PRESENT). */
  CHECK_READY = 2,
}

const FLAGS: Record<number, number> = {
  0x00: Flag.CHECK_READY, // TEST UNIT READY
  0x03: Flag.ALLOW_UA, // REQUEST SENSE
  0x12: Flag.ALLOW_UA, // INQUIRY
  0x1b: 0, // START STOP UNIT
  0x1e: 0, // PREVENT ALLOW MEDIUM REMOVAL
  0x25: Flag.CHECK_READY, // READ CAPACITY
  0x28: Flag.CHECK_READY, // READ(10)
  0x2b: Flag.CHECK_READY, // SEEK(10)
  0x43: Flag.CHECK_READY, // READ TOC/PMA/ATIP
  0x46: Flag.ALLOW_UA, // GET CONFIGURATION
  0x4a: Flag.ALLOW_UA, // GET EVENT STATUS NOTIFICATION
  0x51: Flag.CHECK_READY, // READ DISC INFORMATION
  0x5a: 0, // MODE SENSE(10)
  0xa8: Flag.CHECK_READY, // READ(12)
  0xbb: 0, // SET CD SPEED
  0xbd: 0, // MECHANISM STATUS
  0xbe: Flag.CHECK_READY, // READ CD
};

export function mediumPresent(s: AtapiState): boolean {
  return s.hasMedium && !s.trayOpen && s.sectors > 0;
}

/**
 * Decodes and executes one packet. Sense data of errors and successes is recorded by the caller
 * (`recordResult`), since a read can still fail later.
 */
export function atapiCommand(s: AtapiState, cdb: Uint8Array): AtapiResult {
  const op = cdb[0];
  const flags = FLAGS[op];
  if (flags === undefined) return error(Sense.ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
  if (s.unitAttention && !(flags & Flag.ALLOW_UA)) {
    s.unitAttention = false;
    return error(Sense.UNIT_ATTENTION, ASC_MEDIUM_MAY_HAVE_CHANGED);
  }
  if (flags & Flag.CHECK_READY && !mediumPresent(s)) return error(Sense.NOT_READY, ASC_MEDIUM_NOT_PRESENT);
  switch (op) {
    case 0x00:
      return OK;
    case 0x03: {
      const b = new Uint8Array(18);
      b[0] = 0x70 | 0x80; // current error, valid
      b[2] = s.senseKey;
      b[7] = 10;
      b[12] = s.asc;
      b[13] = s.ascq;
      if (s.senseKey === Sense.UNIT_ATTENTION) setSense(s, Sense.NO_SENSE, 0, 0);
      return reply(b, cdb[4]);
    }
    case 0x12:
      return inquiry(s, cdb);
    case 0x1b: {
      const start = cdb[4] & 1, loej = cdb[4] & 2;
      if (!loej) return OK;
      if (!start) {
        if (s.trayLocked) return error(Sense.NOT_READY, ASC_MEDIA_REMOVAL_PREVENTED, 2);
        if (!s.trayOpen && s.hasMedium) s.mediaEvent = 3;
        s.trayOpen = true;
      } else if (s.trayOpen) {
        s.trayOpen = false;
        if (s.hasMedium) s.mediaEvent = 2;
      }
      return OK;
    }
    case 0x1e:
      s.trayLocked = (cdb[4] & 1) !== 0;
      return OK;
    case 0x25: {
      const b = new Uint8Array(8);
      put32(b, 0, s.sectors - 1);
      put32(b, 4, CD_SECTOR_SIZE);
      return { kind: 'data', data: b };
    }
    case 0x28:
      return readRequest(s, be32(cdb, 2), be16(cdb, 7));
    case 0xa8:
      return readRequest(s, be32(cdb, 2), be32(cdb, 6));
    case 0xbe: {
      // READ CD: only user data of data sectors (what a 2048-byte image holds).
      const count = (cdb[6] << 16) | (cdb[7] << 8) | cdb[8];
      const fields = cdb[9] & 0xf8;
      if (fields === 0) return OK; // nothing asked for
      if (fields !== 0x10) return error(Sense.ILLEGAL_REQUEST, ASC_INVALID_FIELD);
      return readRequest(s, be32(cdb, 2), count);
    }
    case 0x2b:
      return be32(cdb, 2) >= s.sectors ? error(Sense.ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE) : OK;
    case 0x43:
      return readToc(s, cdb);
    case 0x46:
      return getConfiguration(s, cdb);
    case 0x4a:
      return getEventStatus(s, cdb);
    case 0x51: {
      if ((cdb[1] & 7) !== 0) return invalidField();
      const b = new Uint8Array(34);
      put16(b, 0, 32);
      b[2] = 0x0e; // last session complete, disc complete
      b[3] = 1; // first track
      b[4] = 1; // sessions
      b[5] = 1; // first track of last session
      b[6] = 1; // last track of last session
      b[7] = 0x20; // unrestricted use
      b[8] = 0x00; // CD-DA or CD-ROM
      return reply(b, be16(cdb, 7));
    }
    case 0x5a:
      return modeSense10(s, cdb);
    case 0xbb:
      return OK;
    case 0xbd: {
      const b = new Uint8Array(8);
      b[1] = s.trayOpen ? 0x10 : 0; // mechanism idle, door open bit
      b[5] = 0; // no changer slots
      return reply(b, be16(cdb, 8));
    }
  }
  return error(Sense.ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
}

export function setSense(s: AtapiState, key: number, asc: number, ascq: number): void {
  s.senseKey = key;
  s.asc = asc;
  s.ascq = ascq;
}

function readRequest(s: AtapiState, lba: number, count: number): AtapiResult {
  if (count === 0) return OK;
  if (lba + count > s.sectors) return error(Sense.ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
  return { kind: 'read', lba, count };
}

function ascii(b: Uint8Array, o: number, length: number, text: string): void {
  const t = text.padEnd(length, ' ');
  for (let i = 0; i < length; i++) b[o + i] = t.charCodeAt(i) & 0x7f;
}

function inquiry(s: AtapiState, cdb: Uint8Array): AtapiResult {
  const allocation = be16(cdb, 3);
  if (cdb[1] & 1) {
    // Vital product data: only the list of supported pages.
    if (cdb[2] !== 0) return invalidField();
    return reply(Uint8Array.of(0x05, 0x00, 0x00, 0x01, 0x00), allocation);
  }
  if (cdb[2] !== 0) return invalidField();
  const b = new Uint8Array(36);
  b[0] = 0x05; // CD/DVD device
  b[1] = 0x80; // removable
  b[2] = 0x00;
  b[3] = 0x21; // ATAPI version 2, response data format 1
  b[4] = 36 - 5;
  ascii(b, 8, 8, 'QEMU');
  ascii(b, 16, 16, s.model);
  ascii(b, 32, 4, s.firmware);
  return reply(b, allocation);
}

/** Minutes/seconds/frames of a logical block address (the 2-second pregap included). */
function putMsf(b: Uint8Array, o: number, lba: number): void {
  const frames = lba + 150;
  b[o] = Math.floor(frames / (60 * 75)) & 0xff;
  b[o + 1] = Math.floor(frames / 75) % 60;
  b[o + 2] = frames % 75;
}

function putAddress(b: Uint8Array, o: number, lba: number, msf: boolean): void {
  if (msf) {
    b[o] = 0;
    putMsf(b, o + 1, lba);
  } else put32(b, o, lba);
}

/** READ TOC: format 0 (track descriptors), 1 (multisession info), 2 (raw TOC, always in MSF). */
export function readToc(s: AtapiState, cdb: Uint8Array): AtapiResult {
  const msf = (cdb[1] & 2) !== 0;
  const startTrack = cdb[6];
  const allocation = be16(cdb, 7);
  // MMC's format field; older (SFF-8020) hosts put it in the top bits of the control byte.
  let format = cdb[2] & 0x0f;
  if (format === 0) format = cdb[9] >> 6;
  const total = s.sectors;
  switch (format) {
    case 0: {
      if (startTrack > 1 && startTrack !== 0xaa) return invalidField();
      const b = new Uint8Array(4 + 8 + 8);
      let o = 4;
      b[2] = 1; // first track
      b[3] = 1; // last track
      if (startTrack <= 1) {
        b[o + 1] = 0x14; // ADR 1, data track
        b[o + 2] = 1;
        putAddress(b, o + 4, 0, msf);
        o += 8;
      }
      b[o + 1] = 0x14;
      b[o + 2] = 0xaa; // lead-out
      putAddress(b, o + 4, total, msf);
      o += 8;
      put16(b, 0, o - 2);
      return reply(b.subarray(0, o), allocation);
    }
    case 1: {
      const b = new Uint8Array(12);
      put16(b, 0, 10);
      b[2] = 1; // first session
      b[3] = 1; // last session
      b[5] = 0x14;
      b[6] = 1; // first track of the last session
      putAddress(b, 8, 0, msf);
      return reply(b, allocation);
    }
    case 2: {
      const b = new Uint8Array(4 + 4 * 11);
      b[2] = 1;
      b[3] = 1;
      const entry = (i: number, point: number, pmin: number, psec: number, pframe: number) => {
        const o = 4 + 11 * i;
        b[o] = 1; // session
        b[o + 1] = 0x14;
        b[o + 3] = point;
        b[o + 8] = pmin;
        b[o + 9] = psec;
        b[o + 10] = pframe;
      };
      entry(0, 0xa0, 1, 0x00, 0); // first track 1, CD-DA/CD-ROM disc
      entry(1, 0xa1, 1, 0, 0); // last track 1
      const lead = new Uint8Array(3);
      putMsf(lead, 0, total);
      entry(2, 0xa2, lead[0], lead[1], lead[2]); // lead-out start
      const first = new Uint8Array(3);
      putMsf(first, 0, 0);
      entry(3, 1, first[0], first[1], first[2]); // track 1 start
      put16(b, 0, b.length - 2);
      return reply(b, allocation);
    }
    default:
      return invalidField();
  }
}

function isDvd(s: AtapiState): boolean {
  return s.sectors > CD_MAX_SECTORS;
}

function getConfiguration(s: AtapiState, cdb: Uint8Array): AtapiResult {
  const rt = cdb[1] & 3;
  if (rt === 3) return invalidField();
  const start = be16(cdb, 2);
  const allocation = be16(cdb, 7);
  const present = mediumPresent(s);
  const profile = !present ? 0 : isDvd(s) ? 0x0010 : 0x0008;
  // Features in code order: [code, current, version/persistent byte, additional data].
  const features: { code: number; current: boolean; flags: number; data: number[] }[] = [
    // Profile list: DVD-ROM, CD-ROM (each: profile, current flag, reserved).
    { code: 0x0000, current: true, flags: 0x03, data: [0x00, 0x10, profile === 0x10 ? 1 : 0, 0, 0x00, 0x08, profile === 0x08 ? 1 : 0, 0] },
    // Core: ATAPI physical interface.
    { code: 0x0001, current: true, flags: 0x07, data: [0, 0, 0, 2, 1, 0, 0, 0] },
    // Removable medium: tray loading, eject, lock.
    { code: 0x0003, current: true, flags: 0x03, data: [(1 << 5) | (1 << 3) | 1 | (s.trayLocked ? 2 : 0), 0, 0, 0] },
    // Random readable: 2048-byte blocks, blocking 1, page present.
    { code: 0x0010, current: present, flags: 0x01, data: [0, 0, 0x08, 0, 0, 1, 1, 0] },
    // CD read.
    { code: 0x001e, current: present && !isDvd(s), flags: 0x09, data: [0, 0, 0, 0] },
    // DVD read.
    { code: 0x001f, current: present && isDvd(s), flags: 0x01, data: [] },
  ];
  const parts: number[] = [];
  for (const f of features) {
    if (rt === 2 ? f.code !== start : f.code < start) continue;
    if (rt === 1 && !f.current) continue;
    parts.push(f.code >> 8, f.code & 0xff, f.flags | (f.current ? 1 : 0), f.data.length, ...f.data);
  }
  const b = new Uint8Array(8 + parts.length);
  put32(b, 0, b.length - 4);
  put16(b, 6, profile);
  b.set(parts, 8);
  return reply(b, allocation);
}

function getEventStatus(s: AtapiState, cdb: Uint8Array): AtapiResult {
  if ((cdb[1] & 1) === 0) return invalidField(); // only polled operation
  const allocation = be16(cdb, 7);
  const supported = 1 << 4; // media class
  if ((cdb[4] & supported) === 0) {
    const b = new Uint8Array(4);
    put16(b, 0, 2);
    b[2] = 0x80; // no event available
    b[3] = supported;
    return reply(b, allocation);
  }
  const b = new Uint8Array(8);
  put16(b, 0, 6);
  b[2] = 4; // media class
  b[3] = supported;
  b[4] = s.mediaEvent;
  b[5] = (s.trayOpen ? 1 : 0) | (mediumPresent(s) ? 2 : 0);
  s.mediaEvent = 0;
  return reply(b, allocation);
}

function modeSense10(s: AtapiState, cdb: Uint8Array): AtapiResult {
  const control = cdb[2] >> 6;
  const page = cdb[2] & 0x3f;
  const allocation = be16(cdb, 7);
  if (control === 3) return error(Sense.ILLEGAL_REQUEST, ASC_SAVING_PARAMETERS_NOT_SUPPORTED);
  if (control !== 0) return invalidField();
  const errorRecovery = [0x01, 0x06, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00];
  const capabilities = new Uint8Array(22);
  capabilities[0] = 0x2a;
  capabilities[1] = 20;
  capabilities[2] = 0x3b; // reads CD-R, CD-RW, DVD-ROM, DVD-R, DVD-RAM (method 2)
  capabilities[3] = 0x00; // writes nothing
  capabilities[4] = 0x71; // audio play, multisession, mode 2 form 1/2
  capabilities[5] = 3 << 5; // ISRC, UPC
  capabilities[6] = (1 << 0) | (1 << 3) | (1 << 5) | (s.trayLocked ? 1 << 1 : 0); // lock, eject, tray loader
  capabilities[7] = 0;
  put16(capabilities, 8, 704); // maximum read speed (4x), kB/s
  put16(capabilities, 10, 2); // volume levels
  put16(capabilities, 12, 512); // buffer size, KiB
  put16(capabilities, 14, 704); // current read speed
  let body: number[];
  if (page === 0x01) body = errorRecovery;
  else if (page === 0x2a) body = [...capabilities];
  else if (page === 0x3f) body = [...errorRecovery, ...capabilities];
  else return invalidField();
  const b = new Uint8Array(8 + body.length);
  put16(b, 0, b.length - 2);
  b[2] = 0x70; // medium type (obsolete field), as QEMU reports it
  b.set(body, 8);
  return reply(b, allocation);
}
