#!/usr/bin/env node
// The long tests (`npm run test:long`): the guest-correctness tests of `npm test`, repeated more. Debian's
// installer boots TSVM_DI_BOOTS times (10 unless set; npm test boots it 3 times) and the device stress of the
// default guest runs TSVM_STRESS_ROUNDS rounds (20; npm test runs 3).
import { spawnSync } from 'node:child_process';

const env = {
  ...process.env,
  TSVM_DI_BOOTS: process.env.TSVM_DI_BOOTS ?? '10',
  TSVM_STRESS_ROUNDS: process.env.TSVM_STRESS_ROUNDS ?? '20',
};
const r = spawnSync(process.execPath, ['scripts/run-tests.mjs', 'debian-installer', 'stress-devices', 'icount'], { stdio: 'inherit', env });
process.exit(r.status ?? 1);
