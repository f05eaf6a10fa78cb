/**
 * The root's heartbeats. A signing root signs each one (src/trust/signatures.ts): beat numbers count up from 1 within
 * an epoch drawn at random when the process starts, so that a replica with trusted keys can tell a heartbeat newer than
 * any it took from one a relay replays (decision record 47). Without a signer, heartbeats carry no proof, as before.
 */
import { randomBytes } from 'node:crypto';
import { HEARTBEAT_EPOCH_BYTES, type Signer } from '../trust/index.js';
import type { Heartbeat } from './protocol.js';

export class RootHeartbeats {
  private beats = 0;

  /** `epoch`: random unless given (the seeded simulation gives one of its own). */
  constructor(
    private readonly signer: Signer | undefined,
    private readonly epoch: Buffer = randomBytes(HEARTBEAT_EPOCH_BYTES),
  ) {}

  /** The next heartbeat, at the root's head seq and wall clock time. */
  next(rootSeq: number, rootTimeMs: number): Heartbeat {
    if (this.signer === undefined) return { rootSeq, rootTimeMs, path: [] };
    const beat = ++this.beats;
    const signature = this.signer.signHeartbeat({ epoch: this.epoch, beat, rootSeq, rootTimeMs });
    return { rootSeq, rootTimeMs, path: [], proof: { epoch: this.epoch, beat, signature } };
  }
}
