import Database from 'better-sqlite3';
import { type LocalNode, CommandError, HeaderInjectionError, InvalidEslHeaderError, LocationDbError, LocationRowError } from '../../bridge/index.js';
import { LOCATION_PREFIX, type RowChange, type Slot, type SlotRecord } from './location-table.js';
import { isStorableText } from './registrations.js';
import { MOD_DB_INDEXES, MOD_DB_TABLES } from './schema.js';

/**
 * What a write did. Rows `[0, handled)` were written, except those in `refused`, which
 * this sink can never write (the row is bad, not the sink). Rows from `handled` on were
 * not written because of `error` (busy, disconnected, read-only, full, corrupt) and are
 * retried.
 */
export interface WriteResult {
  handled: number;
  refused: { index: number; error: Error }[];
  error?: unknown;
}

/** Where the location rows go: call_limit.db directly, or mod_db's API over ESL. */
export interface RowSink {
  /** Why this sink could never write the row (checked before a row is batched), or null. */
  unwritable(change: RowChange): LocationRowError | null;
  /** Write the batch, stopping at `deadline` (epoch ms); never rejects. */
  write(batch: RowChange[], deadline: number): Promise<WriteResult>;
  /** The LOCATION_ rows present now, so a start from the cluster state can remove stale ones. Null when the sink cannot read. */
  locationRows(): RowChange[] | null;
  /** The consumer's own record of every slot (side table), for a restart. Null when the sink keeps none. */
  slotRecords(): SlotRecord[] | null;
  close(): Promise<void>;
}

/**
 * The consumer's own record next to mod_db's tables in call_limit.db: every host's
 * registration of a user (or its tombstone), with where it was learned. db_data stays
 * exactly mod_db's; mod_db never reads this table. It is what lets a restart keep the
 * rows of legacy nodes (which never write KV), expire what ended while the bridge was
 * down, and reject a redelivered register that an unregister already ended.
 */
export const SLOTS_TABLE = 'fsb_location_slots';
const CREATE_SLOTS_TABLE = `CREATE TABLE IF NOT EXISTS ${SLOTS_TABLE} (
   realm      TEXT NOT NULL,
   user       TEXT NOT NULL,
   hostname   TEXT NOT NULL,
   live       INTEGER NOT NULL,
   changed_at INTEGER NOT NULL,
   slot       TEXT NOT NULL,
   PRIMARY KEY (realm, user, hostname)
) WITHOUT ROWID`;

/**
 * Writes call_limit.db with bound parameters only, one short IMMEDIATE transaction
 * per batch. The busy timeout is kept short on purpose: better-sqlite3 waits
 * synchronously, so a long timeout would freeze the bridge's event loop while
 * FreeSWITCH holds the database; instead a busy batch is handed back and retried.
 * The journal mode is left as FreeSWITCH set it.
 */
export class SqliteRowSink implements RowSink {
  private readonly deleteRow: Database.Statement;
  private readonly insertRow: Database.Statement;
  private readonly writeBatch: (batch: RowChange[]) => void;

  /**
   * Opens call_limit.db and proves it can be written (mod_db's schema, then a write
   * that is rolled back), so a missing directory, a corrupt, read-only or locked file
   * fails startup with LocationDbError instead of failing every batch later. A lock
   * is waited for up to `lockWaitMs` (FreeSWITCH may hold it for a moment).
   */
  static async open(path: string, busyTimeoutMs: number, options: { lockWaitMs?: number; slots?: boolean } = {}): Promise<SqliteRowSink> {
    const lockWaitMs = options.lockWaitMs ?? STARTUP_LOCK_WAIT_MS;
    const deadline = Date.now() + lockWaitMs;
    for (let delayMs = 10; ; delayMs = Math.min(delayMs * 2, 500)) {
      let db: Database.Database | null = null;
      try {
        db = new Database(path, { timeout: busyTimeoutMs });
        createModDbSchema(db);
        if (options.slots) db.transaction(() => db!.exec(CREATE_SLOTS_TABLE)).immediate();
        proveWritable(db);
        return new SqliteRowSink(db, options.slots ?? false);
      } catch (err) {
        db?.close();
        const busy = isBusy(err);
        if (busy && Date.now() + delayMs < deadline) {
          await new Promise((resolve) => setTimeout(resolve, delayMs));
          continue;
        }
        throw new LocationDbError(path, busy ? `locked by another process for ${lockWaitMs} ms` : describeOpenFailure(err), { cause: err });
      }
    }
  }

  private constructor(
    private readonly db: Database.Database,
    private readonly keepsSlots: boolean,
  ) {
    this.deleteRow = this.db.prepare('DELETE FROM db_data WHERE realm = ? AND data_key = ?');
    this.insertRow = this.db.prepare('INSERT INTO db_data (hostname, realm, data_key, data) VALUES (?, ?, ?, ?)');
    const slots = keepsSlots
      ? {
          clear: this.db.prepare(`DELETE FROM ${SLOTS_TABLE} WHERE realm = ? AND user = ?`),
          insert: this.db.prepare(`INSERT INTO ${SLOTS_TABLE} (realm, user, hostname, live, changed_at, slot) VALUES (?, ?, ?, ?, ?, ?)`),
        }
      : null;
    const tx = this.db.transaction((batch: RowChange[]) => {
      for (const change of batch) {
        if (change.writeRow !== false) {
          this.deleteRow.run(change.realm, change.dataKey);
          if (change.row) this.insertRow.run(change.row.hostname, change.realm, change.dataKey, change.row.data);
        }
        if (slots && change.slots) {
          slots.clear.run(change.realm, change.dataKey.slice(LOCATION_PREFIX.length));
          for (const { realm, user, hostname, ...slot } of change.slots) slots.insert.run(realm, user, hostname, slot.binding ? 1 : 0, slot.changedAt, JSON.stringify(slot));
        }
      }
    });
    this.writeBatch = (batch) => tx.immediate(batch);
  }

  unwritable(): null {
    return null;
  }

  /**
   * One transaction for the batch. A failure of the database (busy, read-only, full,
   * corrupt, I/O) leaves the whole batch for a retry; a failure that belongs to a row
   * (a constraint or trigger someone added, a value SQLite refuses) is found by
   * writing the rows one by one, so one bad row cannot hold back the others.
   */
  async write(batch: RowChange[]): Promise<WriteResult> {
    try {
      this.writeBatch(batch);
      return { handled: batch.length, refused: [] };
    } catch (err) {
      if (!isRowError(err)) return { handled: 0, refused: [], error: err };
    }
    const refused: WriteResult['refused'] = [];
    for (let i = 0; i < batch.length; i++) {
      try {
        this.writeBatch([batch[i]]);
      } catch (err) {
        if (!isRowError(err)) return { handled: i, refused, error: err };
        refused.push({ index: i, error: err as Error });
      }
    }
    return { handled: batch.length, refused };
  }

  locationRows(): RowChange[] {
    const rows = this.db
      .prepare("SELECT hostname, realm, data_key, data FROM db_data WHERE substr(data_key, 1, ?) = ?")
      .all(LOCATION_PREFIX.length, LOCATION_PREFIX) as { hostname: string; realm: string; data_key: string; data: string }[];
    return rows.map((r) => ({ realm: r.realm, dataKey: r.data_key, row: { hostname: r.hostname, data: r.data } }));
  }

  slotRecords(): SlotRecord[] | null {
    if (!this.keepsSlots) return null;
    const rows = this.db.prepare(`SELECT realm, user, hostname, slot FROM ${SLOTS_TABLE} ORDER BY changed_at`).all() as { realm: string; user: string; hostname: string; slot: string }[];
    const out: SlotRecord[] = [];
    for (const row of rows) {
      const slot = parseSlot(row.slot);
      if (slot) out.push({ realm: row.realm, user: row.user, hostname: row.hostname, ...slot });
    }
    return out;
  }

  async close(): Promise<void> {
    this.db.close();
  }
}

const SOURCES = new Set<string>(['local', 'kv', 'nats', 'multicast']);

/** A slot as this consumer wrote it, or null for anything else (the file is shared with FreeSWITCH and its operators). */
function parseSlot(text: string): Slot | null {
  let slot: Partial<Slot>;
  try {
    slot = JSON.parse(text) as Partial<Slot>;
  } catch {
    return null;
  }
  if (typeof slot !== 'object' || slot === null || !SOURCES.has(slot.source as string) || !Number.isFinite(slot.changedAt)) return null;
  const order = slot.order;
  if (typeof order !== 'object' || order === null || !Number.isSafeInteger(order.ts)) return null;
  const b = slot.binding;
  if (b !== null) {
    if (typeof b !== 'object' || b === undefined) return null;
    const strings = [b.realm, b.hostname, b.switchname, b.ip];
    if (strings.some((v) => typeof v !== 'string' || v === '' || !isStorableText(v)) || typeof b.user !== 'string' || !isStorableText(b.user, LOCATION_PREFIX.length)) return null;
    if (!Number.isSafeInteger(b.ts) || !Number.isFinite(b.expiresAt)) return null;
  }
  return slot as Slot;
}

/** How long startup waits for a lock held on call_limit.db before it gives up. */
export const STARTUP_LOCK_WAIT_MS = 5_000;

function isBusy(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED' || (typeof code === 'string' && (code.startsWith('SQLITE_BUSY_') || code.startsWith('SQLITE_LOCKED_')));
}

/** A write that changes nothing and is rolled back: SQLITE_READONLY shows only on a real write. */
function proveWritable(db: Database.Database): void {
  const version = Number(db.pragma('user_version', { simple: true }));
  try {
    db.transaction(() => {
      db.pragma(`user_version = ${version}`);
      throw ROLLBACK;
    }).immediate();
  } catch (err) {
    if (err !== ROLLBACK) throw err;
  }
}
const ROLLBACK = new Error('rollback');

/** What an operator needs to know, from better-sqlite3's error (it names neither the file nor the param). */
function describeOpenFailure(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  const message = (err as Error).message ?? String(err);
  if (typeof code !== 'string') return /directory does not exist/.test(message) ? 'its directory does not exist' : message;
  if (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT')) return `not a SQLite database, or corrupt (${code}: ${message})`;
  if (code.startsWith('SQLITE_READONLY')) return `read-only (${code}: ${message})`;
  if (code.startsWith('SQLITE_CANTOPEN')) return `cannot be opened: no permission, or not a file (${code})`;
  return `${code}: ${message}`;
}

/** Create mod_db's tables and indexes that are missing, with mod_db's own statements. */
export function createModDbSchema(db: Database.Database): void {
  const existing = new Set((db.prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')").all() as { name: string }[]).map((r) => r.name));
  const missing = [
    ...Object.entries(MOD_DB_TABLES).filter(([name]) => !existing.has(name)),
    ...Object.entries(MOD_DB_INDEXES).filter(([name]) => !existing.has(name)),
  ];
  if (missing.length === 0) return;
  db.transaction(() => {
    for (const [, sql] of missing) db.exec(sql);
  }).immediate();
}

/** SQLite errors that belong to the row written, not to the database. */
function isRowError(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string') return err instanceof TypeError || err instanceof RangeError;
  return code.startsWith('SQLITE_CONSTRAINT') || code === 'SQLITE_TOOBIG' || code === 'SQLITE_MISMATCH' || code === 'SQLITE_RANGE';
}

/**
 * What mod_db's `db insert/<realm>/<key>/<value>` cannot carry as written: its
 * switch_separate_string splits on `/`, treats `\` as an escape and `'` as a quote, and
 * strips leading and trailing spaces; CR, LF and NUL would end the ESL command; an
 * empty part shifts the others; a lone surrogate would be written as U+FFFD, another key.
 */
// eslint-disable-next-line no-control-regex -- control characters are exactly what must be found
const API_UNSAFE = /[/\\'\u0000-\u001f\u007f]|^\s|\s$/;
const unsafePart = (part: string) => part === '' || !part.isWellFormed() || API_UNSAFE.test(part);

/** mod_db's reply when it is not loaded: every row would fail the same way, so it is the sink that fails. */
const NO_DB_API = /command not found|invalid command|no such command/i;

/**
 * For nodes whose call_limit.db this process cannot open: mod_db's own API over ESL.
 * Limitation: mod_db stores its own node's name as hostname, not the registering node's.
 */
export class EslRowSink implements RowSink {
  constructor(private readonly local: LocalNode) {}

  unwritable(change: RowChange): LocationRowError | null {
    const parts = [change.realm, change.dataKey, ...(change.row ? [change.row.data] : [])];
    return parts.some(unsafePart) ? new LocationRowError(change.realm, change.dataKey) : null;
  }

  /**
   * One `api db ...` per row, in order. A row FreeSWITCH refuses (or that cannot be
   * sent) is refused alone; ESL down, a timeout or mod_db missing stops the batch there
   * for a retry, as does the deadline (stop() must not wait a command timeout per row).
   */
  async write(batch: RowChange[], deadline: number): Promise<WriteResult> {
    const refused: WriteResult['refused'] = [];
    for (let i = 0; i < batch.length; i++) {
      const change = batch[i];
      if (change.writeRow === false) continue;
      if (Date.now() > deadline) return { handled: i, refused, error: new Error('stopped before the batch was written') };
      const unwritable = this.unwritable(change);
      if (unwritable) {
        refused.push({ index: i, error: unwritable });
        continue;
      }
      const parts = [change.realm, change.dataKey, ...(change.row ? [change.row.data] : [])];
      const command = change.row ? `db insert/${parts.join('/')}` : `db delete/${parts.join('/')}`;
      let reply: string;
      try {
        reply = (await this.local.api(command)).trim();
      } catch (err) {
        if (err instanceof InvalidEslHeaderError || err instanceof HeaderInjectionError) {
          refused.push({ index: i, error: err });
          continue;
        }
        return { handled: i, refused, error: err };
      }
      const error = CommandError.fromReply(command, reply);
      if (!error) continue;
      if (NO_DB_API.test(reply)) return { handled: i, refused, error };
      refused.push({ index: i, error });
    }
    return { handled: batch.length, refused };
  }

  locationRows(): null {
    return null;
  }

  slotRecords(): null {
    return null;
  }

  async close(): Promise<void> {}
}
