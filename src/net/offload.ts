/**
 * The work NICs offload from the guest, done in software before a frame leaves for the back end: Internet
 * checksums (IP header, TCP/UDP with their pseudo-header seed already in place, as drivers leave it) and TCP
 * segmentation of one large frame into MSS-sized frames. Shared by the e1000 and virtio-net.
 */

/** The 16-bit one's-complement sum (unfolded) of big-endian words over frame[start, end). */
export function onesSum(frame: Uint8Array, start: number, end: number, sum = 0): number {
  let i = start;
  for (; i + 1 < end; i += 2) sum += (frame[i] << 8) | frame[i + 1];
  if (i < end) sum += frame[i] << 8;
  return sum;
}

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/**
 * Stores the complemented checksum of frame[start, end) plus `addend` at `at` (big-endian). The field at `at`
 * takes part with the value it holds (the driver's pseudo-header seed). Ranges outside the frame are ignored.
 */
export function insertChecksum(frame: Uint8Array, start: number, end: number, at: number, addend = 0): void {
  end = Math.min(end, frame.length);
  if (start >= end || at + 2 > frame.length) return;
  const c = ~fold(onesSum(frame, start, end, addend)) & 0xffff;
  frame[at] = c >> 8;
  frame[at + 1] = c & 0xff;
}

/** Where the headers of a frame to segment are, and the segment size. */
export interface Segmentation {
  /** Bytes of Ethernet, IP and TCP/UDP headers copied in front of every segment. */
  headerLength: number;
  /** Payload bytes per segment. */
  mss: number;
  ipStart: number;
  ipv4: boolean;
  l4Start: number;
  tcp: boolean;
}

/**
 * Cuts a frame into segments of `mss` payload bytes, each with a copy of the headers fixed up: IP total or
 * payload length, IPv4 identification (one more per segment), TCP sequence number (FIN and PSH only on the
 * last), UDP length. Checksums are left to the caller (they depend on the NIC's offload settings).
 * Returns no segments when the headers are not inside the frame or the MSS is 0.
 */
export function segment(frame: Uint8Array, s: Segmentation): Uint8Array[] {
  const { headerLength: h, mss } = s;
  const ipEnd = s.ipStart + (s.ipv4 ? 20 : 40);
  const l4End = s.l4Start + (s.tcp ? 20 : 8);
  if (mss === 0 || h > frame.length || ipEnd > h || l4End > h || s.l4Start < ipEnd) return [];
  const out: Uint8Array[] = [];
  const payload = frame.length - h;
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const ipId = s.ipv4 ? dv.getUint16(s.ipStart + 4) : 0;
  const seq = s.tcp ? dv.getUint32(s.l4Start + 4) : 0;
  for (let offset = 0, n = 0; offset < payload || (payload === 0 && n === 0); offset += mss, n++) {
    const length = Math.min(mss, payload - offset);
    const seg = new Uint8Array(h + length);
    seg.set(frame.subarray(0, h));
    seg.set(frame.subarray(h + offset, h + offset + length), h);
    const v = new DataView(seg.buffer);
    if (s.ipv4) {
      v.setUint16(s.ipStart + 2, seg.length - s.ipStart);
      v.setUint16(s.ipStart + 4, (ipId + n) & 0xffff);
    } else {
      v.setUint16(s.ipStart + 4, seg.length - ipEnd);
    }
    if (s.tcp) {
      v.setUint32(s.l4Start + 4, (seq + offset) >>> 0);
      if (offset + length < payload) seg[s.l4Start + 13] &= ~0x09; // FIN and PSH belong to the last segment
    } else {
      v.setUint16(s.l4Start + 4, seg.length - s.l4Start);
    }
    out.push(seg);
    if (payload === 0) break;
  }
  return out;
}

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

/** The Ethernet frame check sequence (CRC-32) of `frame`. */
export function ethernetCrc(frame: Uint8Array): number {
  let c = -1;
  for (let i = 0; i < frame.length; i++) c = CRC_TABLE[(c ^ frame[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}
