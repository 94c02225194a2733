import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TsvmError } from '../../base/errors.js';
import { defaultUserNetOptions, parseUserNetdevOptions } from './user-net-options.js';
import { parseIpv4Address } from './wire.js';

const ip = (s: string) => parseIpv4Address(s)!;

test('-netdev user: QEMU defaults (10.0.2.0/24, gateway .2, DNS .3, DHCP from .15)', () => {
  const { options, other } = parseUserNetdevOptions('user,id=n0');
  assert.deepEqual(options, defaultUserNetOptions());
  assert.equal(options.host, ip('10.0.2.2'));
  assert.equal(options.dns, ip('10.0.2.3'));
  assert.equal(options.dhcpStart, ip('10.0.2.15'));
  assert.equal(other.get('id'), 'n0');
});

test('-netdev user: net= moves the derived addresses; explicit ones win; hostfwd rules as QEMU writes them', () => {
  const { options } = parseUserNetdevOptions(
    'id=u,net=192.168.76.0/255.255.255.0,dns=192.168.76.9,hostname=vm,,1,restrict=on,hostfwd=tcp::2222-:22,hostfwd=udp:127.0.0.1:5353-10.0.2.99:53,hostfwd=:0.0.0.0:0-:80',
  );
  assert.equal(options.network, ip('192.168.76.0'));
  assert.equal(options.prefixLength, 24);
  assert.equal(options.host, ip('192.168.76.2'));
  assert.equal(options.dns, ip('192.168.76.9'));
  assert.equal(options.dhcpStart, ip('192.168.76.15'));
  assert.equal(options.hostname, 'vm,1');
  assert.equal(options.restrict, true);
  assert.deepEqual(options.hostForwards, [
    { proto: 'tcp', hostAddr: '', hostPort: 2222, guestAddr: undefined, guestPort: 22 },
    { proto: 'udp', hostAddr: '127.0.0.1', hostPort: 5353, guestAddr: ip('10.0.2.99'), guestPort: 53 },
    { proto: 'tcp', hostAddr: '0.0.0.0', hostPort: 0, guestAddr: undefined, guestPort: 80 },
  ]);
  assert.equal(parseUserNetdevOptions('net=10.1.0.0/16').options.dhcpStart, ip('10.1.0.15'));
  assert.deepEqual([...parseUserNetdevOptions('user,model=e1000,mac=52:54:00:12:34:56', ['model', 'mac']).other], [['model', 'e1000'], ['mac', '52:54:00:12:34:56']]);
});

test('-netdev user: bad options are one-line errors', () => {
  for (const [text, message] of [
    ['user,bogus=1', /unknown or unsupported option 'bogus'/],
    ['user,net=10.0.2.300/24', /not an IPv4 address/],
    ['user,net=10.0.0.0/255.0.255.0', /not contiguous/],
    ['user,net=10.0.0.0/31', /prefix/],
    ['user,host=10.0.3.2', /host address is not a host address in the network/],
    ['user,dns=10.0.2.2', /must be different/],
    ['user,restrict=maybe', /expected on or off/],
    ['user,hostfwd=tcp:8080-:80', /invalid host forwarding rule/],
    ['user,hostfwd=sctp::1-:2', /invalid host forwarding rule/],
    ['user,hostfwd=tcp::70000-:80', /invalid port/],
    ['user,hostfwd=tcp::80-:0', /guest port 0/],
    ['user,ipv6=on', /ipv6=on is not supported/],
    ['user,id', /not key=value/],
  ] as const) {
    assert.throws(() => parseUserNetdevOptions(text), (e: unknown) => e instanceof TsvmError && message.test(e.message) && !e.message.includes('\n'), text);
  }
});
