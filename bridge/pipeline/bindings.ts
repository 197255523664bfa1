import type { FsEvent } from '../event/event.js';
import { isEventName } from '../event/names.js';

/**
 * Event bindings in mod_event_multicast's grammar: space-separated event names,
 * `ALL` for everything, and after the token `CUSTOM` every further token is a
 * subclass (even one that looks like an event name). Event names match
 * case-insensitively, subclasses exactly, as in the module.
 */
export class Bindings {
  readonly all: boolean;
  readonly names: ReadonlySet<string>;
  readonly subclasses: ReadonlySet<string>;
  /** Tokens before CUSTOM that are not FreeSWITCH event names (the module ignores them silently; we report them). */
  readonly unknown: readonly string[];

  private constructor(all: boolean, names: Set<string>, subclasses: Set<string>, unknown: string[]) {
    this.all = all;
    this.names = names;
    this.subclasses = subclasses;
    this.unknown = unknown;
  }

  static parse(text: string): Bindings {
    const names = new Set<string>();
    const subclasses = new Set<string>();
    const unknown: string[] = [];
    let custom = false;
    let all = false;
    for (const token of text.split(/\s+/)) {
      if (token === '') continue;
      if (custom) {
        subclasses.add(token);
        continue;
      }
      const upper = token.toUpperCase();
      if (!isEventName(upper)) {
        unknown.push(token);
        continue;
      }
      if (upper === 'ALL') all = true;
      names.add(upper);
      if (upper === 'CUSTOM') custom = true;
    }
    return new Bindings(all, names, subclasses, unknown);
  }

  get empty(): boolean {
    return !this.all && this.names.size === 0;
  }

  matches(event: FsEvent): boolean {
    if (this.all) return true;
    const name = event.name;
    if (!this.names.has(name)) return false;
    if (name !== 'CUSTOM') return true;
    const subclass = event.subclass;
    return subclass !== undefined && this.subclasses.has(subclass);
  }

  /** The ESL `event plain ...` argument list that subscribes to at least these events. */
  toEslSubscription(): string {
    if (this.all) return 'ALL';
    const names = [...this.names].filter((n) => n !== 'CUSTOM');
    if (this.names.has('CUSTOM')) names.push('CUSTOM', ...this.subclasses);
    return names.join(' ');
  }

  /** Union of several binding sets (the ESL subscription must cover every sink). */
  static union(sets: Bindings[]): Bindings {
    const all = sets.some((b) => b.all);
    const names = new Set<string>();
    const subclasses = new Set<string>();
    for (const b of sets) {
      b.names.forEach((n) => names.add(n));
      b.subclasses.forEach((s) => subclasses.add(s));
    }
    return new Bindings(all, names, subclasses, []);
  }

  toString(): string {
    return this.toEslSubscription();
  }
}
