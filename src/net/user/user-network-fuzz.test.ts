import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { rng } from '../../block/test-helpers.js';
import { DNS_SERVER, FIRST_LEASE, GATEWAY, TestGuest } from './test-guest.js';
import { defaultUserNetOptions } from './user-net-options.js';
import { UserNetwork } from './user-network.js';
import {
  BROADCAST_MAC,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  IPPROTO_ICMP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  TCP_ACK,
  TCP_SYN,
  buildArp,
  buildEthernet,
  buildIpv4,
  buildTcp,
  buildUdp,
} from './wire.js';

test('user-mode network fuzz: random and mutated guest frames never throw, crash or grow the stack without bound', async () => {
  const server = createServer((s) => s.on('error', () => undefined).end('hello'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const net = await UserNetwork.open({ ...defaultUserNetOptions(), dnsUpstream: { address: '127.0.0.1', port: 9 } });
  const guest = new TestGuest(net);
  const r = rng(1234);
  const mac = guest.mac;
  // Valid frames of every kind the stack serves: the mutations start from these.
  const seeds = [
    buildEthernet(BROADCAST_MAC, mac, ETHERTYPE_ARP, buildArp({ op: 1, senderMac: mac, senderIp: FIRST_LEASE, targetMac: new Uint8Array(6), targetIp: GATEWAY })),
    buildEthernet(net.mac, mac, ETHERTYPE_IPV4, buildIpv4(IPPROTO_UDP, 0, 0xffffffff, 1, buildUdp(0, 0xffffffff, 68, 67, guest.dhcpMessage(1, 9)))),
    buildEthernet(net.mac, mac, ETHERTYPE_IPV4, buildIpv4(IPPROTO_UDP, FIRST_LEASE, DNS_SERVER, 1, buildUdp(FIRST_LEASE, DNS_SERVER, 1000, 53, randomBytes(30)))),
    buildEthernet(net.mac, mac, ETHERTYPE_IPV4, buildIpv4(IPPROTO_ICMP, FIRST_LEASE, GATEWAY, 1, new Uint8Array([8, 0, 0xf7, 0xff, 0, 0, 0, 0]))),
    buildEthernet(net.mac, mac, ETHERTYPE_IPV4, buildIpv4(IPPROTO_TCP, FIRST_LEASE, GATEWAY, 1, buildTcp(FIRST_LEASE, GATEWAY, { srcPort: 3000, dstPort: port, seq: 5, ack: 0, flags: TCP_SYN, window: 1000, mss: 1460, data: new Uint8Array(0) }))),
    buildEthernet(net.mac, mac, ETHERTYPE_IPV4, buildIpv4(IPPROTO_TCP, FIRST_LEASE, GATEWAY, 1, buildTcp(FIRST_LEASE, GATEWAY, { srcPort: 3000, dstPort: port, seq: 6, ack: 0, flags: TCP_ACK, window: 0, data: randomBytes(100) }))),
  ];
  try {
    for (let i = 0; i < 20000; i++) {
      let frame: Uint8Array;
      const kind = r(10);
      if (kind === 0) frame = randomBytes(r(1600));
      else {
        frame = seeds[r(seeds.length)].slice();
        if (kind < 4) frame = frame.subarray(0, r(frame.length + 1));
        const flips = 1 + r(4);
        for (let f = 0; f < flips; f++) frame[r(frame.length)] = r(256);
        // Mutations that keep the IP and transport checksums right reach deeper: recompute them sometimes.
        if (kind >= 6 && frame.length > 34 && frame[12] === 8 && frame[13] === 0) frame = fixChecksums(frame, port);
      }
      net.send(frame);
      if (i % 500 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    const st = net.stats();
    assert.equal(st.failedFrames, 0, 'no frame made the stack throw');
    assert.ok(st.queuedFrames <= 256);
    assert.ok(st.tcpConnections <= 1024);
  } finally {
    await net.close();
    server.close();
  }
});

/**
 * Rebuilds the IPv4 header checksum and the UDP/TCP checksum of a frame after mutation (when the header allows).
 * Destinations stay the test's own: the gateway's TCP port is the test server's, UDP goes to DHCP or DNS (whose
 * upstream is the discard port), so nothing random leaves for the network or another program's port.
 */
function fixChecksums(frame: Uint8Array, serverPort: number): Uint8Array {
  const ipStart = 14;
  const ihl = (frame[ipStart] & 0xf) * 4;
  if (ihl < 20 || ipStart + ihl > frame.length) return frame;
  const src = ((frame[26] << 24) | (frame[27] << 16) | (frame[28] << 8) | frame[29]) >>> 0;
  const proto = frame[ipStart + 9];
  const dst = proto === IPPROTO_UDP ? DNS_SERVER : GATEWAY;
  const payload = frame.slice(ipStart + ihl);
  let rebuilt: Uint8Array = payload;
  if (proto === IPPROTO_UDP && payload.length >= 8) rebuilt = buildUdp(src, dst, (payload[0] << 8) | payload[1], payload[3] & 1 ? 67 : 53, payload.subarray(8));
  else if (proto === IPPROTO_TCP && payload.length >= 20) {
    const hl = (payload[12] >> 4) * 4;
    rebuilt = buildTcp(src, dst, {
      srcPort: (payload[0] << 8) | payload[1],
      dstPort: serverPort,
      seq: ((payload[4] << 24) | (payload[5] << 16) | (payload[6] << 8) | payload[7]) >>> 0,
      ack: ((payload[8] << 24) | (payload[9] << 16) | (payload[10] << 8) | payload[11]) >>> 0,
      flags: payload[13] & 0x3f,
      window: (payload[14] << 8) | payload[15],
      data: payload.subarray(Math.min(Math.max(hl, 20), payload.length)),
    });
  }
  return buildEthernet(frame.subarray(0, 6), frame.subarray(6, 12), ETHERTYPE_IPV4, buildIpv4(proto, src, dst, 1, rebuilt));
}
