import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { counterRates, ScrapeHistory, type Scrape } from '../../../../control/dashboard/rates.js';
import type { Sample } from '../../../../shared/telemetry/prometheus-text.js';

const NAMES = new Set(['opened_total', 'bytes_total']);
const sample = (name: string, value: number, labels: Record<string, string> = {}): Sample => ({ name, labels, value });
const scrape = (time: number, samples: Sample[], start = 100): Scrape => ({ time, samples: [sample('process_start_time_seconds', start), ...samples] });

describe('counterRates', () => {
  test('rate = growth / seconds between the scrapes, per series (labels in any order)', () => {
    const before = scrape(10_000, [sample('opened_total', 10, { a: '1', b: '2' }), sample('opened_total', 5, { a: '2' }), sample('bytes_total', 1000)]);
    const after = scrape(14_000, [sample('opened_total', 30, { b: '2', a: '1' }), sample('opened_total', 5, { a: '2' }), sample('bytes_total', 9000)]);
    const r = counterRates(before, after, NAMES);
    assert.deepEqual(
      r.map((x) => [x.name, x.labels, x.total, x.perSecond]),
      [
        ['opened_total', { b: '2', a: '1' }, 30, 5],
        ['opened_total', { a: '2' }, 5, 0],
        ['bytes_total', {}, 9000, 2000],
      ],
    );
  });

  test('a series absent before counts from zero (created at its first increment)', () => {
    const r = counterRates(scrape(0, []), scrape(2000, [sample('opened_total', 4, { a: '1' })]), NAMES);
    assert.equal(r[0]!.perSecond, 2);
  });

  test('a counter that went down was reset: its whole value is the growth', () => {
    const r = counterRates(scrape(0, [sample('opened_total', 100)]), scrape(1000, [sample('opened_total', 3)]), NAMES);
    assert.equal(r[0]!.perSecond, 3);
  });

  test('a target that restarted (new start time) counts every series from zero, even one that grew past its old value', () => {
    const r = counterRates(scrape(0, [sample('opened_total', 10)], 100), scrape(1000, [sample('opened_total', 12)], 200), NAMES);
    assert.equal(r[0]!.perSecond, 12);
  });

  test('without an earlier scrape (or none earlier in time) rates are 0; other metrics and non-finite values are left out', () => {
    const after = scrape(1000, [sample('opened_total', 10), sample('other_total', 3), sample('bytes_total', NaN)]);
    assert.deepEqual(counterRates(null, after, NAMES).map((x) => [x.name, x.total, x.perSecond]), [['opened_total', 10, 0]]);
    assert.equal(counterRates(scrape(1000, [sample('opened_total', 1)]), after, NAMES)[0]!.perSecond, 0);
  });
});

describe('ScrapeHistory', () => {
  test('the rate spans from the oldest scrape within the window to the newest', () => {
    const h = new ScrapeHistory(10_000);
    assert.deepEqual(h.rates('n1', NAMES), { rates: [], seconds: 0 });
    h.add('n1', scrape(0, [sample('opened_total', 0)]));
    assert.equal(h.rates('n1', NAMES).seconds, 0);
    assert.equal(h.rates('n1', NAMES).rates[0]!.perSecond, 0);
    h.add('n1', scrape(4000, [sample('opened_total', 40)]));
    h.add('n1', scrape(8000, [sample('opened_total', 80)]));
    assert.deepEqual(h.rates('n1', NAMES).seconds, 8);
    assert.equal(h.rates('n1', NAMES).rates[0]!.perSecond, 10);
    // the scrape at 0 falls out of the window: rates now over 8000 → 14000
    h.add('n1', scrape(14_000, [sample('opened_total', 80)]));
    const r = h.rates('n1', NAMES);
    assert.equal(r.seconds, 10);
    assert.equal(r.rates[0]!.perSecond, 4);
  });

  test('after a long pause only the new scrape is left; targets no longer connected are forgotten', () => {
    const h = new ScrapeHistory(10_000);
    h.add('n1', scrape(0, [sample('opened_total', 5)]));
    h.add('n2', scrape(0, [sample('opened_total', 5)]));
    h.add('n1', scrape(60_000, [sample('opened_total', 50)]));
    assert.equal(h.rates('n1', NAMES).seconds, 0);
    h.retain(new Set(['n1']));
    assert.deepEqual(h.rates('n2', NAMES), { rates: [], seconds: 0 });
    assert.equal(h.rates('n1', NAMES).rates.length, 1);
  });
});
