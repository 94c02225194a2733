import { TsvmError } from '../../base/errors.js';
import { Qcow2Image, type Qcow2CheckResult } from '../../block/index.js';
import { openForCommand } from './open.js';

/** qemu-img check's exit codes. */
const EXIT_OK = 0, EXIT_CHECK_ERRORS = 1, EXIT_CORRUPT = 2, EXIT_LEAKS = 3, EXIT_UNSUPPORTED = 63;

export async function checkCommand(file: string, opts: { format?: string; json: boolean; repair?: 'leaks' | 'all' }): Promise<number> {
  const image = await openForCommand(file, opts.format, opts.repair === undefined);
  try {
    if (!(image instanceof Qcow2Image)) {
      process.stderr.write('tsvm-img: This image format does not support checks\n');
      return EXIT_UNSUPPORTED;
    }
    let result = await image.check(false);
    if (opts.repair !== undefined && (result.leaks > 0 || (opts.repair === 'all' && result.corruptions > 0))) {
      const fixed = await image.check(true);
      if (!opts.json) {
        process.stdout.write(`The following inconsistencies were found and repaired:\n\n    ${fixed.leaksFixed} leaked clusters\n` +
          `    ${fixed.corruptionsFixed} corruptions\n\nDouble checking the fixed image now...\n`);
      }
      result = await image.check(false);
    }
    if (opts.json) process.stdout.write(JSON.stringify(checkJson(file, result), null, 4) + '\n');
    else process.stdout.write(checkText(result));
    if (result.checkErrors > 0) return EXIT_CHECK_ERRORS;
    if (result.corruptions > 0) return EXIT_CORRUPT;
    if (result.leaks > 0) return EXIT_LEAKS;
    return EXIT_OK;
  } finally {
    await image.close();
  }
}

function checkText(r: Qcow2CheckResult): string {
  let out = '';
  if (r.corruptions === 0 && r.leaks === 0 && r.checkErrors === 0) out += 'No errors were found on the image.\n';
  if (r.corruptions > 0) {
    out += `\n${r.corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n`;
  }
  if (r.leaks > 0) out += `\n${r.leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n`;
  if (r.checkErrors > 0) out += `\n${r.checkErrors} internal errors have occurred during the check.\n`;
  if (r.totalClusters > 0 && r.allocatedClusters > 0) {
    out += `${r.allocatedClusters}/${r.totalClusters} = ${((100 * r.allocatedClusters) / r.totalClusters).toFixed(2)}% allocated\n`;
  }
  if (r.imageEndOffset > 0) out += `Image end offset: ${r.imageEndOffset}\n`;
  return out;
}

function checkJson(file: string, r: Qcow2CheckResult): Record<string, unknown> {
  const out: Record<string, unknown> = { 'image-end-offset': r.imageEndOffset, 'total-clusters': r.totalClusters, 'check-errors': r.checkErrors };
  if (r.leaks > 0) out.leaks = r.leaks;
  if (r.corruptions > 0) out.corruptions = r.corruptions;
  if (r.allocatedClusters > 0) out['allocated-clusters'] = r.allocatedClusters;
  out.filename = file;
  out.format = 'qcow2';
  return out;
}

export function repairMode(value: string | undefined): 'leaks' | 'all' | undefined {
  if (value === undefined) return undefined;
  if (value === 'leaks' || value === 'all') return value;
  throw new TsvmError(`Unknown option value for -r (expecting 'leaks' or 'all'): ${value}`);
}
