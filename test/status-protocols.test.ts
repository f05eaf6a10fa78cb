/**
 * `/v1/status` names the versions this build speaks (replication, wire, snapshot), so that an operator upgrading a
 * tree one node at a time can tell which nodes can follow which (README, Upgrading): `version` was `0.1.0` in builds
 * of different replication protocols. In-process root on port 0, auth off.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { WIRE_PROTOCOL_VERSION } from '../src/api/index.js';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { PROTOCOL_VERSION } from '../src/replication/index.js';
import { SNAPSHOT_FORMAT_VERSION } from '../src/snapshot/index.js';
import { requestJson } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';

const dir = makeTempDir('status-protocols');
let root: MercuryNode | undefined;

after(async () => {
  await root?.close();
  removeDir(dir);
});

test('status: /v1/status names the replication, wire and snapshot versions of the build', async () => {
  root = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'root'), port: 0 }), { limits: NODE_LIMITS_TEST, auth: 'off' });
  const status = await requestJson<{ protocols?: unknown }>(root.url, 'GET', '/v1/status');
  assert.deepEqual(status.protocols, { replication: PROTOCOL_VERSION, wire: WIRE_PROTOCOL_VERSION, snapshot: SNAPSHOT_FORMAT_VERSION });
});
