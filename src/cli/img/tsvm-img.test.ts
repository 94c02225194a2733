import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, fstatSync, ftruncateSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { hasQemuImg, hasQemuIo, pattern, qemuImg, qemuImgStatus, qemuIo, tmpDir, writeSparse } from '../../block/test-helpers.js';

/** The installed command: the bundle (scripts/bundle-cli.mjs), as users run it. */
const CLI = fileURLToPath(new URL('../../../bin/tsvm-img.js', import.meta.url));
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

/** qemu-img map --output=json without host offsets, adjacent entries with the same flags merged. */
function mapShape(cwd: string, fmt: string, file: string): string {
  const entries = JSON.parse(qemuIn(cwd, 'map', '--output=json', '-f', fmt, file).stdout) as Record<string, unknown>[];
  const out: Record<string, unknown>[] = [];
  for (const e of entries) {
    delete e.offset;
    const last = out[out.length - 1];
    const key = (x: Record<string, unknown>) => JSON.stringify({ ...x, start: 0, length: 0 });
    if (last && key(last) === key(e) && (last.start as number) + (last.length as number) === e.start) (last.length as number) += e.length as number;
    else out.push(e);
  }
  return JSON.stringify(out);
}

test('tsvm-img resize --shrink: the same file as qemu-img (clusters dropped and freed, file truncated), snapshots kept', { skip }, () => {
  const t = tmpDir();
  try {
    for (const who of ['q', 't']) {
      qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=4096', t.path(`${who}.qcow2`), '64M');
      qemuIo(t.path(`${who}.qcow2`), ['write -P 7 0 3M', 'write -P 8 40M 1M', 'write -c -P 3 50M 64k']);
      qemuImg('create', '-f', 'qcow2', t.path(`${who}2.qcow2`), '4G');
      qemuIo(t.path(`${who}2.qcow2`), ['write -P 7 0 3M', 'write -P 8 3G 1M', 'write -c -P 9 3200k 64k']);
    }
    // Without --shrink: qemu-img's refusal, nothing changed.
    const before = readFileSync(t.path('t2.qcow2'));
    const refused = tsvmImg(t.dir, 'resize', 't2.qcow2', '1M');
    assert.equal(refused.status, 1);
    assert.equal(refused.stderr.replace(/tsvm-img/g, 'qemu-img'), spawnSync('qemu-img', ['resize', 'q2.qcow2', '1M'], { cwd: t.dir, encoding: 'utf8' }).stderr);
    assert.ok(readFileSync(t.path('t2.qcow2')).equals(before));
    assert.equal(tsvmImg(t.dir, 'resize', '--shrink', 't2.qcow2', '1M').stdout, 'Image resized.\n');
    qemuImg('resize', '--shrink', t.path('q2.qcow2'), '1M');
    assert.ok(readFileSync(t.path('t2.qcow2')).equals(readFileSync(t.path('q2.qcow2'))), 'byte-identical to qemu-img\'s result');
    assert.equal(qemuImgStatus('check', t.path('t2.qcow2')).status, 0);
    // With a snapshot (v3: allowed): the snapshot keeps its clusters.
    for (const who of ['q', 't']) {
      qemuImg('snapshot', '-c', 's', t.path(`${who}.qcow2`));
      qemuIo(t.path(`${who}.qcow2`), ['write -P 9 40M 64k', 'write -P 9 0 64k']);
    }
    assert.equal(tsvmImg(t.dir, 'resize', '--shrink', 't.qcow2', '1100k').status, 0);
    qemuImg('resize', '--shrink', t.path('q.qcow2'), '1100k');
    assert.equal(qemuImgStatus('check', t.path('t.qcow2')).status, 0);
    assert.equal(statSync(t.path('t.qcow2')).size, statSync(t.path('q.qcow2')).size);
    assert.equal(qemuIn(t.dir, 'compare', 'q.qcow2', 't.qcow2').status, 0);
    qemuImg('snapshot', '-a', 's', t.path('t.qcow2'));
    qemuIo(t.path('t.qcow2'), ['read -P 7 0 1M', 'read -P 8 40M 1M', 'read -P 3 50M 64k']);
    assert.equal(qemuImgStatus('check', t.path('t.qcow2')).status, 0);
    // qemu-img's other refusals: unaligned qcow2 size, non-positive size, v2 with snapshots, qcow v1.
    for (const [args, prep] of [
      [['resize', '--shrink', 't2.qcow2', '1000'], undefined],
      [['resize', '--shrink', 't2.qcow2', '0'], undefined],
      [['resize', 'v2.qcow2', '8M'], () => { qemuImg('create', '-f', 'qcow2', '-o', 'compat=0.10', t.path('v2.qcow2'), '4M'); qemuImg('snapshot', '-c', 's', t.path('v2.qcow2')); }],
      [['resize', '--shrink', 'v1.qcow', '1M'], () => qemuImg('create', '-f', 'qcow', t.path('v1.qcow'), '4M')],
      [['resize', 'v1.qcow', '8M'], undefined],
    ] as const) {
      (prep as (() => void) | undefined)?.();
      const ours = tsvmImg(t.dir, ...args), theirs = spawnSync('qemu-img', args, { cwd: t.dir, encoding: 'utf8' });
      assert.equal(ours.status, theirs.status, args.join(' '));
      assert.equal(ours.stderr.replace(/tsvm-img/g, 'qemu-img'), theirs.stderr, args.join(' '));
    }
  } finally {
    t.cleanup();
  }
});

test('tsvm-img commit -b BASE and -d, as qemu-img', { skip }, () => {
  const t = tmpDir();
  try {
    qemuImg('create', '-f', 'qcow2', t.path('base.qcow2'), '2M');
    qemuIo(t.path('base.qcow2'), ['write -P 1 0 2M']);
    qemuImg('create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', t.path('mid.qcow2'), '4M');
    qemuIo(t.path('mid.qcow2'), ['write -P 2 1M 1M']);
    qemuImg('create', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', t.path('top.qcow2'));
    qemuIo(t.path('top.qcow2'), ['write -P 3 2M 64k', 'write -z 1536k 64k']);
    const [top0, mid0] = [readFileSync(t.path('top.qcow2')), readFileSync(t.path('mid.qcow2'))];
    for (const b of ['nonexist.qcow2', 'top.qcow2']) {
      const ours = tsvmImg(t.dir, 'commit', '-b', b, 'top.qcow2'), theirs = spawnSync('qemu-img', ['commit', '-b', b, 'top.qcow2'], { cwd: t.dir, encoding: 'utf8' });
      assert.equal(ours.status, 1);
      assert.equal(ours.stderr.replace('tsvm-img', 'qemu-img'), theirs.stderr);
    }
    const r = tsvmImg(t.dir, 'commit', '-b', 'base.qcow2', 'top.qcow2');
    assert.equal(r.stdout, 'Image committed.\n', r.stderr);
    // -b implies -d: the images above the base are left as they were; the base (grown to 4M) holds their view.
    assert.ok(readFileSync(t.path('top.qcow2')).equals(top0) && readFileSync(t.path('mid.qcow2')).equals(mid0));
    assert.equal(JSON.parse(qemuImg('info', '--output=json', t.path('base.qcow2')))['virtual-size'], 4 << 20);
    qemuIo(t.path('base.qcow2'), ['read -P 1 0 1M', 'read -P 2 1M 512k', 'read -P 0 1536k 64k', 'read -P 2 1600k 448k', 'read -P 3 2M 64k', 'read -P 0 2112k 1984k']);
    assert.equal(qemuImgStatus('check', t.path('base.qcow2')).status, 0);
    assert.equal(qemuIn(t.dir, 'compare', 'top.qcow2', 'base.qcow2').status, 0);
    // -d: committed into mid, top not emptied.
    const d = tsvmImg(t.dir, 'commit', '-d', 'top.qcow2');
    assert.equal(d.stdout, 'Image committed.\n', d.stderr);
    assert.ok(readFileSync(t.path('top.qcow2')).equals(top0));
    qemuIo(t.path('mid.qcow2'), ['read -P 3 2M 64k', 'read -P 0 1536k 64k']);
    assert.equal(qemuImgStatus('check', t.path('mid.qcow2')).status, 0);
  } finally {
    t.cleanup();
  }
});

test('tsvm-img convert -S: the same allocation as qemu-img convert -S (raw and qcow2 outputs)', { skip }, () => {
  const t = tmpDir();
  try {
    const b = Buffer.alloc(5 << 20);
    const fill = (off: number, n: number, v: number) => b.fill(v, off, off + n);
    fill(0, 4096, 1); fill(8192, 4096, 2); fill(20480, 512, 3); fill(200 << 10, 1000, 4);
    fill(1 << 20, 64 << 10, 5); fill((1 << 20) + (128 << 10), 64 << 10, 6); fill(3 << 20, 512, 7); fill((3 << 20) + 300000, 512, 7);
    writeFileSync(t.path('src.raw'), b);
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4096', t.path('src.raw'), t.path('src.qcow2'));
    for (const src of ['src.raw', 'src.qcow2']) {
      for (const fmt of ['raw', 'qcow2']) {
        for (const s of ['0', '512', '4k', '8k', '64k', '128k', '1M']) {
          const r = tsvmImg(t.dir, 'convert', '-S', s, '-O', fmt, src, 'ours.img');
          assert.equal(r.status, 0, r.stderr);
          qemuImg('convert', '-S', s, '-O', fmt, t.path(src), t.path('theirs.img'));
          assert.equal(mapShape(t.dir, fmt, 'ours.img'), mapShape(t.dir, fmt, 'theirs.img'), `${src} -O ${fmt} -S ${s}`);
          assert.equal(qemuIn(t.dir, 'compare', 'ours.img', 'theirs.img').status, 0);
          if (fmt === 'qcow2') assert.equal(qemuImgStatus('check', t.path('ours.img')).status, 0);
        }
      }
    }
    for (const s of ['1000', '32M', '4k1']) {
      const ours = tsvmImg(t.dir, 'convert', '-S', s, '-O', 'raw', 'src.raw', 'x.img');
      const theirs = spawnSync('qemu-img', ['convert', '-S', s, '-O', 'raw', 'src.raw', 'x.img'], { cwd: t.dir, encoding: 'utf8' });
      assert.equal(ours.status, 1);
      assert.equal(ours.stderr.replace(/tsvm-img/g, 'qemu-img'), theirs.stderr.split('\n').slice(0, 2).join('\n').replace(/\n?$/, '\n'), s);
    }
  } finally {
    t.cleanup();
  }
});

test('tsvm-img amend -o: compat down/upgrades byte-identical to qemu-img; other options as qemu-img', { skip }, () => {
  const t = tmpDir();
  try {
    for (const backing of [false, true]) {
      for (const who of ['q', 't']) {
        if (backing) {
          qemuImg('create', '-f', 'qcow2', t.path(`${who}-base.qcow2`), '4M');
          qemuIo(t.path(`${who}-base.qcow2`), ['write -P 5 0 4M']);
          qemuImg('create', '-f', 'qcow2', '-b', `${who}-base.qcow2`, '-F', 'qcow2', t.path(`${who}.qcow2`));
        } else {
          qemuImg('create', '-f', 'qcow2', t.path(`${who}.qcow2`), '4M');
        }
        qemuIo(t.path(`${who}.qcow2`), ['write -P 7 0 1M', 'write -z 2M 64k', 'write -z 3M 128k']);
      }
      for (const compat of ['0.10', '1.1']) {
        const r = tsvmImg(t.dir, 'amend', '-o', `compat=${compat}`, 't.qcow2');
        assert.equal(r.status, 0, r.stderr);
        qemuImg('amend', '-o', `compat=${compat}`, t.path('q.qcow2'));
        const ours = Buffer.from(readFileSync(t.path('t.qcow2')).toString('latin1').replace('t-base.qcow2', 'q-base.qcow2'), 'latin1');
        assert.ok(ours.equals(readFileSync(t.path('q.qcow2'))), `backing ${backing}, compat=${compat}: same bytes (but the backing file name)`);
        assert.equal(qemuImgStatus('check', t.path('t.qcow2')).status, 0);
      }
    }
    qemuImg('create', '-f', 'qcow2', '-o', 'extended_l2=on', t.path('e.qcow2'), '4M');
    qemuImg('create', '-f', 'qcow2', '-o', 'refcount_bits=8', t.path('r8.qcow2'), '4M');
    for (const args of [['-o', 'cluster_size=4096', 't.qcow2'], ['-o', 'foo=bar', 't.qcow2'], ['-o', 'compat=0.9', 't.qcow2'],
      ['-o', 'backing_fmt=raw', 't.qcow2'], ['-o', 'refcount_bits=3', 't.qcow2'], ['-o', 'compat=0.10,lazy_refcounts=on', 't.qcow2'],
      ['-o', 'compat=0.10,refcount_bits=8', 't.qcow2'], ['-o', 'compat=0.10', 'e.qcow2'], ['-o', 'compat=0.10', 'r8.qcow2'],
      ['-o', 'data_file=x', 't.qcow2'], ['-o', 'lazy_refcounts=maybe', 't.qcow2']]) {
      const ours = tsvmImg(t.dir, 'amend', ...args), theirs = spawnSync('qemu-img', ['amend', ...args], { cwd: t.dir, encoding: 'utf8' });
      assert.equal(ours.status, theirs.status, args.join(' '));
      assert.equal(ours.stderr.replace('tsvm-img', 'qemu-img'), theirs.stderr.split('\n')[0] + '\n', args.join(' '));
    }
    // size= resizes, shrinking included (no --shrink needed with amend).
    assert.equal(tsvmImg(t.dir, 'amend', '-o', 'size=1M', 'q.qcow2').status, 0);
    assert.equal(JSON.parse(qemuImg('info', '--output=json', t.path('q.qcow2')))['virtual-size'], 1 << 20);
    assert.equal(qemuImgStatus('check', t.path('q.qcow2')).status, 0);
  } finally {
    t.cleanup();
  }
});

test('tsvm-img convert, map, measure of a sparse raw file: holes found as qemu-img finds them, the same output allocation', { skip }, () => {
  const t = tmpDir();
  try {
    writeSparse(t.path('src.raw'));
    for (const fmt of ['raw', 'qcow2']) {
      const r = tsvmImg(t.dir, 'convert', '-f', 'raw', '-O', fmt, 'src.raw', 'ours.img');
      assert.equal(r.status, 0, r.stderr);
      qemuImg('convert', '-f', 'raw', '-O', fmt, t.path('src.raw'), t.path('theirs.img'));
      assert.equal(mapShape(t.dir, fmt, 'ours.img'), mapShape(t.dir, fmt, 'theirs.img'), `-O ${fmt}`);
      assert.equal(qemuIn(t.dir, 'compare', '-f', 'raw', '-F', fmt, 'src.raw', 'ours.img').status, 0);
      if (fmt === 'qcow2') assert.equal(qemuImgStatus('check', t.path('ours.img')).status, 0);
    }
    for (const args of [['map', '--output=json', '-f', 'raw', 'src.raw'], ['map', '-f', 'raw', 'src.raw'], ['measure', '-O', 'qcow2', '-f', 'raw', 'src.raw'],
      ['measure', '--output=json', '-O', 'qcow2', '-f', 'raw', 'src.raw'], ['measure', '-O', 'raw', '-f', 'raw', 'src.raw']]) {
      assert.equal(tsvmImg(t.dir, ...args).stdout, qemuIn(t.dir, ...args).stdout, args.join(' '));
    }
  } finally {
    t.cleanup();
  }
});
