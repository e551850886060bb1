import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Drain, drainTimes, seconds, type DrainSteps } from '../../../shared/drain.js';

/** Steps that record what the drain did, with `open` connections that end when told. */
function fakeSteps(o: { senders: boolean; open: number }): DrainSteps & { calls: string[]; at: Record<string, number>; end(n: number): void } {
  let open = o.open;
  const t0 = Date.now();
  const calls: string[] = [];
  const at: Record<string, number> = {};
  const mark = (name: string): void => {
    calls.push(name);
    at[name] = Date.now() - t0;
  };
  return {
    calls,
    at,
    end: (n) => (open -= n),
    handOver: () => {
      mark('handOver');
      return o.senders;
    },
    stopAccepting: async () => mark('stopAccepting'),
    open: () => open,
    cut: () => {
      mark(`cut ${open}`);
      open = 0;
    },
  };
}

describe('Drain', () => {
  test('hands over, keeps accepting for the hand-over time, then waits for open connections to finish', async () => {
    const s = fakeSteps({ senders: true, open: 3 });
    const drain = new Drain(s, { handoverMs: 200, deadlineMs: 5000 });
    const done = drain.run();
    setTimeout(() => s.end(2), 300);
    setTimeout(() => s.end(1), 500);
    const r = await done;
    assert.deepEqual(s.calls, ['handOver', 'stopAccepting'], 'nothing was cut');
    assert.ok(s.at.handOver! < 50, 'the agent is let go at once');
    assert.ok(s.at.stopAccepting! >= 190, `listeners stay through the hand-over (closed at ${s.at.stopAccepting} ms)`);
    assert.deepEqual([r.openAtStart, r.cut, r.interrupted], [3, 0, false]);
    assert.ok(r.ms >= 490 && r.ms < 1500, `ended when the last connection did (${r.ms} ms)`);
  });

  test('resets what is still open at the deadline', async () => {
    const s = fakeSteps({ senders: true, open: 2 });
    const r = await new Drain(s, { handoverMs: 50, deadlineMs: 300 }).run();
    assert.deepEqual(s.calls, ['handOver', 'stopAccepting', 'cut 2']);
    assert.ok(s.at['cut 2']! >= 290, `cut at the deadline (${s.at['cut 2']} ms)`);
    assert.deepEqual([r.cut, r.interrupted], [2, false]);
  });

  test('with nobody sending here there is nothing to hand over: no wait; with no connections it ends at once', async () => {
    const s = fakeSteps({ senders: false, open: 0 });
    const r = await new Drain(s, { handoverMs: 5000, deadlineMs: 25_000 }).run();
    assert.deepEqual(s.calls, ['handOver', 'stopAccepting']);
    assert.ok(r.ms < 100, `${r.ms} ms`);
  });

  test('stopNow (a second signal) ends the hand-over and cuts what is open', async () => {
    const s = fakeSteps({ senders: true, open: 4 });
    const drain = new Drain(s, { handoverMs: 5000, deadlineMs: 25_000 });
    const done = drain.run();
    setTimeout(() => drain.stopNow(), 100);
    const r = await done;
    assert.deepEqual(s.calls, ['handOver', 'stopAccepting', 'cut 4']);
    assert.ok(r.ms < 1000, `${r.ms} ms`);
    assert.deepEqual([r.cut, r.interrupted], [4, true]);
  });

  test('seconds: flag values are checked', () => {
    assert.equal(seconds('25', '--drain-seconds'), 25);
    assert.equal(seconds('0.5', '--drain-seconds'), 0.5);
    for (const bad of ['', ' ', 'soon', '-1', 'Infinity']) assert.throws(() => seconds(bad, '--drain-seconds'), /--drain-seconds must be a number of seconds/);
    assert.deepEqual(drainTimes({ handoverSeconds: '5', drainSeconds: '25' }), { handoverMs: 5000, deadlineMs: 25_000 });
    assert.throws(() => drainTimes({ handoverSeconds: '30', drainSeconds: '25' }), /--handover-seconds \(30\) must not be longer than --drain-seconds \(25\)/);
  });
});

