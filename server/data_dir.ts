/**
 * The data folder holds every secret of the server (its keys, its
 * databases, users' mail): readable by the server's own user only, whatever
 * the umask of whoever started it.
 *
 * @module
 */

/**
 * From now on create files `0600` and folders `0700` (the process umask,
 * inherited by module processes too), and make an existing data folder so:
 * folders `0700`, files `0600`. Not on hosts without a disk of their own
 * (a KV Connect URL and no folder).
 */
export async function secureDataDir(dir: string): Promise<void> {
  Deno.umask(0o077);
  await Deno.mkdir(dir, { recursive: true });
  const walk = async (path: string): Promise<void> => {
    try {
      const info = await Deno.lstat(path);
      if (info.isSymlink) return;
      const mode = info.isDirectory ? 0o700 : 0o600;
      if (info.mode !== null && (info.mode & 0o777) !== mode) {
        await Deno.chmod(path, mode);
      }
      if (info.isDirectory) {
        for await (const entry of Deno.readDir(path)) {
          await walk(`${path}/${entry.name}`);
        }
      }
    } catch (error) {
      // A file that went meanwhile (a database's journal, removed as the
      // process that had it open closed) needs no mode.
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  };
  await walk(dir);
}
