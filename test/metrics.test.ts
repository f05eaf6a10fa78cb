/**
 * The metrics registry's label sets: one series per set of labels whatever order the names come in, and no two
 * different sets sharing a series whatever their values hold.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Registry } from '../src/metrics/index.js';

test('metrics: a label set is one series in any name order, rendered once', () => {
  const counter = new Registry().counter('t_total', 'test');
  counter.inc(1, { method: 'GET', route: '/a', status: '200' });
  counter.inc(2, { status: '200', route: '/a', method: 'GET' });
  counter.inc(4, { route: '/a', method: 'GET', status: '200' });
  assert.equal(counter.get({ method: 'GET', route: '/a', status: '200' }), 7);
  assert.equal(counter.get({ route: '/a', status: '200', method: 'GET' }), 7);
  assert.equal(counter.render().split('\n').filter((line) => line.startsWith('t_total{')).length, 1);
});

test('metrics: label values that mimic the key encoding do not merge series', () => {
  const counter = new Registry().counter('t_total', 'test');
  counter.inc(1, { a: '1:b1:x', b: '' });
  counter.inc(10, { a: '', b: '1:b1:x' });
  counter.inc(100, { a: '1', b: 'x' });
  assert.equal(counter.get({ a: '1:b1:x', b: '' }), 1);
  assert.equal(counter.get({ a: '', b: '1:b1:x' }), 10);
  assert.equal(counter.get({ a: '1', b: 'x' }), 100);
  assert.equal(counter.get({}), 0);
});
