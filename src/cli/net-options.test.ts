import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseTsvmArgs } from './tsvm-options.js';

test('network options as QEMU spells them: -netdev with -device e1000, -nic, -net none, filter-dump', () => {
  const c = parseTsvmArgs(['-netdev', 'socket,id=a,listen=:1234', '-device', 'e1000,netdev=a,mac=52:54:00:aa:bb:cc',
    '-netdev', 'socket,id=b,mcast=230.0.0.1:5000,localaddr=127.0.0.1', '-device', 'e1000,netdev=b',
    '-nic', 'socket,udp=10.0.0.1:7000,localaddr=:7001,model=e1000', '-nic', 'tap,ifname=tap0,script=no,downscript=no',
    '-object', 'filter-dump,id=f,netdev=a,file=/tmp/a.pcap,maxlen=128']).config;
  assert.deepEqual(c.netdevs, [
    { kind: 'socket', id: 'a', socket: { mode: 'listen', address: { host: '', port: 1234 } } },
    { kind: 'socket', id: 'b', socket: { mode: 'mcast', address: { host: '230.0.0.1', port: 5000 }, localAddress: '127.0.0.1' } },
    { kind: 'socket', id: 'nic.2', socket: { mode: 'udp', address: { host: '10.0.0.1', port: 7000 }, localAddress: { host: '', port: 7001 } } },
    { kind: 'tap', id: 'nic.3', ifname: 'tap0' },
  ]);
  assert.deepEqual(c.nics?.map((n) => [n.netdev, n.mac && Array.from(n.mac)]), [['a', [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]], ['b', undefined], ['nic.2', undefined], ['nic.3', undefined]]);
  assert.deepEqual(c.netDumps, [{ netdev: 'a', file: '/tmp/a.pcap', maxlen: 128 }]);
  assert.deepEqual(parseTsvmArgs(['-nic', 'none']).config.nics, []);
  assert.deepEqual(parseTsvmArgs(['-net', 'none']).config.nics, []);
  assert.equal(parseTsvmArgs([]).config.nics, undefined);
  assert.equal(parseTsvmArgs(['-nic', 'none']).useDefaultGuest, true);
});

test('bad network options are one-line errors', () => {
  const cases: [string[], RegExp][] = [
    [['-netdev', 'socket,listen=:1'], /missing id=/],
    [['-netdev', 'socket,id=a'], /exactly one of listen=, connect=, mcast=, udp=/],
    [['-netdev', 'socket,id=a,listen=:1,connect=x:2'], /exactly one of/],
    [['-netdev', 'socket,id=a,listen=nope'], /'nope' is not HOST:PORT/],
    [['-netdev', 'socket,id=a,mcast=10.0.0.1:5'], /needs a multicast address/],
    [['-netdev', 'socket,id=a,udp=1.2.3.4:5'], /needs localaddr=/],
    [['-netdev', 'socket,id=a,listen=:1', '-netdev', 'socket,id=a,listen=:2'], /duplicate id 'a'/],
    [['-netdev', 'tap,id=t'], /needs ifname=/],
    [['-netdev', 'tap,id=t,ifname=x,script=/etc/qemu-ifup'], /only script=no/],
    [['-netdev', 'bridge,id=t'], /unsupported network back end 'bridge'/],
    [['-nic', 'socket,listen=:1,model=rtl8139'], /unsupported model 'rtl8139'/],
    [['-nic', 'socket,listen=:1,mac=01:00:00:00:00:01'], /multicast address/],
    [['-nic', 'socket,listen=:1,mac=zz'], /bad MAC address 'zz'/],
    [['-device', 'e1000'], /missing netdev=/],
    [['-device', 'e1000,netdev=a,speed=10'], /unknown property 'speed'/],
    [['-net', 'nic'], /only -net none/],
    [['-object', 'memory-backend-ram,id=m'], /unsupported object/],
    [['-object', 'filter-dump,id=f,netdev=a'], /needs netdev= and file=/],
  ];
  for (const [argv, message] of cases) assert.throws(() => parseTsvmArgs(argv), message, argv.join(' '));
});

test('-netdev user and -nic user: the user-mode network with QEMU defaults and its options', () => {
  const c = parseTsvmArgs(['-netdev', 'user,id=u,hostfwd=tcp::2222-:22,hostname=vm', '-device', 'e1000,netdev=u', '-nic', 'user,model=e1000,mac=52:54:00:00:00:09,restrict=on,net=10.9.0.0/16']).config;
  const [u, nic] = c.netdevs!;
  assert.ok(u.kind === 'user' && nic.kind === 'user');
  assert.equal(u.id, 'u');
  assert.equal(u.user.host, 0x0a000202);
  assert.equal(u.user.hostname, 'vm');
  assert.deepEqual(u.user.hostForwards, [{ proto: 'tcp', hostAddr: '', hostPort: 2222, guestAddr: undefined, guestPort: 22 }]);
  assert.equal(nic.user.restrict, true);
  assert.equal(nic.user.dhcpStart, 0x0a09000f);
  assert.deepEqual(c.nics?.map((n) => n.netdev), ['u', 'nic.1']);
  assert.throws(() => parseTsvmArgs(['-netdev', 'user,id=u,bogus=1']), /-netdev user: unknown or unsupported option 'bogus'/);
  assert.throws(() => parseTsvmArgs(['-nic', 'user,hostfwd=tcp:1-:2']), /invalid host forwarding rule/);
});
