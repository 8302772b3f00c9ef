// A compact client of Limbo's liveness contract (docs/LIVENESS.md) for a DBOS TypeScript app:
// the same protocol as limbo/_lease.py, on one dedicated `pg` connection.
import os from 'node:os';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';

export const FENCED_EXIT_CODE = 75; // EX_TEMPFAIL: a process manager restarts us
const LEASE_ENDED = 'L0001';

export class LimboLease {
  constructor({ url, executorID, appName, appVersion, running = null,
                beatMs = 250, graceMs = 1000, leaseMs = 5000 }) {
    Object.assign(this, { url, executorID, appName, appVersion, running, beatMs, graceMs, leaseMs });
    this.incarnation = randomUUID();
    this.lastGood = null; // send time (monotonic ms) of the last call the database confirmed
    this.sessionOk = false; // is the session that confirmed it still open?
    this.client = null;
    this.stopping = false;
  }

  // By this monotonic time the process must have stopped running workflows.
  deadline() {
    if (this.lastGood === null) return Infinity;
    return this.sessionOk
      ? this.lastGood + this.leaseMs - Math.max(500, 0.2 * this.leaseMs)
      : this.lastGood + this.graceMs - Math.max(100, 0.3 * this.graceMs);
  }

  async #connect() {
    const client = new pg.Client({ connectionString: this.url, keepAlive: true,
      application_name: `limbo-lease:${this.executorID}`.slice(0, 63),
      connectionTimeoutMillis: Math.max(this.graceMs, 1000) });
    const lost = () => { if (this.client === client) this.sessionOk = false; };
    client.on('error', lost).on('end', lost); // the socket closed, even between beats
    await client.connect();
    return client;
  }

  async #register(client) {
    const sent = performance.now();
    const { rows: [row] } = await client.query(
      'SELECT * FROM limbo.executor_register($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)',
      [this.executorID, this.incarnation, this.appName, this.appVersion, os.hostname(), process.pid,
       'typescript', this.leaseMs, this.graceMs, this.beatMs, this.running !== null]);
    if (row.outcome === 'registered') [this.lastGood, this.sessionOk] = [sent, true];
    return row;
  }

  // Before DBOS launches: take the executor ID (waiting out a dead predecessor), then beat.
  async start({ registry = null, timeoutMs = this.leaseMs + this.graceMs + 5000 } = {}) {
    this.client = await this.#connect();
    for (const until = performance.now() + timeoutMs; ;) {
      const row = await this.#register(this.client);
      if (row.outcome === 'registered') break;
      // 'conflict': a live process holds this executor ID; refuse to start.
      if (row.outcome !== 'busy' || performance.now() > until) {
        await this.client.end().catch(() => {});
        throw new Error(`limbo: executor ID ${this.executorID} refused (${row.outcome}): ${row.detail}`);
      }
      await sleep(200); // 'busy': a previous incarnation may still be running
    }
    if (registry) {
      await this.client.query('SELECT limbo.publish_workflows($1, $2, $3, $4::jsonb)',
        [this.appName, this.appVersion, this.executorID, JSON.stringify(registry)]);
    }
    this.fencer = setInterval(() => {
      if (performance.now() >= this.deadline()) {
        this.fence(this.sessionOk ? 'lease could not be renewed in time'
          : 'connection to the database lost and not re-established in time');
      }
    }, 50);
    this.beating = this.#beatLoop();
  }

  async #beatLoop() {
    while (!this.stopping) {
      await sleep(this.beatMs);
      if (this.stopping) break;
      try {
        if (this.client === null) { // reconnect and re-register at once
          this.client = await this.#connect();
          const row = await this.#register(this.client);
          if (row.outcome === 'ended') this.fence(`lease ended while disconnected: ${row.detail}`);
          if (row.outcome !== 'registered') throw new Error(`re-registration refused: ${row.outcome}`);
          continue;
        }
        const running = this.running === null ? null : [...new Set(this.running())].sort();
        const sent = performance.now();
        await this.client.query('SELECT limbo.executor_beat($1, $2, $3)',
          [this.executorID, this.incarnation, running]);
        [this.lastGood, this.sessionOk] = [sent, true];
      } catch (err) {
        if (err.code === LEASE_ENDED) this.fence(err.message);
        this.sessionOk = false;
        const client = this.client;
        this.client = null;
        client?.end().catch(() => {});
        console.error(`limbo: lease connection lost (${err.message}); ` +
          `fencing in ${Math.max(0, Math.round(this.deadline() - performance.now()))} ms`);
      }
    }
  }

  // Stop running workflows now, by ending the process: nothing can overlap the next owner.
  fence(reason) {
    console.error(`limbo: fencing executor ${this.executorID} (incarnation ${this.incarnation}): ` +
      `${reason}; exiting with status ${FENCED_EXIT_CODE}`);
    process.exit(FENCED_EXIT_CODE);
  }

  // `release` only once nothing runs here any more: our PENDING rows are handed over at once.
  async stop({ release }) {
    this.stopping = true;
    clearInterval(this.fencer);
    await this.beating;
    if (this.client === null) return;
    if (release) {
      await this.client.query('SELECT limbo.executor_stop($1, $2)', [this.executorID, this.incarnation])
        .catch((err) => console.error(`limbo: lease release failed: ${err.message}`));
    }
    await this.client.end().catch(() => {});
  }
}
