import { join } from 'node:path';
import { Command, Option } from 'commander';
import { readObjects } from '../shared/config/objects.js';
import { translate, type PolicyProblem } from '../shared/config/translate.js';
import { explain, formatExplanation, parseTarget } from '../shared/policy/explain.js';
import { readState, redirectionDir } from './local/cluster.js';
import { readRedirections, withRedirections } from '../shared/config/redirection-files.js';
import { buildL7Config } from '../control/waypoint-config.js';

const DEFAULT_STATE_ROOT = process.env.AMBIT_STATE_DIR ?? '/run/ambit';

/** `ambit explain`: what would happen to a connection, and which layer and policy decide. */
export function explainCommand(): Command {
  return new Command('explain')
    .description('say what would happen to a TCP connection and why: which layer decides, which policy and rule')
    .requiredOption('--from <pod>', 'source pod, NAMESPACE/POD')
    .requiredOption('--to <target>', 'destination NAMESPACE/POD:PORT or NAMESPACE/SERVICE:PORT (prefix pod/ or svc/ if both exist)')
    .option('--method <method>', 'with --path: an HTTP request to check against the waypoint\'s L7 policies on the way')
    .option('--path <path>', 'with --method: the request path')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .addOption(new Option('--name <name>', 'local mesh name').default('ambit'))
    .addOption(new Option('--state-dir <dir>', 'where local meshes keep their state').default(DEFAULT_STATE_ROOT))
    .action(async (o: { from: string; to: string; output: string; name: string; stateDir: string; method?: string; path?: string }) => {
      if ((o.method === undefined) !== (o.path === undefined)) throw new Error('--method and --path go together');
      if (o.path !== undefined && !o.path.startsWith('/')) throw new Error(`--path must start with /, got "${o.path}"`);
      const state = await readState(o.stateDir, o.name);
      if (!state) throw new Error(`no local mesh named "${o.name}" is up; start one with \`ambit local up -f DIR\``);
      const m = /^([a-z0-9][-a-z0-9]*)\/([a-z0-9][-a-z0-9.]*)$/.exec(o.from);
      if (!m) throw new Error(`--from must be NAMESPACE/POD, got "${o.from}"`);
      const target = parseTarget(o.to);
      const problems: PolicyProblem[] = [];
      // the pods as the control plane sees them: with the annotations the node agents wrote
      const objects = withRedirections(await readObjects(join(state.dir, 'config')), await readRedirections(redirectionDir(state.dir)));
      const mesh = translate(objects, problems);
      const l7 = buildL7Config(objects, mesh, new Map(), problems);
      const request = o.method !== undefined ? { method: o.method.toUpperCase(), path: o.path! } : undefined;
      const e = explain(mesh, { namespace: m[1]!, name: m[2]! }, target, 'cluster.local', { policies: l7.policies, ...(request ? { request } : {}) });
      const relevant = problems.filter((p) => p.object.includes(` ${target.namespace}/`) || p.object.includes(' istio-system/'));
      if (o.output === 'json') {
        console.log(JSON.stringify({ ...e, policyProblems: relevant }, null, 2));
        return;
      }
      console.log(formatExplanation(e));
      for (const p of relevant) console.log(`note: ${p.object}: ${p.message}`);
    });
}
