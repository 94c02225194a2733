import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { createServer as createHttpServer } from 'node:http';
import { type AddressInfo, type Server, type Socket, connect, createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { DNS_SERVER, FIRST_LEASE, GATEWAY, type ReceivedFrame, TestGuest } from './test-guest.js';
import { defaultUserNetOptions, type UserNetOptions } from './user-net-options.js';
import { UserNetwork } from './user-network.js';
import { ETHERTYPE_ARP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, parseArp, parseUdp, readU16, readU32 } from './wire.js';

async function stack(options: Partial<UserNetOptions> = {}): Promise<{ net: UserNetwork; guest: TestGuest }> {
  const net = await UserNetwork.open({ ...defaultUserNetOptions(), ...options });
  return { net, guest: new TestGuest(net) };
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

function udpReply(f: ReceivedFrame, from: number, fromPort: number): Uint8Array | undefined {
  if (f.ip?.proto !== IPPROTO_UDP || f.ip.src !== from) return undefined;
  const u = parseUdp(f.ip);
  return u && u.srcPort === fromPort ? u.data.slice() : undefined;
}

/** DHCP options of a reply by code. */
function dhcpOptions(m: Uint8Array): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  for (let i = 240; i < m.length && m[i] !== 255; ) {
    if (m[i] === 0) {
      i++;
      continue;
    }
    out.set(m[i], m.subarray(i + 2, i + 2 + m[i + 1]));
    i += 2 + m[i + 1];
  }
  return out;
}

test('ARP: the gateway and DNS addresses answer with the stack MAC, other addresses do not', async () => {
  const { net, guest } = await stack();
  try {
    const arpReply = (f: ReceivedFrame) => (f.eth.type === ETHERTYPE_ARP ? parseArp(f.eth.payload) : undefined);
    for (const target of [GATEWAY, DNS_SERVER]) {
      guest.sendArpRequest(target);
      const reply = await guest.next(arpReply);
      assert.equal(reply.op, 2);
      assert.equal(reply.senderIp, target);
      assert.deepEqual([...reply.senderMac], [...net.mac]);
      assert.deepEqual([...reply.targetMac], [...guest.mac]);
    }
    guest.sendArpRequest(0x0a000209);
    assert.ok(await guest.nothing(arpReply));
  } finally {
    await net.close();
  }
});

test('DHCP: discover/offer/request/ack hand out 10.0.2.15 with router, DNS, lease time and hostname', async () => {
  const { net, guest } = await stack({ hostname: 'vm1' });
  try {
    const dhcpReply = (f: ReceivedFrame) => udpReply(f, GATEWAY, 67);
    guest.sendUdp(68, 0xffffffff, 67, guest.dhcpMessage(1, 0x1234), 0);
    const offer = await guest.next(dhcpReply);
    assert.equal(readU32(offer, 4), 0x1234);
    assert.equal(readU32(offer, 16), FIRST_LEASE);
    let o = dhcpOptions(offer);
    assert.equal(o.get(53)![0], 2);
    guest.sendUdp(68, 0xffffffff, 67, guest.dhcpMessage(3, 0x1235, FIRST_LEASE), 0);
    const ack = await guest.next(dhcpReply);
    o = dhcpOptions(ack);
    assert.equal(o.get(53)![0], 5);
    assert.equal(readU32(ack, 16), FIRST_LEASE);
    assert.equal(readU32(o.get(1)!, 0), 0xffffff00);
    assert.equal(readU32(o.get(3)!, 0), GATEWAY);
    assert.equal(readU32(o.get(6)!, 0), DNS_SERVER);
    assert.equal(readU32(o.get(51)!, 0), 86400);
    assert.equal(readU32(o.get(54)!, 0), GATEWAY);
    assert.equal(Buffer.from(o.get(12)!).toString(), 'vm1');
    // A second client (the stack's receiver from now on) gets the next address; a request for an address another client holds is refused.
    const other = new TestGuest(net, 0x57);
    other.sendUdp(68, 0xffffffff, 67, other.dhcpMessage(3, 7, FIRST_LEASE), 0);
    assert.equal(dhcpOptions(await other.next(dhcpReply)).get(53)![0], 6);
    other.sendUdp(68, 0xffffffff, 67, other.dhcpMessage(1, 8), 0);
    assert.equal(readU32(await other.next(dhcpReply), 16), FIRST_LEASE + 1);
  } finally {
    await net.close();
  }
});

test('ICMP: echo requests to the gateway are answered with the same data', async () => {
  const { net, guest } = await stack();
  try {
    const data = randomBytes(56);
    guest.sendPing(GATEWAY, 77, 3, data);
    const reply = await guest.next((f) => (f.ip?.proto === IPPROTO_ICMP && f.ip.src === GATEWAY ? f.ip.payload.slice() : undefined));
    assert.equal(reply[0], 0);
    assert.equal(readU16(reply, 4), 77);
    assert.equal(readU16(reply, 6), 3);
    assert.deepEqual(Buffer.from(reply.subarray(8)), data);
  } finally {
    await net.close();
  }
});

test('UDP: a datagram to 10.0.2.2 reaches a loopback server and its answer comes back from 10.0.2.2', async () => {
  const { net, guest } = await stack();
  const server = createSocket('udp4');
  try {
    server.on('message', (m, from) => server.send(Buffer.concat([Buffer.from('echo:'), m]), from.port, from.address));
    await new Promise<void>((resolve) => server.bind(0, '127.0.0.1', resolve));
    const port = server.address().port;
    guest.sendUdp(5555, GATEWAY, port, Buffer.from('hello'));
    const reply = await guest.next((f) => udpReply(f, GATEWAY, port));
    assert.equal(Buffer.from(reply).toString(), 'echo:hello');
  } finally {
    server.close();
    await net.close();
  }
});

test('DNS: queries to 10.0.2.3:53 go to the configured upstream and the answer comes from 10.0.2.3', async () => {
  const upstream = createSocket('udp4');
  await new Promise<void>((resolve) => upstream.bind(0, '127.0.0.1', resolve));
  upstream.on('message', (m, from) => upstream.send(Buffer.concat([m.subarray(0, 2), Buffer.from('answer')]), from.port, from.address));
  const { net, guest } = await stack({ dnsUpstream: { address: '127.0.0.1', port: upstream.address().port } });
  try {
    guest.sendUdp(3333, DNS_SERVER, 53, Buffer.from('\x12\x34query'));
    const reply = await guest.next((f) => udpReply(f, DNS_SERVER, 53));
    assert.equal(Buffer.from(reply).toString('latin1'), '\x12\x34answer');
  } finally {
    upstream.close();
    await net.close();
  }
});

/** An HTTP server on the loopback serving `body` at /file. */
async function httpServer(body: Buffer): Promise<{ port: number; close: () => Promise<void> }> {
  const server = createHttpServer((_req, res) => {
    res.writeHead(200, { 'content-length': body.length });
    res.end(body);
  });
  const port = await listen(server);
  return { port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

function httpBody(response: Buffer): Buffer {
  const end = response.indexOf('\r\n\r\n');
  assert.ok(end > 0, 'an HTTP header');
  assert.match(response.subarray(0, end).toString(), /^HTTP\/1\.[01] 200/);
  return response.subarray(end + 4);
}

test('TCP: a guest fetches 16 MiB from a loopback HTTP server through 10.0.2.2, byte-exact', async () => {
  const body = randomBytes(16 << 20);
  const http = await httpServer(body);
  const { net, guest } = await stack();
  try {
    const s = await guest.connect(GATEWAY, http.port);
    const parts: Uint8Array[] = [];
    s.onData = () => parts.push(s.read());
    s.write(Buffer.from('GET /file HTTP/1.0\r\n\r\n'));
    await s.ended;
    assert.ok(!s.reset);
    assert.ok(httpBody(Buffer.concat(parts)).equals(body));
    s.end();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(net.stats().tcpConnections, 0, 'the connection is gone once both sides closed');
  } finally {
    await http.close();
    await net.close();
  }
});

test('TCP: a slow guest (small window, a NIC that refuses frames) gets everything while the stack buffers a bounded amount', async () => {
  const body = randomBytes(6 << 20);
  const http = await httpServer(body);
  const { net, guest } = await stack();
  try {
    const s = await guest.connect(GATEWAY, http.port, 8192);
    const parts: Uint8Array[] = [];
    let maxBuffered = 0;
    let maxQueued = 0;
    s.write(Buffer.from('GET /file HTTP/1.0\r\n\r\n'));
    // The guest application reads every 2 ms; every tenth round its NIC is full for 5 ms.
    for (let round = 0; !s.reset; round++) {
      const st = net.stats();
      maxBuffered = Math.max(maxBuffered, st.tcpBufferedBytes);
      maxQueued = Math.max(maxQueued, st.queuedFrames);
      parts.push(s.read());
      if (round % 10 === 0) {
        guest.accepting = false;
        await new Promise((r) => setTimeout(r, 5));
        guest.open();
      }
      const done = await Promise.race([s.ended.then(() => true), new Promise((r) => setTimeout(() => r(false), 2))]);
      if (done) break;
    }
    parts.push(s.read());
    assert.ok(httpBody(Buffer.concat(parts)).equals(body), 'byte-exact');
    assert.ok(guest.refused > 0, 'the NIC refused frames');
    assert.ok(maxBuffered <= 256 * 1024 + 65536 * 2, `the stack held at most ${maxBuffered} bytes for the guest`);
    assert.ok(maxQueued <= 256, `queued frames ${maxQueued}`);
  } finally {
    await http.close();
    await net.close();
  }
});

test('TCP: a guest upload to a host that stops reading is held back by the window, then arrives byte-exact', async () => {
  const data = randomBytes(32 << 20);
  const accepted: Socket[] = [];
  const received: Buffer[] = [];
  const server = createServer((socket) => {
    accepted.push(socket);
    socket.pause();
    socket.on('data', (d) => received.push(d));
  });
  const port = await listen(server);
  const { net, guest } = await stack();
  try {
    const s = await guest.connect(GATEWAY, port);
    s.write(data);
    s.end();
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(received.length, 0);
    // The host's socket buffers filled, then the stack's window closed: the rest waits in the guest.
    assert.ok(s.unsentBytes > 0, 'the guest is held back');
    assert.ok(net.stats().tcpBufferedBytes === 0);
    assert.equal(accepted.length, 1);
    const done = new Promise((resolve) => accepted[0].on('end', resolve));
    accepted[0].resume();
    await done;
    assert.ok(Buffer.concat(received).equals(data));
  } finally {
    server.close();
    await net.close();
  }
});

test('TCP: a connection to a closed port is reset; restrict=on resets guest connections and drops guest UDP', async () => {
  const closed = createServer();
  const closedPort = await listen(closed);
  await new Promise((resolve) => closed.close(resolve));
  let { net, guest } = await stack();
  try {
    await assert.rejects(guest.connect(GATEWAY, closedPort), /reset/);
  } finally {
    await net.close();
  }
  const open = createServer((s) => s.end('hi'));
  const openPort = await listen(open);
  const udpServer = createSocket('udp4');
  let udpSeen = 0;
  udpServer.on('message', () => udpSeen++);
  await new Promise<void>((resolve) => udpServer.bind(0, '127.0.0.1', resolve));
  ({ net, guest } = await stack({ restrict: true }));
  try {
    await assert.rejects(guest.connect(GATEWAY, openPort), /reset/);
    guest.sendUdp(4444, GATEWAY, udpServer.address().port, Buffer.from('x'));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(udpSeen, 0);
    guest.sendPing(GATEWAY, 1, 1, new Uint8Array(8));
    await guest.next((f) => (f.ip?.proto === IPPROTO_ICMP ? true : undefined));
  } finally {
    open.close();
    udpServer.close();
    await net.close();
  }
});

for (const restrict of [false, true]) {
  test(`hostfwd (restrict=${restrict ? 'on' : 'off'}): TCP and UDP host ports reach guest ports and back`, async () => {
    const { net, guest } = await stack({ restrict });
    try {
      const tcpPort = await net.addHostForward({ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 0, guestPort: 80 });
      const udpPort = await net.addHostForward({ proto: 'udp', hostAddr: '127.0.0.1', hostPort: 0, guestPort: 7 });
      assert.ok(tcpPort > 0 && udpPort > 0);
      guest.listen(80, (s) => {
        s.onData = () => {
          const got = Buffer.from(s.read());
          s.write(Buffer.concat([Buffer.from('guest:'), got]));
          s.end();
        };
      });
      const client = connect(tcpPort, '127.0.0.1');
      const chunks: Buffer[] = [];
      client.on('data', (d) => chunks.push(d));
      client.write('ping');
      await new Promise((resolve) => client.on('end', resolve));
      client.end();
      assert.equal(Buffer.concat(chunks).toString(), 'guest:ping');

      const host = createSocket('udp4');
      try {
        await new Promise<void>((resolve) => host.bind(0, '127.0.0.1', resolve));
        const answer = new Promise<Buffer>((resolve) => host.once('message', resolve));
        host.send('question', udpPort, '127.0.0.1');
        const q = await guest.next((f) => (f.ip?.proto === IPPROTO_UDP && f.ip.src === GATEWAY ? { ip: f.ip, udp: parseUdp(f.ip)! } : undefined));
        assert.equal(Buffer.from(q.udp.data).toString(), 'question');
        assert.equal(q.udp.dstPort, 7);
        assert.equal(q.udp.srcPort, host.address().port);
        guest.sendUdp(7, GATEWAY, q.udp.srcPort, Buffer.from('answer'));
        assert.equal((await answer).toString(), 'answer');
      } finally {
        host.close();
      }
    } finally {
      await net.close();
    }
  });
}

test('hostfwd: a rule on a port in use is a one-line error', async () => {
  const busy = createServer();
  const port = await listen(busy);
  try {
    await assert.rejects(UserNetwork.open({ ...defaultUserNetOptions(), hostForwards: [{ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: port, guestPort: 22 }] }), /could not set up host forwarding rule 'tcp:127.0.0.1:\d+-:22'/);
  } finally {
    busy.close();
  }
});

test('two stacks in one process are independent (each guest gets 10.0.2.15, each has its own forwards)', async () => {
  const a = await stack();
  const b = await stack();
  try {
    for (const { guest } of [a, b]) {
      guest.sendUdp(68, 0xffffffff, 67, guest.dhcpMessage(1, 1), 0);
      assert.equal(readU32(await guest.next((f) => udpReply(f, GATEWAY, 67)), 16), FIRST_LEASE);
    }
    const portA = await a.net.addHostForward({ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 0, guestPort: 80 });
    const portB = await b.net.addHostForward({ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 0, guestPort: 80 });
    assert.notEqual(portA, portB);
    b.guest.listen(80, () => undefined);
    connect(portB, '127.0.0.1').on('error', () => undefined);
    assert.ok(await a.guest.nothing((f) => (f.ip?.proto === IPPROTO_TCP ? true : undefined)));
    assert.equal(b.net.stats().tcpConnections, 1);
    assert.equal(a.net.stats().tcpConnections, 0);
  } finally {
    await a.net.close();
    await b.net.close();
  }
});
