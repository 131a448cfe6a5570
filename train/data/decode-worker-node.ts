/**
 * Node-only worker-thread entry of DecodePool (loader-node.ts); scripts/build.mjs bundles it to
 * dist/decode-worker.js. For each DecodeRequest it reads the file (or takes the bytes), decodes it with
 * the same `decodeImage` the main thread uses, and posts a DecodeResponse, transferring the pixel
 * buffer. Every per-request failure is answered with ok: false; the worker never exits on its own.
 */

import { parentPort } from 'node:worker_threads';

import { decodeImage } from '../../models/io/image.js';
import { readBytesSync } from '../../models/io/node-files.js';
import { DECODE_WORKER_READY, type DecodeRequest, type DecodeResponse } from './decode-protocol.js';

/** Answers one request (exported for tests that run it on the main thread). */
export function handleDecodeRequest(req: DecodeRequest): { response: DecodeResponse; transfer: ArrayBuffer[] } {
  try {
    let bytes = req.bytes;
    if (!bytes) {
      if (typeof req.path !== 'string') throw new Error('decode request without path or bytes');
      bytes = readBytesSync(req.path);
    }
    const img = decodeImage(bytes, req.maxPixels === undefined ? {} : { maxPixels: req.maxPixels });
    // Transfer requires a buffer the image owns exactly; copy when the decoder returned a view.
    const own = img.data.byteOffset === 0 && img.data.byteLength === img.data.buffer.byteLength && img.data.buffer instanceof ArrayBuffer;
    const data = own ? img.data : img.data.slice();
    return {
      response: { id: req.id, ok: true, width: img.width, height: img.height, data },
      transfer: [data.buffer as ArrayBuffer],
    };
  } catch (e) {
    const err = e as Error;
    return { response: { id: req.id, ok: false, name: err?.name ?? 'Error', message: err?.message ?? String(e) }, transfer: [] };
  }
}

if (parentPort) {
  const port = parentPort;
  port.on('message', (req: DecodeRequest) => {
    const { response, transfer } = handleDecodeRequest(req);
    port.postMessage(response, transfer);
  });
  port.postMessage(DECODE_WORKER_READY);
}
