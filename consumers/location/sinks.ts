import Database from 'better-sqlite3';
import { type LocalNode, CommandError, LocationDbError, LocationRowError } from '../../bridge/index.js';
import { LOCATION_PREFIX, type RowChange } from './location-table.js';
import { MOD_DB_INDEXES, MOD_DB_TABLES } from './schema.js';

/** Where the location rows go: call_limit.db directly, or mod_db's API over ESL. */
export interface RowSink {
  /** Write the batch; rejects when it could not (the caller keeps the batch and retries). */
  write(batch: RowChange[]): Promise<void>;
  /** The LOCATION_ rows present now, so a start from the cluster state can remove stale ones. Null when the sink cannot read. */
  locationRows(): RowChange[] | null;
  close(): Promise<void>;
}

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
  static async open(path: string, busyTimeoutMs: number, lockWaitMs = STARTUP_LOCK_WAIT_MS): Promise<SqliteRowSink> {
    const deadline = Date.now() + lockWaitMs;
    for (let delayMs = 10; ; delayMs = Math.min(delayMs * 2, 500)) {
      let db: Database.Database | null = null;
      try {
        db = new Database(path, { timeout: busyTimeoutMs });
        createModDbSchema(db);
        proveWritable(db);
        return new SqliteRowSink(db);
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

  private constructor(private readonly db: Database.Database) {
    this.deleteRow = this.db.prepare('DELETE FROM db_data WHERE realm = ? AND data_key = ?');
    this.insertRow = this.db.prepare('INSERT INTO db_data (hostname, realm, data_key, data) VALUES (?, ?, ?, ?)');
    const tx = this.db.transaction((batch: RowChange[]) => {
      for (const change of batch) {
        this.deleteRow.run(change.realm, change.dataKey);
        if (change.row) this.insertRow.run(change.row.hostname, change.realm, change.dataKey, change.row.data);
      }
    });
    this.writeBatch = (batch) => tx.immediate(batch);
  }

  async write(batch: RowChange[]): Promise<void> {
    this.writeBatch(batch);
  }

  locationRows(): RowChange[] {
    const rows = this.db
      .prepare("SELECT hostname, realm, data_key, data FROM db_data WHERE substr(data_key, 1, ?) = ?")
      .all(LOCATION_PREFIX.length, LOCATION_PREFIX) as { hostname: string; realm: string; data_key: string; data: string }[];
    return rows.map((r) => ({ realm: r.realm, dataKey: r.data_key, row: { hostname: r.hostname, data: r.data } }));
  }

  async close(): Promise<void> {
    this.db.close();
  }
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

/** mod_db splits its argument on `/`; CR/LF would end the ESL command. */
const API_UNSAFE = /[/\r\n]/;

/**
 * For nodes whose call_limit.db this process cannot open: mod_db's own API over ESL.
 * Limitation: mod_db stores its own node's name as hostname, not the registering node's.
 */
export class EslRowSink implements RowSink {
  constructor(
    private readonly local: LocalNode,
    private readonly onUnwritable: (error: LocationRowError) => void,
  ) {}

  async write(batch: RowChange[]): Promise<void> {
    for (const change of batch) {
      const parts = [change.realm, change.dataKey, ...(change.row ? [change.row.data] : [])];
      if (parts.some((p) => p === '' || API_UNSAFE.test(p))) {
        this.onUnwritable(new LocationRowError(change.realm, change.dataKey));
        continue;
      }
      const command = change.row ? `db insert/${parts.join('/')}` : `db delete/${parts.join('/')}`;
      const refused = CommandError.fromReply(command, (await this.local.api(command)).trim());
      if (refused) throw refused;
    }
  }

  locationRows(): null {
    return null;
  }

  async close(): Promise<void> {}
}
