#!/usr/bin/env node
import { setFlagsFromString } from 'node:v8';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { TsvmError } from '../base/errors.js';
import { runMain } from './main-guard.js';
import { parseSize } from './img/units.js';

/**
 * Disk image tool with qemu-img's commands, options, output and exit codes (raw, qcow2, qcow).
 *
 * It is a short-lived process, so it starts lean: it is installed as one bundled file
 * (scripts/bundle-cli.mjs), each command runs only its own modules (and the block layer only the image
 * formats it meets), and V8's optimizing compiler is held back for the first second. A run of a few
 * hundred milliseconds spends more on compiling (threads, fresh memory) than the optimized code gives
 * back; longer runs get it after that.
 */
setFlagsFromString('--no-opt');
setTimeout(() => setFlagsFromString('--opt'), 1000).unref();

const USAGE = `usage: tsvm-img [standard options] command [command options]
Disk image utility compatible with qemu-img (formats: raw, qcow2, qcow)

Commands:
  create [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] [-q] filename [size]
  info [-f fmt] [--output=human|json] [--backing-chain] [-U] filename
  check [-f fmt] [--output=human|json] [-r leaks|all] [-q] [-U] filename
  convert [-c] [-p] [-n] [-f fmt] [-O output_fmt] [-B backing_file] [-o options] [-S size] [-t cache] filename output_filename
  snapshot [-l | -c name | -a name | -d name] [-f fmt] filename
  commit [-f fmt] [-d] [-b base] filename
  rebase [-f fmt] [-u] -b backing_file [-F backing_fmt] filename
  resize [-f fmt] [--shrink] filename [+|-]size
  map [-f fmt] [--output=human|json] filename
  compare [-f fmt] [-F fmt] [-s] filename1 filename2
  measure [--output=human|json] [-O output_fmt] [-o options] [--size N | [-f fmt] filename]
  amend [-f fmt] -o options filename

Sizes take the suffixes k, M, G, T, P, E (powers of 1024).
`;

type Options = NonNullable<ParseArgsConfig['options']>;

const common: Options = {
  format: { type: 'string', short: 'f' },
  quiet: { type: 'boolean', short: 'q' },
  'force-share': { type: 'boolean', short: 'U' },
  'image-opts': { type: 'boolean' },
  output: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

async function parse(command: string, args: string[], options: Options) {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...common, ...options }, allowPositionals: true, strict: true });
  } catch (e) {
    const m = /'(-[^']*)'/.exec((e as Error).message);
    throw new TsvmError(m ? `${command}: unrecognized option '${m[1]}'` : `${command}: ${(e as Error).message.split('\n')[0]}`);
  }
  (await import('./img/open.js')).setForceShare(parsed.values['force-share'] === true);
  return parsed;
}

function outputJson(value: unknown): boolean {
  if (value === undefined || value === 'human') return false;
  if (value === 'json') return true;
  throw new TsvmError(`--output must be used with human or json as argument.`);
}

function positionals(list: string[], min: number, max: number, what: string): string[] {
  if (list.length < min) throw new TsvmError(`Expecting ${what}`);
  if (list.length > max) throw new TsvmError(`Unexpected argument: ${list[max]}`);
  return list;
}

/** convert -S: bytes, a multiple of 512 up to 16 MiB (qemu-img's limits and messages). */
function sparseSize(text: string): number {
  let n: number;
  try {
    if (text.trim().startsWith('-')) throw new Error();
    n = parseSize(text);
  } catch {
    process.stderr.write('tsvm-img: Invalid buffer size for sparse output specified. You may use k, M, G, T, P or E suffixes for\n');
    throw new TsvmError('kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.');
  }
  if (n % 512 !== 0 || n > 16 << 20) {
    throw new TsvmError('Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output).');
  }
  return n;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

async function main(): Promise<number> {
  const [command, ...args] = process.argv.slice(2);
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(USAGE);
    return command === undefined ? 1 : 0;
  }
  if (command === '-V' || command === '--version') {
    const { TSVM_VERSION } = await import('../api/version.js');
    process.stdout.write(`tsvm-img version ${TSVM_VERSION} (qemu-img compatible)\n`);
    return 0;
  }
  switch (command) {
    case 'create': {
      const { values: v, positionals: p } = await parse(command, args, {
        backing: { type: 'string', short: 'b' }, 'backing-format': { type: 'string', short: 'F' },
        options: { type: 'string', short: 'o' }, unsafe: { type: 'boolean', short: 'u' },
      });
      const [file, size] = positionals(p, 1, 2, 'image file name');
      const { createCommand } = await import('./img/edit.js');
      return createCommand(file, size, {
        ...(str(v.format) && { format: str(v.format) }), ...(str(v.backing) !== undefined && { backing: str(v.backing) }),
        ...(str(v['backing-format']) && { backingFormat: str(v['backing-format']) }), ...(str(v.options) && { options: str(v.options) }),
        unsafe: v.unsafe === true, quiet: v.quiet === true,
      });
    }
    case 'info': {
      const { values: v, positionals: p } = await parse(command, args, { 'backing-chain': { type: 'boolean' } });
      const [file] = positionals(p, 1, 1, 'one image file name');
      const { infoCommand } = await import('./img/info.js');
      return infoCommand(file, { ...(str(v.format) && { format: str(v.format) }), json: outputJson(v.output), chain: v['backing-chain'] === true });
    }
    case 'check': {
      const { values: v, positionals: p } = await parse(command, args, { repair: { type: 'string', short: 'r' } });
      const [file] = positionals(p, 1, 1, 'one image file name');
      const { checkCommand, repairMode } = await import('./img/check.js');
      const repair = repairMode(str(v.repair));
      return checkCommand(file, { ...(str(v.format) && { format: str(v.format) }), json: outputJson(v.output), ...(repair && { repair }) });
    }
    case 'convert': {
      const { values: v, positionals: p } = await parse(command, args, {
        'output-format': { type: 'string', short: 'O' }, compress: { type: 'boolean', short: 'c' },
        progress: { type: 'boolean', short: 'p' }, options: { type: 'string', short: 'o' },
        backing: { type: 'string', short: 'B' }, 'no-create': { type: 'boolean', short: 'n' },
        sparse: { type: 'string', short: 'S' }, 'target-format': { type: 'string', short: 'F' },
        cache: { type: 'string', short: 't' },
      });
      const cache = str(v.cache) ?? 'unsafe'; // qemu-img convert's default
      if (!['none', 'writeback', 'writethrough', 'directsync', 'unsafe'].includes(cache)) throw new TsvmError(`Invalid cache option: ${cache}`);
      positionals(p, 2, Infinity, 'input and output file names');
      const minSparse = str(v.sparse) === undefined ? undefined : sparseSize(str(v.sparse)!);
      const { convertCommand } = await import('./img/convert.js');
      return convertCommand(p.slice(0, -1), p[p.length - 1], {
        ...(str(v.format) && { format: str(v.format) }), ...(str(v['output-format']) && { outFormat: str(v['output-format']) }),
        compress: v.compress === true, progress: v.progress === true && v.quiet !== true,
        ...(str(v.options) && { options: str(v.options) }), ...(str(v.backing) && { backing: str(v.backing) }), noCreate: v['no-create'] === true,
        unsafe: cache === 'unsafe', ...(minSparse !== undefined && { minSparse }),
      });
    }
    case 'snapshot': {
      const { values: v, positionals: p } = await parse(command, args, {
        list: { type: 'boolean', short: 'l' }, create: { type: 'string', short: 'c' },
        apply: { type: 'string', short: 'a' }, delete: { type: 'string', short: 'd' },
      });
      const [file] = positionals(p, 1, 1, 'one image file name');
      const actions = [v.list === true, v.create !== undefined, v.apply !== undefined, v.delete !== undefined].filter(Boolean).length;
      if (actions > 1) throw new TsvmError('Cannot mix \'-l\', \'-a\', \'-c\', \'-d\'');
      const { snapshotCommand } = await import('./img/edit.js');
      return snapshotCommand(file, {
        list: actions === 0 || v.list === true, ...(str(v.create) !== undefined && { create: str(v.create) }),
        ...(str(v.apply) !== undefined && { apply: str(v.apply) }), ...(str(v.delete) !== undefined && { remove: str(v.delete) }),
      }, str(v.format));
    }
    case 'commit': {
      const { values: v, positionals: p } = await parse(command, args, { drop: { type: 'boolean', short: 'd' }, base: { type: 'string', short: 'b' }, progress: { type: 'boolean', short: 'p' } });
      const [file] = positionals(p, 1, 1, 'one image file name');
      const { commitCommand } = await import('./img/edit.js');
      return commitCommand(file, { ...(str(v.format) && { format: str(v.format) }), drop: v.drop === true, ...(str(v.base) !== undefined && { base: str(v.base) }) });
    }
    case 'rebase': {
      const { values: v, positionals: p } = await parse(command, args, {
        backing: { type: 'string', short: 'b' }, 'backing-format': { type: 'string', short: 'F' },
        unsafe: { type: 'boolean', short: 'u' }, progress: { type: 'boolean', short: 'p' },
      });
      const [file] = positionals(p, 1, 1, 'one image file name');
      const { rebaseCommand } = await import('./img/edit.js');
      return rebaseCommand(file, {
        ...(str(v.format) && { format: str(v.format) }), ...(str(v.backing) !== undefined && { backing: str(v.backing) }),
        ...(str(v['backing-format']) && { backingFormat: str(v['backing-format']) }), unsafe: v.unsafe === true,
      });
    }
    case 'resize': {
      // A negative relative size looks like an option to the parser: take the last argument as the size.
      const sizeArg = args[args.length - 1];
      const { values: v, positionals: p } = await parse(command, args.slice(0, -1), { shrink: { type: 'boolean' }, preallocation: { type: 'string' } });
      const [file] = positionals(p, 1, 1, 'image file name and size');
      if (sizeArg === undefined) throw new TsvmError('Expecting image file name and size');
      const { resizeCommand } = await import('./img/edit.js');
      return resizeCommand(file, sizeArg, { ...(str(v.format) && { format: str(v.format) }), shrink: v.shrink === true });
    }
    case 'map': {
      const { values: v, positionals: p } = await parse(command, args, {});
      const [file] = positionals(p, 1, 1, 'one image file name');
      const { mapCommand } = await import('./img/inspect.js');
      return mapCommand(file, { ...(str(v.format) && { format: str(v.format) }), json: outputJson(v.output) });
    }
    case 'compare': {
      const { values: v, positionals: p } = await parse(command, args, { 'second-format': { type: 'string', short: 'F' }, strict: { type: 'boolean', short: 's' } });
      const [a, b] = positionals(p, 2, 2, 'two image file names');
      const { compareCommand } = await import('./img/inspect.js');
      return compareCommand(a, b, {
        ...(str(v.format) && { formatA: str(v.format), formatB: str(v.format) }),
        ...(str(v['second-format']) && { formatB: str(v['second-format']) }), strict: v.strict === true,
      });
    }
    case 'measure': {
      const { values: v, positionals: p } = await parse(command, args, {
        'output-format': { type: 'string', short: 'O' }, options: { type: 'string', short: 'o' }, size: { type: 'string' },
      });
      const [file] = positionals(p, 0, 1, 'one image file name');
      const { measureCommand } = await import('./img/inspect.js');
      return measureCommand(file, {
        ...(str(v.format) && { format: str(v.format) }), ...(str(v['output-format']) && { outFormat: str(v['output-format']) }),
        ...(str(v.size) && { size: str(v.size) }), ...(str(v.options) && { options: str(v.options) }), json: outputJson(v.output),
      });
    }
    case 'amend': {
      const { values: v, positionals: p } = await parse(command, args, { options: { type: 'string', short: 'o' } });
      const [file] = positionals(p, 1, 1, 'one image file name');
      if (str(v.options) === undefined) throw new TsvmError('Expecting option list');
      const { amendCommand } = await import('./img/edit.js');
      return amendCommand(file, { ...(str(v.format) && { format: str(v.format) }), options: str(v.options)! });
    }
    default:
      throw new TsvmError(`Command not found: ${command}`);
  }
}

runMain('tsvm-img', main);
