/**
 * NOTIFY sequences as a BLF lamp or a presence watcher shows them, to compare what a
 * phone on the call's own node saw (the gold standard) with what a phone on another
 * node saw, and the delay between the two.
 */
import { appendFileSync } from 'node:fs';
import type { Notify, Subscription } from '../support/sip-ua.js';
import { sleep } from '../support/wait.js';

/** One NOTIFY as a lamp shows it: every dialog's state/direction ("idle" when none), or the pidf note, or the MWI flag. */
export function summarize(notify: Notify): string {
  if (notify.event.startsWith('dialog')) {
    return notify.dialogs.length === 0 ? 'idle' : notify.dialogs.map((d) => `${d.state}/${d.direction ?? '-'}`).join(',');
  }
  if (notify.event.startsWith('message-summary')) return `mwi ${notify.messagesWaiting ? 'yes' : 'no'} ${notify.voiceMessage ?? ''}`.trim();
  return `${notify.basic ?? '-'} "${notify.note ?? ''}"`;
}

/** NOTIFYs of a live subscription (its final terminated NOTIFY excluded) from index `from`. */
export function sequence(subscription: Subscription, from = 0): Notify[] {
  return subscription.received.slice(from).filter((n) => !n.subscriptionState.startsWith('terminated'));
}

/** Waits until none of the subscriptions received a NOTIFY for `quietMs` (FreeSWITCH sends initial and probe NOTIFYs in a burst). */
export async function settle(subscriptions: Subscription[], quietMs = 1_000, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = Math.max(0, ...subscriptions.flatMap((s) => s.received.map((n) => n.at)));
    const idleFor = Date.now() - last;
    if (idleFor >= quietMs) return;
    if (Date.now() > deadline) throw new Error(`NOTIFYs still arriving after ${timeoutMs} ms`);
    await sleep(quietMs - idleFor);
  }
}

export interface Comparison {
  what: string;
  native: string[];
  remote: string[];
  /** remote.at - native.at per position, when both sequences have it. */
  delaysMs: number[];
}

export function compare(what: string, native: Notify[], remote: Notify[]): Comparison {
  const delaysMs: number[] = [];
  for (let i = 0; i < Math.min(native.length, remote.length); i++) delaysMs.push(remote[i].at - native[i].at);
  return { what, native: native.map(summarize), remote: remote.map(summarize), delaysMs };
}

/**
 * Prints what was measured (the figures of docs/interop.md) and, when FSB_FS_REPORT
 * names a file, appends it there as one JSON line.
 */
export function report(section: string, data: unknown): void {
  const line = JSON.stringify({ section, at: new Date().toISOString(), data });
  console.log(`[interop] ${line}`);
  const file = process.env.FSB_FS_REPORT;
  if (file) appendFileSync(file, line + '\n');
}
