import { spawn } from 'node:child_process';
import { createCipheriv, createDecipheriv, type Cipher, type Decipher } from 'node:crypto';
import { CipherUnavailableError } from '../../errors.js';

/**
 * mod_event_multicast encrypts with OpenSSL's Blowfish-CBC (EVP_bf_cbc) keyed with
 * the whole psk (variable length; OpenSSL uses at most the first 72 bytes, exactly as
 * FreeSWITCH does, so we pass the psk unchanged). Node 20 ships OpenSSL 3, which
 * only offers bf-cbc through its legacy provider: the process must be started with
 * `--openssl-legacy-provider`. We use native OpenSSL rather than a pure-JS Blowfish
 * because it is the implementation FreeSWITCH itself links, and the receive path
 * must keep up with 20,000 datagrams/s.
 */
export const BLOWFISH_CBC = 'bf-cbc';
export const LEGACY_PROVIDER_FLAG = '--openssl-legacy-provider';
/**
 * V8 flags for the relaunched bridge (placed before the caller's own flags, which win).
 * Young generation of 2 x 8 MB semi-spaces instead of V8's 2 x 16 MB: at 10k events/s the
 * bridge's RSS peaks 15-20 MB lower with no measurable CPU cost; at saturation scavenges
 * take about 7 µs more per event (~6%). 4 MB saves a little more RSS but costs about 25%
 * of the saturated throughput (docs/benchmarks.md).
 */
export const RELAUNCH_V8_FLAGS: readonly string[] = ['--max-semi-space-size=8'];

/**
 * Environment of the relaunched bridge (the caller's own values win). After a large block
 * is freed glibc raises its mmap threshold, and the main arena's trim threshold with it
 * (up to 64 MB); now and then the bridge's main arena then kept about 25 MB of freed memory
 * for the whole run (RSS 130-139 MB against 107-113 MB in 2 of 14 runs at 10k events/s,
 * the extra all in the main arena). Setting the threshold, even to glibc's default of
 * 128 KiB, turns that adaptation off: 5 of 5 runs at 109-111 MB, CPU within the noise
 * (docs/benchmarks.md).
 */
export const RELAUNCH_ENV: Readonly<Record<string, string>> = { MALLOC_MMAP_THRESHOLD_: '131072' };

let available: boolean | undefined;

/** Whether this process can run bf-cbc with a variable-length key (checked once, with a real cipher). */
export function blowfishAvailable(): boolean {
  if (available === undefined) {
    try {
      // A 22-byte key like the fixtures': a provider that only takes 16-byte keys must fail here, not on the first packet.
      const cipher = createCipheriv(BLOWFISH_CBC, Buffer.from('fixture-psk-0123456789'), Buffer.alloc(8));
      cipher.update('probe');
      cipher.final();
      available = true;
    } catch {
      available = false;
    }
  }
  return available;
}

/** Throws CipherUnavailableError when a psk is configured but Blowfish cannot run. */
export function requireBlowfish(): void {
  if (!blowfishAvailable()) {
    throw new CipherUnavailableError(
      `psk is set but this Node has no Blowfish (bf-cbc): OpenSSL 3 offers it only with the legacy provider; start node with ${LEGACY_PROVIDER_FLAG} (or NODE_OPTIONS=${LEGACY_PROVIDER_FLAG})`,
    );
  }
}

export function blowfishEncryptor(psk: Buffer, iv: Buffer): Cipher {
  return createCipheriv(BLOWFISH_CBC, psk, iv);
}

export function blowfishDecryptor(psk: Buffer, iv: Buffer): Decipher {
  return createDecipheriv(BLOWFISH_CBC, psk, iv);
}

/** In a relaunched child: stop gracefully (SIGTERM to ourselves) when the parent goes away. */
export function followParent(): void {
  if (!process.channel && process.connected !== false) return;
  const stop = () => process.kill(process.pid, 'SIGTERM');
  // The parent may already be gone by the time this module runs.
  if (!process.connected) {
    stop();
    return;
  }
  process.channel!.unref();
  process.once('disconnect', stop);
}

/**
 * For the CLI: when Blowfish is missing and the flag was not already given, run
 * this same command again in a child node with the flag (and RELAUNCH_V8_FLAGS,
 * RELAUNCH_ENV), forwarding signals (SIGHUP reload included) and the exit code.
 * Resolves false when no relaunch is needed. A relaunch is only attempted once, so a
 * Node whose OpenSSL lacks the legacy provider entirely ends with
 * CipherUnavailableError instead of looping.
 */
export function relaunchWithLegacyProvider(): Promise<boolean> {
  if (blowfishAvailable()) return Promise.resolve(false);
  const already = process.execArgv.includes(LEGACY_PROVIDER_FLAG) || (process.env.NODE_OPTIONS ?? '').includes(LEGACY_PROVIDER_FLAG);
  if (already) return Promise.resolve(false);
  // The IPC channel is only a lifeline: it closes when this process dies, even by
  // SIGKILL, and the child then stops itself (followParent) instead of living on orphaned.
  const child = spawn(process.execPath, [LEGACY_PROVIDER_FLAG, ...RELAUNCH_V8_FLAGS, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    env: { ...RELAUNCH_ENV, ...process.env },
  });
  for (const signal of ['SIGHUP', 'SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => child.kill(signal));
  }
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      process.exitCode = code ?? (signal ? 128 : 1);
      resolve(true);
    });
  });
}
