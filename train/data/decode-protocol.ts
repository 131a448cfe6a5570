/**
 * The messages between DecodePool (loader-node.ts) and its worker threads (decode-worker-node.ts),
 * in a file of their own so the worker bundle does not pull in the pool.
 *
 * Protocol: the worker posts DECODE_WORKER_READY once its module has loaded; then, for each
 * DecodeRequest, exactly one DecodeResponse with the same id (the pixel buffer transferred). A worker
 * handles one request at a time.
 */

/** A request to a decode worker: decode the file at `path`, or the given bytes. */
export interface DecodeRequest {
  id: number;
  path?: string;
  bytes?: Uint8Array;
  maxPixels?: number;
}

/** A decode worker's answer to request `id`. */
export type DecodeResponse =
  | { id: number; ok: true; width: number; height: number; data: Uint8Array }
  | { id: number; ok: false; name: string; message: string };

/** What a decode worker posts once, when its module has loaded and it listens for requests. */
export const DECODE_WORKER_READY = 'webdino-decode-worker-ready';
