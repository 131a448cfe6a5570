// Types of scripts/static-server.mjs (imported by the browser tests).

/** A running static server on 127.0.0.1. */
export interface StaticServer {
  /** http://127.0.0.1:PORT/ */
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Serves `mounts` (URL prefix → folder) on 127.0.0.1; port 0 picks a free port. */
export function startStaticServer(mounts: Record<string, string>, options?: { port?: number }): Promise<StaticServer>;
