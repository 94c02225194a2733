import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, fstatSync, ftruncateSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { hasQemuImg, hasQemuIo, pattern, qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../../block/test-helpers.js';

const CLI = fileURLToPath(new URL('../tsvm-img.js', import.meta.url));
const skip = hasQemuImg && hasQemuIo ? false : 'qemu-img and qemu-io (qemu-utils) are not installed';

function tsvmImg(cwd: string, ...args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8' });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function qemuIn(cwd: string, ...args: string[]): { status: number; stdout: string } {
  const r = spawnSync('qemu-img', args, { cwd, encoding: 'utf8' });
  return { status: r.status ?? -1, stdout: r.stdout };
}

test('tsvm-img create: the same files and messages as qemu-img; info --output=json agrees', { skip }, () => {
  const t = tmpDir();
  try {
    for (const [fmt, size, opts] of [['qcow', '6G', []], ['qcow2', '1G', []], ['qcow2', '100M', ['-o', 'compat=0.10,cluster_size=4096']],
      ['qcow2', '10M', ['-o', 'refcount_bits=8,extended_l2=on,lazy_refcounts=on']], ['raw', '10M', []]] as const) {
      const ours = tsvmImg(t.dir, 'create', '-f', fmt, ...opts, `ours.${fmt}`, size);
      const theirs = qemuIn(t.dir, 'create', '-f', fmt, ...opts, `theirs.${fmt}`, size);
      assert.equal(ours.status, 0, ours.stderr);
      assert.equal(ours.stdout.replace('ours', 'theirs'), theirs.stdout, `${fmt} ${opts.join(' ')}`);
      if (fmt !== 'raw') {
        // The same bytes (qemu-img does not pad the qcow2 file to a whole cluster after the L1 table).
        const [ours2, theirs2] = [readFileSync(t.path(`ours.${fmt}`)), readFileSync(t.path(`theirs.${fmt}`))];
        assert.ok(ours2.subarray(0, theirs2.length).equals(theirs2) && ours2.subarray(theirs2.length).every((b) => b === 0), `${fmt}: same bytes`);
      }
      const a = JSON.parse(tsvmImg(t.dir, 'info', '--output=json', `ours.${fmt}`).stdout);
      const b = JSON.parse(qemuIn(t.dir, 'info', '--output=json', `ours.${fmt}`).stdout);
      delete a['actual-size'];
      delete b['actual-size'];
      assert.deepEqual(a, b, `${fmt} info`);
      if (fmt === 'qcow2') assert.equal(qemuImgStatus('check', t.path(`ours.${fmt}`)).status, 0);
    }
    // A backing chain, created by us, described identically.
    tsvmImg(t.dir, 'create', '-f', 'qcow2', 'base.qcow2', '64M');
    assert.equal(tsvmImg(t.dir, 'create', '-f', 'qcow2', '-b', 'base.qcow2', 'top.qcow2').status, 0);
    for (const args of [['info', '--output=json', 'top.qcow2'], ['info', '--output=json', '--backing-chain', 'top.qcow2']]) {
      const strip = (s: string) => s.replace(/"actual-size": \d+/g, '');
      assert.equal(strip(tsvmImg(t.dir, ...args).stdout), strip(qemuIn(t.dir, ...args).stdout), args.join(' '));
    }
  } finally {
    t.cleanup();
  }
});

test('tsvm-img convert, compare, map, measure against qemu-img on the same images', { skip }, () => {
  const t = tmpDir();
  try {
    qemuImg('create', '-f', 'qcow2', t.path('src.qcow2'), '32M');
    qemuIo(t.path('src.qcow2'), ['write -P 0x5a 0 192k', 'write -z 1M 64k', 'write -P 0x11 20M 64k', 'write -c -P 0x33 8M 64k']);
    for (const [fmt, extra] of [['raw', []], ['qcow2', []], ['qcow2', ['-c']], ['qcow', []]] as const) {
      const out = `out-${fmt}${extra.join('')}.img`;
      const r = tsvmImg(t.dir, 'convert', ...extra, '-O', fmt, 'src.qcow2', out);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(qemuIn(t.dir, 'compare', 'src.qcow2', out).status, 0, `${out} reads the same through qemu-img`);
      if (fmt === 'qcow2') assert.equal(qemuImgStatus('check', t.path(out)).status, 0);
    }
    assert.equal(tsvmImg(t.dir, 'compare', 'src.qcow2', 'out-raw.img').status, 0);
    qemuIo(t.path('out-raw.img'), ['write -P 0x01 5M 1'], 'raw');
    const diff = tsvmImg(t.dir, 'compare', 'src.qcow2', 'out-raw.img');
    assert.equal(diff.status, 1);
    assert.equal(diff.stdout, qemuIn(t.dir, 'compare', 'src.qcow2', 'out-raw.img').stdout);
    assert.equal(tsvmImg(t.dir, 'compare', 'src.qcow2', 'missing.img').status, 2);
    const mapped = (args: string[]) => ({ status: tsvmImg(t.dir, ...args).status, out: tsvmImg(t.dir, ...args).stdout });
    assert.deepEqual(mapped(['map', 'src.qcow2']).status, 1, 'human map refuses compressed clusters, as qemu-img does');
    tsvmImg(t.dir, 'convert', '-O', 'qcow2', 'src.qcow2', 'plain.qcow2');
    for (const args of [['map', '--output=json', 'src.qcow2'], ['map', 'plain.qcow2'], ['map', '--output=json', 'plain.qcow2'], ['measure', '-O', 'qcow2', 'src.qcow2'], ['measure', '--size', '3G', '-O', 'qcow2']]) {
      assert.equal(tsvmImg(t.dir, ...args).stdout, qemuIn(t.dir, ...args).stdout, args.join(' '));
    }
  } finally {
    t.cleanup();
  }
});

test('tsvm-img check (exit codes, repair), snapshot, resize, commit, rebase', { skip }, () => {
  const t = tmpDir();
  try {
    tsvmImg(t.dir, 'create', '-f', 'qcow2', 'l.qcow2', '4M');
    qemuIo(t.path('l.qcow2'), ['write -P 7 0 300k']);
    assert.equal(tsvmImg(t.dir, 'check', 'l.qcow2').status, 0);
    // A leaked cluster: one past the end of the file with refcount 1.
    const fd = openSync(t.path('l.qcow2'), 'r+');
    const end = Math.ceil(fstatSync(fd).size / 65536);
    ftruncateSync(fd, (end + 1) * 65536);
    const rb = Buffer.alloc(2);
    rb.writeUInt16BE(1);
    writeSync(fd, rb, 0, 2, 0x20000 + end * 2);
    closeSync(fd);
    const leaky = tsvmImg(t.dir, 'check', 'l.qcow2');
    assert.equal(leaky.status, 3);
    assert.match(leaky.stdout, /1 leaked clusters were found on the image/);
    assert.equal(JSON.parse(tsvmImg(t.dir, 'check', '--output=json', 'l.qcow2').stdout).leaks, 1);
    assert.equal(tsvmImg(t.dir, 'check', '-r', 'leaks', 'l.qcow2').status, 0);
    assert.equal(qemuImgStatus('check', t.path('l.qcow2')).status, 0);
    assert.equal(tsvmImg(t.dir, 'check', 'l.qcow2').status, 0);

    assert.equal(tsvmImg(t.dir, 'snapshot', '-c', 'before', 'l.qcow2').status, 0);
    qemuIo(t.path('l.qcow2'), ['write -P 9 0 64k']);
    assert.match(qemuImg('snapshot', '-l', t.path('l.qcow2')), /before/);
    assert.equal(tsvmImg(t.dir, 'snapshot', '-a', 'before', 'l.qcow2').status, 0);
    qemuIo(t.path('l.qcow2'), ['read -P 7 0 300k']);
    assert.equal(tsvmImg(t.dir, 'snapshot', '-d', 'before', 'l.qcow2').status, 0);
    assert.equal(tsvmImg(t.dir, 'snapshot', '-l', 'l.qcow2').stdout.split('\n').length, 3);
    assert.equal(qemuImgStatus('check', t.path('l.qcow2')).status, 0);

    assert.equal(tsvmImg(t.dir, 'resize', 'l.qcow2', '+4M').stdout, 'Image resized.\n');
    assert.equal(JSON.parse(qemuImg('info', '--output=json', t.path('l.qcow2')))['virtual-size'], 8 << 20);
    const shrink = tsvmImg(t.dir, 'resize', 'l.qcow2', '1M');
    assert.equal(shrink.status, 1);
    assert.match(shrink.stderr, /--shrink/);
    writeFileSync(t.path('r.raw'), Buffer.alloc(1 << 20));
    assert.equal(tsvmImg(t.dir, 'resize', '-f', 'raw', '--shrink', 'r.raw', '512k').status, 0);
    assert.equal(statSync(t.path('r.raw')).size, 512 << 10);

    tsvmImg(t.dir, 'create', '-f', 'qcow2', '-b', 'l.qcow2', '-F', 'qcow2', 'top.qcow2');
    qemuIo(t.path('top.qcow2'), ['write -P 0x42 1M 64k']);
    const commit = tsvmImg(t.dir, 'commit', 'top.qcow2');
    assert.equal(commit.stdout, 'Image committed.\n', commit.stderr);
    qemuIo(t.path('l.qcow2'), ['read -P 0x42 1M 64k', 'read -P 7 0 300k']);
    assert.equal(JSON.parse(qemuImg('map', '--output=json', t.path('top.qcow2'))).some((e: { depth: number; data: boolean }) => e.depth === 0 && e.data), false, 'top is empty again');
    assert.equal(qemuImgStatus('check', t.path('l.qcow2')).status, 0);

    assert.equal(tsvmImg(t.dir, 'amend', '-o', 'lazy_refcounts=on', 'l.qcow2').status, 0);
    assert.equal(JSON.parse(qemuImg('info', '--output=json', t.path('l.qcow2')))['format-specific'].data['lazy-refcounts'], true);
    assert.equal(qemuImgStatus('check', t.path('l.qcow2')).status, 0);
    tsvmImg(t.dir, 'convert', '-O', 'qcow2', 'l.qcow2', 'copy.qcow2');
    assert.equal(tsvmImg(t.dir, 'rebase', '-b', 'copy.qcow2', '-F', 'qcow2', 'top.qcow2').status, 0);
    assert.equal(JSON.parse(qemuImg('info', '--output=json', t.path('top.qcow2')))['backing-filename'], 'copy.qcow2');
    qemuIo(t.path('top.qcow2'), ['read -P 0x42 1M 64k']);
  } finally {
    t.cleanup();
  }
});

test('tsvm-img: bad options and hostile images get one line and a non-zero exit', { skip }, () => {
  const t = tmpDir();
  try {
    const oneLine = (r: { status: number; stderr: string }, what: string) => {
      assert.notEqual(r.status, 0, what);
      assert.equal(r.stderr.trim().split('\n').length, 1, `${what}: ${r.stderr}`);
      assert.match(r.stderr, /^tsvm-img: /, what);
      assert.doesNotMatch(r.stderr, /\n\s+at /, what);
    };
    oneLine(tsvmImg(t.dir, 'frobnicate'), 'unknown command');
    oneLine(tsvmImg(t.dir, 'info', '--bogus', 'x'), 'unknown option');
    oneLine(tsvmImg(t.dir, 'create', '-f', 'vmdk9', 'x', '1M'), 'unknown format');
    oneLine(tsvmImg(t.dir, 'create', '-f', 'qcow2', 'x', '12Q'), 'bad size');
    oneLine(tsvmImg(t.dir, 'info', 'missing.img'), 'missing file');
    qemuImg('create', '-f', 'qcow2', t.path('good.qcow2'), '16M');
    const good = readFileSync(t.path('good.qcow2'));
    const hostile: [string, (b: Buffer) => void][] = [
      ['cluster_bits 40', (b) => b.writeUInt32BE(40, 20)],
      ['L1 table past the end of the file', (b) => { b.writeUInt32BE(0, 40); b.writeUInt32BE(0x7fff0000, 44); b.writeUInt32BE(1000, 36); }],
      ['refcount table over the header', (b) => b.writeUInt32BE(0, 52)],
      ['version 7', (b) => b.writeUInt32BE(7, 4)],
      ['truncated', () => {}],
    ];
    for (const [name, damage] of hostile) {
      const b = Buffer.from(name === 'truncated' ? good.subarray(0, 50) : good);
      damage(b);
      writeFileSync(t.path('bad.qcow2'), b);
      const before = readFileSync(t.path('bad.qcow2'));
      for (const args of [['info', 'bad.qcow2'], ['check', 'bad.qcow2'], ['convert', '-O', 'raw', 'bad.qcow2', 'out.raw']]) {
        const r = tsvmImg(t.dir, ...args);
        // check reports what it found on stdout (exit 2 for corruption); the others fail with one line.
        if (args[0] === 'check') assert.ok(r.stderr.trim().split('\n').length <= 1 && !/\n\s+at /.test(r.stderr), `${name}: check: ${r.stderr}`);
        else if (r.status !== 0) oneLine(r, `${name}: ${args[0]}`);
      }
      assert.ok(readFileSync(t.path('bad.qcow2')).equals(before), `${name}: the image was not written`);
    }
    qemuImg('create', '-f', 'qcow2', '-b', 'loop2.qcow2', '-F', 'qcow2', '-u', t.path('loop1.qcow2'), '1M');
    qemuImg('create', '-f', 'qcow2', '-b', 'loop1.qcow2', '-F', 'qcow2', '-u', t.path('loop2.qcow2'), '1M');
    oneLine(tsvmImg(t.dir, 'info', '--backing-chain', 'loop1.qcow2'), 'backing loop (info)');
    oneLine(tsvmImg(t.dir, 'convert', '-O', 'raw', 'loop1.qcow2', 'x.raw'), 'backing loop (convert)');
  } finally {
    t.cleanup();
  }
});

test('tsvm-img and QEMU refuse to use an image the other is writing (QEMU-compatible locks)', { skip }, async () => {
  const t = tmpDir();
  try {
    qemuImg('create', '-f', 'qcow2', t.path('busy.qcow2'), '16M');
    // QEMU holds it: qemu-io keeps the image open read-write while it sleeps.
    const qemu = spawn('qemu-io', ['-c', 'sleep 20000', t.path('busy.qcow2')], { stdio: 'ignore' });
    try {
      let r = tsvmImg(t.dir, 'info', 'busy.qcow2');
      for (let i = 0; i < 50 && r.status === 0; i++) {
        await new Promise((res) => setTimeout(res, 100));
        r = tsvmImg(t.dir, 'info', 'busy.qcow2');
      }
      assert.equal(r.status, 1);
      assert.match(r.stderr, /^tsvm-img: Failed to get shared "write" lock on '.*busy.qcow2': another process is using the image\n$/);
      assert.equal(tsvmImg(t.dir, 'info', '-U', 'busy.qcow2').status, 0, 'info -U shares');
      assert.match(tsvmImg(t.dir, 'snapshot', '-c', 's', 'busy.qcow2').stderr, /lock/);
    } finally {
      qemu.kill('SIGKILL');
      await once(qemu, 'exit');
    }
    // tsvm holds it for writing: QEMU refuses, as it does with its own writers.
    const moduleUrl = new URL('../../block/index.js', import.meta.url).href;
    const holder = spawn(process.execPath, ['--input-type=module', '-e',
      `const { openImage } = await import(${JSON.stringify(moduleUrl)}); await openImage(${JSON.stringify(t.path('busy.qcow2'))}, { lock: true }); console.log('locked'); process.stdin.resume();`],
    { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      await once(holder.stdout!, 'data');
      const q = qemuImgStatus('info', t.path('busy.qcow2'));
      assert.notEqual(q.status, 0);
      assert.match(q.out, /Failed to get shared "write" lock/);
      assert.equal(qemuImgStatus('info', '-U', t.path('busy.qcow2')).status, 0);
      assert.notEqual(spawnSync('qemu-io', ['-c', 'write 0 4k', t.path('busy.qcow2')]).status, 0, 'qemu-io may not write');
    } finally {
      holder.kill('SIGKILL');
      await once(holder, 'exit');
    }
    assert.equal(qemuImgStatus('check', t.path('busy.qcow2')).status, 0, 'free again once the holder is gone');
  } finally {
    t.cleanup();
  }
});
