/**
 * The module host: permission-restricted Workers (or subprocesses) running
 * modules, the bridge between core and module (bridge/), and what the wiring
 * implements for them (services.ts). Module authors import
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
export type { ServiceCaller, ServiceImplementation } from "./services.ts";
export type { ModuleObserver } from "./router.ts";
export { KvStorage } from "./sdk/storage.ts";
