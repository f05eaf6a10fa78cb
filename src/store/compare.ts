/**
 * Transaction compares, evaluated against the state a request sees (including earlier requests of the same entry).
 * A missing key has modSeq 0, version 0 and createSeq 0, as in etcd; a value compare against a missing key fails.
 */
import type { CompareOp, TxnCompare } from '../api/index.js';
import type { KeyRecord } from './records.js';

/** The compares of the wire contract (src/api/txn.ts). */
export type Compare = TxnCompare;

function holds(operator: CompareOp, order: number): boolean {
  switch (operator) {
    case '=':
      return order === 0;
    case '!=':
      return order !== 0;
    case '<':
      return order < 0;
    case '>':
      return order > 0;
  }
}

export function evaluateCompare(compare: Compare, record: KeyRecord | undefined): boolean {
  switch (compare.target) {
    case 'exists':
      return (record !== undefined) === compare.exists;
    case 'value':
      return record !== undefined && holds(compare.operator, Buffer.compare(record.value, compare.value));
    default: {
      const actual = record === undefined ? 0 : record[compare.target];
      return holds(compare.operator, Math.sign(actual - compare.number));
    }
  }
}
