// The main job, locally, with no cloud account: a loopback registry, a busybox base image, then
// the seed command exactly as a CI job would run it, then the image pulled back and run by runc.
// Run with `npm run demo` (which first installs what is missing, as the tests do).
import path from 'node:path';
import { artificer, ROOT } from '../test/support/cli.ts';
import { pushBusyboxBase } from '../test/support/images.ts';
import { startRegistry } from '../test/support/registry.ts';
import { pullAndRun } from '../test/support/runc.ts';

const say = (s: string) => process.stdout.write(`\n== ${s}\n`);
const registry = await startRegistry();
try {
  say(`registry: docker-registry on ${registry.host}`);
  const base = await pushBusyboxBase(registry.host, { repository: 'library/busybox', tag: '1.36', format: 'oci' });
  say(`base image: ${base.reference} (busybox-static, built locally)`);

  const target = `${registry.host}/demo/hello:1`;
  const args = ['--baseimage', base.reference, '--files', 'server', '--files', 'conf/', '--cmd', '/server', '--env', 'LOGLEVEL=1', '--env', 'ENVIRONMENT=prod', '--target', target, '-v'];
  say(`artificer ${args.join(' ')}`);
  const built = await artificer(args, { cwd: path.join(ROOT, 'examples/hello') });
  process.stdout.write(built.stderr);
  if (built.code !== 0) throw new Error(`artificer exited ${built.code}`);
  process.stdout.write(built.stdout);

  say(`the container (skopeo → umoci → runc):`);
  const run = await pullAndRun(target);
  process.stdout.write(run.stdout);
  process.stdout.write(run.stderr);
  if (run.code !== 0) throw new Error(`container exited ${run.code}`);
} finally {
  await registry.stop();
}
