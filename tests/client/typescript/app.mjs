// A small real DBOS TypeScript app that takes part in Limbo's liveness contract.
//
//   node app.mjs serve [DEDUP_ID [WORKFLOW_ID]]  run (and enqueue one `job` first, if given)
//   node app.mjs enqueue DEDUP_ID [WORKFLOW_ID]  enqueue one `job` with DBOSClient, print the outcome
//   node app.mjs result WORKFLOW_ID              read a workflow's outcome with DBOSClient
//   node app.mjs migrate                         create DBOS's system schema, nothing else
//
// Environment: DATABASE_URL; for serve, LIMBO_EXECUTOR_ID; optional APP_VERSION, JOB_STEPS,
// STEP_MS. Every line on stdout is one JSON object.
import { DBOS, DBOSClient } from '@dbos-inc/dbos-sdk';
import { DBOSExecutor } from '@dbos-inc/dbos-sdk/internal/dbos-executor';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { LimboLease } from './limbo-lease.mjs';

const APP_NAME = 'ts-demo';
const QUEUE = 'ts-jobs';
const url = required('DATABASE_URL');
const appVersion = process.env.APP_VERSION || 'ts-demo-1';
const steps = Number(process.env.JOB_STEPS || 6);
const stepMs = Number(process.env.STEP_MS || 700);
const say = (event, fields = {}) => console.log(JSON.stringify({ event, pid: process.pid, ...fields }));

function required(name) {
  const value = process.env[name];
  if (!value) { console.error(`${name} is required`); process.exit(2); }
  return value;
}

// The app's own table of side effects: one row per step execution.
const effects = new pg.Pool({ connectionString: url, max: 2 });
effects.on('error', (err) => console.error(`effects pool: ${err.message}`)); // an idle client lost
async function effect(workflowID, step) {
  await sleep(stepMs);
  await effects.query('INSERT INTO ts_demo.effects (workflow_id, step, pid) VALUES ($1, $2, $3)',
    [workflowID, step, process.pid]);
  return step;
}
const stepFn = DBOS.registerStep(effect, { name: 'effect' });

async function job(n) {
  for (let step = 1; step <= n; step++) await stepFn(DBOS.workflowID, step);
  return { steps: n };
}
const jobWorkflow = DBOS.registerWorkflow(job, { name: 'job' });

// The workflow IDs this process executes: DBOS's own in-process map (an internal API of the
// pinned SDK), held past DBOS.shutdown(), which drops the executor but not the runs it abandons.
let systemDatabase = null;
const running = () => {
  const sysdb = DBOSExecutor.globalInstance?.systemDatabase ?? systemDatabase; // set during launch
  return [...(sysdb?.runningWorkflowMap.keys() ?? [])];
};

async function serve(dedupID, workflowID) {
  const executorID = required('LIMBO_EXECUTOR_ID');
  await effects.query(`CREATE SCHEMA IF NOT EXISTS ts_demo;
    CREATE TABLE IF NOT EXISTS ts_demo.effects (workflow_id text NOT NULL, step integer NOT NULL,
      pid integer NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`);
  const lease = new LimboLease({ url, executorID, appName: APP_NAME, appVersion, running });
  await lease.start(); // before DBOS recovers or dequeues anything
  say('lease_started', { executor_id: executorID, incarnation: lease.incarnation });
  DBOS.setConfig({ name: APP_NAME, systemDatabaseUrl: url, applicationVersion: appVersion, executorID });
  await DBOS.launch();
  systemDatabase = DBOSExecutor.globalInstance.systemDatabase;
  await DBOS.registerQueue(QUEUE, { workerConcurrency: 4 });
  say('launched', { executor_id: DBOS.executorID, application_version: DBOS.applicationVersion });
  if (dedupID) {
    const handle = await DBOS.startWorkflow(jobWorkflow, {
      workflowID, queueName: QUEUE, enqueueOptions: { deduplicationID: dedupID } })(steps);
    say('enqueued', { workflow_id: handle.workflowID, deduplication_id: dedupID });
  }
  const stop = async (signal) => {
    say('stopping', { signal });
    await DBOS.shutdown({ workflowCompletionTimeoutMS: 2000 });
    await lease.stop({ release: running().length === 0 });
    await effects.end();
    process.exit(0);
  };
  process.once('SIGTERM', stop).once('SIGINT', stop);
}

async function withClient(action) {
  const client = await DBOSClient.create({ systemDatabaseUrl: url, applicationName: APP_NAME });
  try { return await action(client); } finally { await client.destroy(); await effects.end(); }
}

async function enqueue(dedupID, workflowID) {
  await withClient(async (client) => {
    try {
      const handle = await client.enqueue({ queueName: QUEUE, workflowName: 'job', workflowID,
        deduplicationID: dedupID, appVersion }, steps);
      say('enqueue', { accepted: true, workflow_id: handle.workflowID });
    } catch (err) {
      say('enqueue', { accepted: false, error_name: err.name, error_message: err.message });
    }
  });
}

async function result(workflowID) {
  await withClient(async (client) => {
    const handle = client.retrieveWorkflow(workflowID);
    const status = await handle.getStatus();
    try {
      say('result', { status: status?.status, output: await handle.getResult() });
    } catch (err) {
      say('result', { status: status?.status, is_error: err instanceof Error,
        error_name: err.name, error_message: err.message });
    }
  });
}

async function migrate() {
  await DBOS.migrate(url);
  await effects.end();
  say('migrated');
}

const [command, ...args] = process.argv.slice(2);
const commands = { serve, enqueue, result, migrate };
if (!commands[command]) { console.error('usage: app.mjs serve|enqueue|result|migrate ...'); process.exit(2); }
await commands[command](...args);
