#!/usr/bin/env node
import { Command } from 'commander';
import { localCommand } from './local/commands.js';
import { explainCommand } from './explain.js';
import { ztunnelConfigCommand } from './ztunnel-config.js';
import { checkCommand } from './check.js';
import { waypointCommand } from './waypoint.js';
import { dashboardCommand } from './dashboard.js';

const program = new Command().name('ambit').description('ambit: an ambient service mesh (ztunnel, waypoints, CNI) in TypeScript').version('0.1.0');
program.addCommand(localCommand());
program.addCommand(explainCommand());
program.addCommand(ztunnelConfigCommand());
program.addCommand(checkCommand());
program.addCommand(waypointCommand());
program.addCommand(dashboardCommand());

program.parseAsync().catch((err: Error) => {
  // one clear sentence, never a stack trace
  process.stderr.write(`ambit: ${err.message}\n`);
  process.exitCode = 1;
});
