/**
 * System information for `admin_sysinfo`, in the draft's fields.
 *
 * @module
 */

import { APP_NAME, APP_VERSION } from "../../shared/version.ts";

function cpuModel(): string {
  try {
    const text = Deno.readTextFileSync("/proc/cpuinfo");
    return text.match(/^model name\s*:\s*(.+)$/m)?.[1] ?? "";
  } catch {
    return "";
  }
}

/** Format seconds as "8 days, 17 hours, 32 minutes, 52 seconds". */
export function formatUptime(seconds: number): string {
  const parts: string[] = [];
  const units: [string, number][] = [
    ["day", 86_400],
    ["hour", 3600],
    ["minute", 60],
    ["second", 1],
  ];
  let rest = Math.floor(seconds);
  for (const [name, size] of units) {
    const n = Math.floor(rest / size);
    rest -= n * size;
    if (n > 0 || (name === "second" && parts.length === 0)) {
      parts.push(`${n} ${name}${n === 1 ? "" : "s"}`);
    }
  }
  return parts.join(", ");
}

/** Collect system information; `startedAt` is the server's start time. */
export function systemInfo(startedAt: number): Record<string, unknown> {
  const memory = Deno.systemMemoryInfo();
  const networks: Record<string, string[]>[] = [];
  const byName = new Map<string, string[]>();
  for (const iface of Deno.networkInterfaces()) {
    const list = byName.get(iface.name) ?? [];
    list.push(iface.address);
    byName.set(iface.name, list);
  }
  for (const [name, addresses] of byName) networks.push({ [name]: addresses });
  const uptime = (Date.now() - startedAt) / 1000;
  return {
    app_name: APP_NAME,
    app_version: APP_VERSION,
    os_name: Deno.build.os === "linux" ? "Linux" : Deno.build.os,
    os_version: Deno.osRelease(),
    cpu_model: cpuModel(),
    cpu_cores: navigator.hardwareConcurrency,
    cpu_arch: Deno.build.arch === "x86_64" ? "x64" : Deno.build.arch,
    cpu_load: Deno.loadavg()[0],
    ram_total: memory.total,
    ram_free: memory.available,
    hostname: Deno.hostname(),
    networks,
    uptime: formatUptime(uptime),
    uptime_seconds: Math.floor(uptime),
    system_uptime_seconds: Deno.osUptime(),
    deno_version: Deno.version.deno,
    memory_rss: Deno.memoryUsage().rss,
  };
}
