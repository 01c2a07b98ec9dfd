/**
 * The module host: permission-restricted Workers (or subprocesses) running
 * modules, BSON between core and module. Module authors import
 * `workers/sdk/mod.ts` instead.
 *
 * @module
 */

export {
  ModuleHost,
  type ModuleHostOptions,
  type ModuleStatus,
} from "./host.ts";
export {
  type Isolation,
  type Manifest,
  ManifestError,
  parseManifest,
} from "./manifest.ts";
