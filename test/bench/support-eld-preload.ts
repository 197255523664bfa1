import { watchLoop } from './support-eld.js';

// `--import`ed into bridge processes by startBridgeProcess when FSB_BENCH_ELD=DIR is set.
if (process.env.FSB_BENCH_ELD) watchLoop(process.env.FSB_BENCH_ELD);
