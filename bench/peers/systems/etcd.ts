/**
 * etcd under test: one member on loopback with etcd's defaults (its WAL is fsynced before each commit is
 * acknowledged). Clients share one gRPC channel, which multiplexes their requests over HTTP/2 as `etcd3` does by
 * default; reads are serializable (answered from the member's own state, as Mercury and Redis answer reads).
 */
import { Etcd3 } from 'etcd3';
import { freePort } from '../../support/free-port.js';
import type { ProcessGroup } from '../processes.js';
import type { KvClient, RunningSystem, SystemAdapter, Watch } from '../system.js';
import { binaryVersion, packageVersion } from './versions.js';

export const etcdAdapter: SystemAdapter = {
  name: 'etcd',
  title: 'etcd',
  requires: [{ binary: 'etcd', debianPackage: 'etcd-server' }],
  settings: 'one member, etcd defaults (WAL fsync per commit), serializable reads',
  clientDescription:
    "`etcd3` (grpc-js), all clients on one gRPC channel (HTTP/2), each watch connection on its own. grpc-js costs the driver several times the CPU per request of the other clients (see driver CPU), so on 2 shared cores etcd's figures here are bounded by its client as much as by etcd; etcd's own benchmark (Go client, 3 x 8 vCPU, 1,000 clients) reports 44,341 writes/s and 141,578 linearizable reads/s",
  version: () => Promise.resolve(`etcd ${binaryVersion('etcd', /etcd Version: (\S+)/)} (client etcd3 ${packageVersion('etcd3')})`),
  async start(group: ProcessGroup): Promise<RunningSystem> {
    const dataDir = group.tempDir('etcd');
    const clientPort = await freePort();
    const peerPort = await freePort();
    const clientUrl = `http://127.0.0.1:${clientPort}`;
    const peerUrl = `http://127.0.0.1:${peerPort}`;
    const child = await group.start({
      name: 'etcd',
      command: 'etcd',
      args: [
        '--name', 'bench',
        '--data-dir', dataDir,
        '--listen-client-urls', clientUrl,
        '--advertise-client-urls', clientUrl,
        '--listen-peer-urls', peerUrl,
        '--initial-advertise-peer-urls', peerUrl,
        '--initial-cluster', `bench=${peerUrl}`,
      ],
      ready: /ready to serve client requests/,
    });
    const shared = new Etcd3({ hosts: clientUrl });
    const channels: Etcd3[] = [shared];
    const client: KvClient = {
      async put(key, value) {
        await shared.put(key).value(value).exec();
      },
      async get(key) {
        return (await shared.get(key).serializable(true).buffer()) ?? undefined;
      },
      async putBatch(entries) {
        const response = await shared.kv.txn({ success: entries.map(([key, value]) => ({ request_put: { key: Buffer.from(key), value } })) });
        if (!response.succeeded) throw new Error('etcd: txn without compares did not succeed');
      },
      close: () => Promise.resolve(),
    };
    return {
      name: 'etcd',
      pid: child.pid,
      dataDir,
      connect: () => Promise.resolve(client),
      async watchMany(prefix, watchers, connections, listener): Promise<Watch> {
        // A local subchannel pool per client: otherwise grpc-js puts every channel on one shared TCP connection.
        const clients = Array.from({ length: connections }, () => new Etcd3({ hosts: clientUrl, grpcOptions: { 'grpc.use_local_subchannel_pool': 1 } }));
        channels.push(...clients);
        const created = await Promise.all(
          Array.from({ length: watchers }, async (_, watcher) => {
            const watch = await clients[watcher % connections]!.watch().prefix(prefix).create();
            watch.on('put', (kv) => listener(watcher, kv.key.toString(), kv.value));
            return watch;
          }),
        );
        return {
          async close() {
            await Promise.all(created.map((watch) => watch.cancel()));
            for (const one of clients) one.close();
          },
        };
      },
      async stop() {
        for (const one of channels) one.close();
        await child.stop();
      },
    };
  },
};
